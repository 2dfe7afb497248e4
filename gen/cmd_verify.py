"""``metafab verify``: the RTL against the bit-exact reference and the float64 model."""

from __future__ import annotations

import json

from metafab.gen.cli import engine_commands, progress, seed
from metafab.gen.cmd_report import add_report_option, announce
from metafab.gen.engines import get_engine
from metafab.sim.tools import SIMULATORS

HELP = "simulate random tasks or episodes through the RTL and compare every output with the bit-exact reference"


def _options(p, engine):
    p.add_argument("--sim", choices=SIMULATORS, default="verilator", help="simulator (default verilator)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the workload and random weights (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_report_option(p)
    p.set_defaults(func=run)


def register(sub):
    engine_commands(
        sub, "verify", help=HELP, options=_options,
        description=HELP + ". Reports mismatching output words (must be 0), cycles measured and modelled, "
        "and the fixed-point vs float64 error. Exits 1 on any mismatch.",
    )


def run(args) -> int:
    from metafab.gen import flow

    engine = get_engine(args.engine)
    cfg = engine.config(args)
    count = getattr(args, engine.count_flag.lstrip("-").replace("-", "_"))
    report = flow.verify(engine, cfg, count=count, sim=args.sim, seed=args.seed,
                         options=engine.verify_options(args), progress=progress)
    progress(f"report: {flow.write_verify_report(engine, cfg, report)}")
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(flow.format_verify(engine, report))
    announce(cfg, args.report, progress)
    return 0 if engine.passed(report) else 1
