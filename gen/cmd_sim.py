"""``metafab sim``: cycle-level simulation of an engine on a few tasks or episodes."""

from __future__ import annotations

import json
from pathlib import Path

from metafab.gen.cli import engine_commands, progress, seed
from metafab.gen.engines import get_engine
from metafab.sim.tools import SIMULATORS

HELP = "simulate an engine cycle by cycle on a few tasks or episodes and print cycles and the outputs"


def _options(p, engine):
    p.add_argument("--sim", choices=SIMULATORS, default="verilator", help="simulator (default verilator)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the workload (default 0)")
    p.add_argument("--waves", action="store_true", help="record a waveform in the run's build folder")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def register(sub):
    engine_commands(sub, "sim", help=HELP, description=HELP + ". Outputs are also checked against the "
                    "bit-exact reference.", options=_options)


def run(args) -> int:
    engine = get_engine(args.engine)
    cfg = engine.config(args)
    doc = engine.simulate(cfg, args, progress)
    if args.waves:
        doc["waves"] = waves_file(doc["run_folder"])
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(engine.format_sim(doc))
        if args.waves:
            print(f"waveform: {doc['waves']}")
    return 0 if doc["mismatches"] == 0 else 1


def waves_file(test_dir: str) -> str | None:
    """The waveform a run with ``--waves`` left in its folder (or its build folder)."""
    for d in (Path(test_dir), Path(test_dir).parent):
        for pat in ("*.fst", "*.vcd"):
            found = sorted(d.glob(pat))
            if found:
                return str(found[0])
    return None
