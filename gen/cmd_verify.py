"""``metafab verify``: the RTL against the bit-exact reference and the float64 model."""

from __future__ import annotations

import json
import sys

from metafab.gen.designs import ENGINES, add_design_args, maml_config
from metafab.sim.tools import SIMULATORS

HELP = "simulate random tasks through the RTL and compare every output with the bit-exact reference"


def register(sub):
    p = sub.add_parser(
        "verify",
        help=HELP,
        description=HELP + ". Reports mismatching output words (must be 0), cycles per task measured "
        "and modelled, MAC-lane utilisation and the fixed-point vs float64 query MSE. Exits 1 on any "
        "mismatch.",
    )
    p.add_argument("engine", choices=ENGINES, help="which engine")
    add_design_args(p)
    p.add_argument("--sim", choices=SIMULATORS, default="verilator", help="simulator (default verilator)")
    p.add_argument("--tasks", type=int, default=100, help="random tasks to run (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks and random weights (default 0)")
    p.add_argument("--weights", choices=("auto", "shipped", "random"), default="auto",
                   help="initial weights (default: shipped when the layers allow, else random)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--features", default="auto", choices=("auto", "embedding", "pixels", "random", "extreme"),
                   help="match: query/support embeddings (default: the shipped digits embedding when D=64)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.engine == "match":  # the similarity engine (metafab.gen.match_cli); --queries N to run
        from metafab.gen.match_cli import verify

        return verify(args)
    from metafab.gen.maml_flow import verify

    cfg = maml_config(args)

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    report = verify(cfg, tasks=args.tasks, sim=args.sim, seed=args.seed, weights=args.weights, progress=progress)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0 if report["mismatches"] == 0 and report["cycles_match_model"] else 1


def format_report(r: dict) -> str:
    lines = [
        f"design              {r['design']}",
        f"weights             {r['weights']}",
        f"simulator           {r['simulator']}",
        f"tasks               {r['tasks']}",
        f"output words        {r['output_words']}",
        f"mismatches          {r['mismatches']}"
        + ("" if not r["mismatches"] else f"  first: {r['first_mismatch']}"),
        f"cycles per task     {', '.join(map(str, r['cycles_measured']))} measured, "
        f"{r['cycles_model']} modelled",
        f"lane utilisation    {100 * r['utilisation']:.1f} % of {r['lanes']} lanes",
    ]
    if "mse_ratio" in r:
        lines.append(
            f"query MSE           fixed {r['mse_fixed']:.5f}, float64 {r['mse_float64']:.5f}, "
            f"ratio {r['mse_ratio']:.4f}"
        )
    ok = r["mismatches"] == 0 and r["cycles_match_model"]
    lines.append(f"verdict             {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)
