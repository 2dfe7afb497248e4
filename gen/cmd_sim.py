"""``metafab sim``: cycle-level simulation of an engine on a few tasks."""

from __future__ import annotations

import json
import sys

import numpy as np

from metafab.gen.designs import ENGINES, add_design_args, maml_config
from metafab.sim.tools import SIMULATORS

HELP = "simulate an engine cycle by cycle on a few tasks and print cycles per task and the outputs"


def register(sub):
    p = sub.add_parser("sim", help=HELP, description=HELP + ". Outputs are also checked against the "
                       "bit-exact reference.")
    p.add_argument("engine", choices=ENGINES, help="which engine")
    add_design_args(p)
    p.add_argument("--sim", choices=SIMULATORS, default="verilator", help="simulator (default verilator)")
    p.add_argument("--tasks", type=int, default=3, help="tasks to run (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tasks (default 0)")
    p.add_argument("--weights", choices=("auto", "shipped", "random"), default="auto",
                   help="initial weights (default: shipped when the layers allow, else random)")
    p.add_argument("--waves", action="store_true", help="record a waveform in the run's build folder")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--features", default="auto", choices=("auto", "embedding", "pixels", "random", "extreme"),
                   help="match: query/support embeddings (default: the shipped digits embedding when D=64)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.engine == "match":  # the similarity engine (metafab.gen.match_cli); --tasks counts episodes
        from metafab.gen.match_cli import sim

        return sim(args)
    from metafab.gen.maml_flow import initial_params, random_tasks, run_engine, sinusoid_batch
    from metafab.reference import fixed as fx
    from metafab.reference import maml_fixed as mf
    from metafab.reference.errors import UserError

    cfg = maml_config(args)
    if args.tasks < 1:
        raise UserError(f"--tasks must be at least 1, got {args.tasks}")
    params, source = initial_params(cfg, args.weights, args.seed)
    wq = mf.quantize_params(params, cfg)
    if cfg.n_in == 1 and cfg.n_out == 1:
        b = sinusoid_batch(cfg, args.tasks, args.seed)
        tasks = [[mf.quantize_inputs(a[i], cfg).tolist() for a in (b.x_support, b.y_support, b.x_query)]
                 for i in range(args.tasks)]
    else:
        tasks = random_tasks(cfg, args.tasks, args.seed)

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    r = run_engine(cfg, wq, tasks, sim=args.sim, waves=args.waves, return_outputs=True,
                   run_name=f"sim-{args.sim}", progress=progress)
    outputs = [fx.to_float(np.asarray(o), cfg.act_fmt).tolist() for o in r["outputs"]]
    doc = {
        "engine": "maml", "design": cfg.name, "weights": source, "simulator": args.sim,
        "tasks": r["tasks"], "cycles_per_task": r["cycles"], "model_cycles": r["model_cycles"],
        "mismatches": r["mismatches"], "outputs": outputs, "run_folder": r["test_dir"],
    }
    if args.waves:
        doc["waves"] = _waves(r["test_dir"])
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"{cfg.name}: {r['tasks']} task(s) on {args.sim}, weights: {source}")
        for n, (c, o) in enumerate(zip(r["cycles"], outputs, strict=True)):
            vals = ", ".join(f"{v:+.4f}" for v in o)
            print(f"task {n}: {c} cycles; query outputs: {vals}")
        print(f"cycle model: {r['model_cycles']} cycles per task; mismatches against the reference: "
              f"{r['mismatches']}")
        if args.waves:
            print(f"waveform: {doc['waves']}")
    return 0 if r["mismatches"] == 0 else 1


def _waves(test_dir: str) -> str | None:
    from pathlib import Path

    for d in (Path(test_dir), Path(test_dir).parent):
        for pat in ("*.fst", "*.vcd"):
            found = sorted(d.glob(pat))
            if found:
                return str(found[0])
    return None
