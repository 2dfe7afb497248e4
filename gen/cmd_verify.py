"""``metafab verify``: the RTL against the bit-exact reference and the float64 model."""

from __future__ import annotations

import json

from metafab.gen.cli import count, engine_commands, progress, seed
from metafab.gen.cmd_report import add_report_option, announce
from metafab.gen.engines import get_engine
from metafab.reference.errors import UserError
from metafab.sim.tools import SIMULATORS

HELP = "simulate random tasks or episodes through the RTL and compare every output with the bit-exact reference"


def _options(p, engine):
    p.add_argument("--sim", choices=SIMULATORS, default="verilator", help="simulator (default verilator)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the workload and random weights (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--scheduler", metavar="local|ADDRESS",
                   help="shard the verification over a Dask cluster: 'local' (one worker process per core) or "
                   "a scheduler's address (tcp://host:8786); the report equals an unsharded run's")
    p.add_argument("--chunk", type=count, metavar="N",
                   help=f"{engine.item}s per sharded chunk (default: the engine's {engine.chunk}, fewer when "
                   "that would leave a worker idle); only with --scheduler")
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
    n = getattr(args, engine.count_flag.lstrip("-").replace("-", "_"))
    if args.scheduler:
        from metafab.gen.cluster import connect

        with connect(args.scheduler) as client:
            progress(f"sharding over {len(client.scheduler_info()['workers'])} worker(s) of {client.scheduler.address}")
            report = flow.verify_sharded(engine, cfg, client, count=n, sim=args.sim, seed=args.seed,
                                         options=engine.verify_options(args), chunk=args.chunk, progress=progress)
    else:
        if args.chunk is not None:
            raise UserError(f"--chunk {args.chunk} needs --scheduler (local or a scheduler address)")
        report = flow.verify(engine, cfg, count=n, sim=args.sim, seed=args.seed,
                             options=engine.verify_options(args), progress=progress)
    progress(f"report: {flow.write_verify_report(engine, cfg, report)}")
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(flow.format_verify(engine, report))
    announce(cfg, args.report, progress)
    return 0 if engine.passed(report) else 1
