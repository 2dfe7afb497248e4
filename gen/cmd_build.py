"""``metafab build``: synthesis, place and route for a board with the open YoWASP tools."""

from __future__ import annotations

import json
import sys

from metafab.gen.boards import board_names
from metafab.gen.designs import ENGINES, add_design_args, maml_config

HELP = "synthesise, place and route an engine for a board; report utilisation, Fmax and latency"


def register(sub):
    p = sub.add_parser("build", help=HELP, description=HELP + ". The bitstream is the board top: the "
                       "engine behind the board's USB-UART with its weights (maml) or one digits episode's support set "
                       "(match) preloaded (metafab run talks to "
                       "it); --top harness measures the engine alone.")
    p.add_argument("engine", choices=ENGINES, help="which engine")
    add_design_args(p)
    p.add_argument("--board", required=True, metavar="NAME",
                   help=f"target board: {', '.join(board_names())}")
    p.add_argument("--top", choices=("uart", "harness"), default="uart",
                   help="uart: the board top to program (USB-UART bridge, engine, preloaded weights or support set; "
                   "default); harness: the engine alone behind a serial measurement harness")
    p.add_argument("--baud", type=int, default=115200, help="UART baud rate of the board top (default 115200)")
    p.add_argument("--weights", choices=("auto", "shipped", "random"), default="auto",
                   help="maml: weights preloaded into the board top (default: shipped when the layers allow)")
    p.add_argument("--target-mhz", type=float, default=None,
                   help="clock constraint for place and route (default: above what the family reaches)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--timing-ripup", action="store_true",
                   help="ECP5: let the router rip up and re-route the nets of paths that fail the clock "
                   "constraint (nextpnr --tmg-ripup); higher Fmax on routing-bound designs, routing takes up to "
                   "twice as long; best with --target-mhz a few percent above the clock wanted")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.engine == "match":  # the similarity engine (metafab.gen.match_cli)
        from metafab.gen.match_cli import build

        return build(args)
    from metafab.gen.boards import get_board
    from metafab.gen.maml_flow import maml_build

    board = get_board(args.board)  # validate before the long steps
    cfg = maml_config(args)

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    r = maml_build(cfg, board.name, top=args.top, baud=args.baud, weights=args.weights,
                   target_mhz=args.target_mhz, seed=args.seed, timing_ripup=args.timing_ripup, progress=progress)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True, default=str))
    else:
        print(format_build(r))
    return 0


def format_build(r: dict) -> str:
    lines = [
        f"design            {r['design']}",
        f"board             {r['board']} ({r['device']})",
        f"Fmax              {r['fmax_mhz']:.1f} MHz (constraint {r['constraint_mhz']:.0f} MHz)",
        f"place and route   nextpnr seed {r['seed']}" + (", timing-driven rip-up" if r["timing_ripup"] else ""),
        f"LUT / FF / DSP / BRAM   {r['lut']} / {r['ff']} / {r['dsp']} / {r['bram']}",
        f"cycles per task   {r['task_cycles']}",
        f"latency           {r['latency_us']:.2f} us per task at Fmax"
        + (f" ({r['task_cycles'] / (r['board_clock_mhz'] or 1):.1f} us at the board clock)"
           if r.get("board_clock_mhz") else ""),
    ]
    for k, v in (r.get("anchor") or {}).items():
        lines.append(f"  vs {k:<22} {v:.1f} us")
    lines.append(f"bitstream         {r['bitstream']}")
    return "\n".join(lines)
