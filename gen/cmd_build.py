"""``metafab build``: synthesis, place and route for a board with the open YoWASP tools."""

from __future__ import annotations

import json

from metafab.gen.boards import board_names
from metafab.gen.cli import engine_commands, progress
from metafab.gen.engines import get_engine

HELP = "synthesise, place and route an engine for a board; report utilisation, Fmax and latency"


def _options(p, engine):
    from metafab.gen.flow import TOPS

    p.add_argument("--board", required=True, metavar="NAME", help=f"target board: {', '.join(board_names())}")
    p.add_argument("--top", choices=TOPS, default="uart",
                   help="uart: the board top to program (USB-UART bridge, the engine, its preload in a ROM; "
                   "default); harness: the engine alone behind a serial measurement harness")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate of the board top (default 115200)")
    p.add_argument("--target-mhz", type=float, default=None,
                   help="clock constraint for place and route (default: above what the family reaches)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--timing-ripup", action="store_true",
                   help="ECP5: let the router rip up and re-route the nets of paths that fail the clock "
                   "constraint (nextpnr --tmg-ripup); higher Fmax on routing-bound designs, routing takes up to "
                   "twice as long; best with --target-mhz a few percent above the clock wanted")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def register(sub):
    engine_commands(sub, "build", help=HELP, options=_options,
                    description=HELP + ". The bitstream is the board top: the engine behind the board's USB-UART "
                    "with its weights or support set preloaded (metafab run talks to it); --top harness "
                    "measures the engine alone.")


def run(args) -> int:
    from metafab.gen import flow
    from metafab.gen.boards import get_board

    engine = get_engine(args.engine)
    board = get_board(args.board)  # validate before the long steps
    cfg = engine.config(args)
    r = flow.build(engine, cfg, board.name, top=args.top, baud=args.baud, target_mhz=args.target_mhz,
                   seed=args.seed, timing_ripup=args.timing_ripup, preload_args=args, progress=progress)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True, default=str))
    else:
        print(flow.format_build(engine, r))
    return 0
