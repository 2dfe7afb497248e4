"""``metafab run``: use an engine on a board over its USB-UART (the host driver, pyserial)."""

from __future__ import annotations

import json

from metafab.gen.cli import engine_commands, progress, seed
from metafab.gen.engines import get_engine

HELP = "talk to an engine on a board: load weights or a support set, run tasks, print results and the counters"


def _options(p, engine):
    p.add_argument("--port", required=True, metavar="DEVICE", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the built-in workload and random weights")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a response")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def register(sub):
    engine_commands(sub, "run", help=HELP, options=_options,
                    description=HELP + ". Every answer is checked against the bit-exact reference.")


def run(args) -> int:
    from metafab.gen.host import Host, open_serial

    engine = get_engine(args.engine)
    cfg = engine.config(args)
    host = Host(open_serial(args.port, args.baud), timeout=args.timeout)

    def say(line):
        if not args.json:
            print(line)

    doc = engine.run_on_board(cfg, args, host, say, progress)
    status = host.status()
    times = sorted(host.run_seconds)
    doc["end_to_end_us"] = ({"median": round(1e6 * times[len(times) // 2], 1), "min": round(1e6 * times[0], 1),
                             "runs": len(times), "baud": args.baud} if times else None)
    if args.json:
        print(json.dumps({**doc, "port": args.port, "status": status}, indent=2, sort_keys=True))
    else:
        if times:
            e = doc["end_to_end_us"]
            print(f"end to end over the link at {args.baud} baud: {e['median']:.0f} us per {engine.run_item} "
                  f"(median of {e['runs']}; minimum {e['min']:.0f} us), request written to response read")
        print(f"counters: {status}")
    return 0 if doc["mismatches"] == 0 else 1
