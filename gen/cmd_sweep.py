"""``metafab sweep``: a design-space sweep from a TOML spec, each point a task on a Dask cluster."""

from __future__ import annotations

import json

from metafab.gen.cli import count, progress
from metafab.gen.cmd_report import add_report_option

HELP = "sweep a grid of designs and build options (cycle model, verification, board builds) on a Dask cluster"


def register(sub):
    p = sub.add_parser(
        "sweep", help=HELP,
        description=HELP + ". The spec names the engine, a [grid] of field = [values] and/or [[points]], and the "
        "stages (model, verify, build); results go into a SQLite store under the build folder, one row per "
        "point, so a sweep resumes where it stopped. Prints the points sorted by the objective, the Pareto "
        "front and the best seed per design (docs/sweeps.md).",
    )
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (docs/sweeps.md)")
    p.add_argument("--stages", metavar="S[,S]", help="stages to run instead of the spec's: model, verify, build")
    p.add_argument("--objective", metavar="METRIC",
                   help="sort by this figure instead of the spec's: latency_us, cycles, utilisation, mismatches, "
                   "lut, ff, dsp, bram, fmax_mhz")
    p.add_argument("--scheduler", default="local", metavar="local|ADDRESS",
                   help="'local' (default: one worker process per core) or a Dask scheduler's address")
    p.add_argument("--workers", type=count, metavar="N", help="worker processes of the local cluster (default: cores)")
    p.add_argument("--store", metavar="FILE", help="the results store (default: BUILD/sweeps/results.sqlite)")
    p.add_argument("--force", action="store_true", help="run every point again, even those in the store")
    p.add_argument("--retry-failed", action="store_true", help="run the points recorded as failed again")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_report_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from metafab.gen.cluster import connect
    from metafab.gen.sweep import (
        ResultsStore,
        check_objective,
        default_store,
        format_sweep,
        parse_stages,
        read_spec,
        write_sweep_document,
    )

    spec = read_spec(args.spec)
    stages = parse_stages(args.stages) if args.stages else None
    if args.objective:
        check_objective(args.objective)
        spec.objective = args.objective
    with ResultsStore(args.store or default_store()) as store, connect(args.scheduler, workers=args.workers) as client:
        from metafab.gen.sweep import run_sweep

        doc = run_sweep(spec, client, store, stages=stages, force=args.force, retry_failed=args.retry_failed,
                        progress=progress)
    path = write_sweep_document(doc)
    progress(f"sweep document: {path}")
    if args.report:
        from metafab.gen.cmd_report import write

        pages = write()
        sweeps = [q for q in pages if q.name == "sweeps.html"]
        progress(f"report page: {sweeps[0] if sweeps else pages[0]}")
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(format_sweep(doc))
    return 0 if doc["failed"] == 0 else 1
