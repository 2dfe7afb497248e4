"""``metafab build``: synthesis, place and route for a board with the open YoWASP tools."""

from __future__ import annotations

import argparse
import json

from metafab.gen.boards import board_names
from metafab.gen.cli import engine_commands, progress
from metafab.gen.cmd_report import add_report_option, announce
from metafab.gen.engines import get_engine

HELP = "synthesise, place and route an engine for a board; report the clock, timing, utilisation and latency"


def clock(text: str):
    """An argparse type: a clock in MHz (a positive number) or ``auto``."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of MHz nor 'auto'") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be in (0, 1000] MHz or 'auto', got {text}")
    return value


def _options(p, engine):
    from metafab.gen.flow import TOPS

    p.add_argument("--board", required=True, metavar="NAME", help=f"target board: {', '.join(board_names())}")
    p.add_argument("--top", choices=TOPS, default="uart",
                   help="uart: the board top to program (USB-UART bridge, the engine, its preload in a ROM; "
                   "default); harness: the engine alone behind a serial measurement harness")
    p.add_argument("--baud", type=int, default=115200,
                   help="UART baud rate of the board top, up to the board's USB-UART bridge's (ULX3S FT231X: "
                   "3000000; iCEBreaker FT2232H: 12000000); default 115200")
    defaults = ", ".join(f"{fam} {mhz:g} MHz" for fam, mhz in engine.default_clock.items())
    p.add_argument("--clock-mhz", "--target-mhz", dest="clock_mhz", type=clock, default=None, metavar="F|auto",
                   help="the clock the engine runs at: the board top's PLL makes the highest frequency at or below "
                   f"F from the board oscillator, and place and route is constrained to it (default: {defaults}); "
                   "'auto': build, and while timing fails build again at the highest PLL clock at or below the "
                   "achieved Fmax. With --top harness: the constraint only. --target-mhz is the old name")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="exit 0 even when the design misses its clock (default: exit 1)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    p.add_argument("--timing-ripup", action="store_true",
                   help="ECP5: let the router rip up and re-route the nets of paths that fail the clock "
                   "constraint (nextpnr --tmg-ripup); higher Fmax on routing-bound designs, routing takes up to "
                   "twice as long; best with --clock-mhz a few percent above the clock wanted")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_report_option(p)
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
    r = flow.build(engine, cfg, board.name, top=args.top, baud=args.baud, clock_mhz=args.clock_mhz,
                   seed=args.seed, timing_ripup=args.timing_ripup, preload_args=args, progress=progress)
    for path in flow.write_build_report(engine, r):
        progress(f"report: {path}")
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True, default=str))
    else:
        print(flow.format_build(engine, r))
    announce(cfg, args.report, progress)
    if r["timing"] != "PASS" and not args.allow_timing_fail:
        progress(f"timing {r['timing']}: Fmax {r['fmax_mhz']} MHz is below the {r['constraint_mhz']} MHz clock; "
                 f"try --clock-mhz auto, another --seed, or --allow-timing-fail")
        return 1
    return 0
