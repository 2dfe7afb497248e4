"""``metafab run``: use an engine on a board over its USB-UART (the host driver, pyserial)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from metafab.gen.designs import ENGINES, add_design_args, maml_config

HELP = "talk to an engine on a board: load weights, run tasks, print results and the on-chip counters"


def register(sub):
    p = sub.add_parser(
        "run",
        help=HELP,
        description=HELP + ". Tasks come from the built-in sinusoid sampler or from a JSON file "
        '(a list of {"xs": [[..]], "ys": [[..]], "xq": [[..]]} in real numbers). Every answer is '
        "checked against the bit-exact reference.",
    )
    p.add_argument("engine", choices=ENGINES, help="which engine is on the board")
    add_design_args(p)
    p.add_argument("--port", required=True, metavar="DEVICE", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--weights", choices=("auto", "shipped", "random", "preloaded"), default="auto",
                   help="weights to LOAD first; 'preloaded' sends none (the board top has them)")
    p.add_argument("--tasks", type=int, default=3, help="built-in sinusoid tasks to run (default 3)")
    p.add_argument("--input", metavar="FILE", help="JSON file of tasks instead of the built-in ones")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in tasks and random weights")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a response")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def _file_tasks(path: str, cfg):
    from metafab.reference.errors import UserError

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read task file {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"task file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not all(isinstance(t, dict) for t in doc):
        raise UserError(f"task file {path!r} must hold a list of objects with xs, ys, xq")
    tasks = []
    for n, t in enumerate(doc):
        try:
            xs, ys, xq = (np.asarray(t[k], dtype=np.float64) for k in ("xs", "ys", "xq"))
        except (KeyError, ValueError, TypeError):
            raise UserError(f"task {n} in {path!r} needs numeric xs, ys and xq arrays") from None
        want = {"xs": (cfg.k_support, cfg.n_in), "ys": (cfg.k_support, cfg.n_out), "xq": (cfg.n_query, cfg.n_in)}
        for k, a in zip(("xs", "ys", "xq"), (xs, ys, xq), strict=True):
            if a.shape != want[k]:
                raise UserError(f"task {n} in {path!r}: {k} has shape {a.shape}, the design needs {want[k]}")
        tasks.append((xs, ys, xq))
    return tasks


def run(args) -> int:
    from metafab.gen.host import Host, maml_load_payload, maml_run_payload, open_serial
    from metafab.gen.maml_flow import initial_params, sinusoid_batch
    from metafab.reference import fixed as fx
    from metafab.reference import maml_fixed as mf
    from metafab.reference.errors import UserError

    cfg = maml_config(args)
    if args.input:
        tasks = _file_tasks(args.input, cfg)
    else:
        if args.tasks < 1:
            raise UserError(f"--tasks must be at least 1, got {args.tasks}")
        b = sinusoid_batch(cfg, args.tasks, args.seed)
        tasks = [(b.x_support[i], b.y_support[i], b.x_query[i]) for i in range(args.tasks)]
    weights = "auto" if args.weights == "preloaded" else args.weights
    params, source = initial_params(cfg, weights, args.seed)
    wq = mf.quantize_params(params, cfg)
    host = Host(open_serial(args.port, args.baud), timeout=args.timeout)
    if args.weights != "preloaded":
        print(f"loading {cfg.n_params} weights ({source})", file=sys.stderr)
        host.load(maml_load_payload(wq))
    results, mismatches = [], 0
    for n, (xs, ys, xq) in enumerate(tasks):
        codes = [mf.quantize_inputs(a, cfg) for a in (xs, ys, xq)]
        got = host.run(maml_run_payload(*codes))
        want = mf.run_task(wq, *codes, cfg).y_query.reshape(-1)
        bad = int((got != want).sum())
        mismatches += bad
        st = host.status()
        results.append({"task": n, "outputs": fx.to_float(got, cfg.act_fmt).tolist(),
                        "mismatches": bad, "cycles": st["last_cycles"]})
        if not args.json:
            vals = ", ".join(f"{v:+.4f}" for v in results[-1]["outputs"])
            print(f"task {n}: {st['last_cycles']} cycles on chip, {bad} mismatches; outputs {vals}")
    status = host.status()
    if args.json:
        print(json.dumps({"design": cfg.name, "port": args.port, "results": results, "status": status},
                         indent=2, sort_keys=True))
    else:
        print(f"counters: {status}")
    return 0 if mismatches == 0 else 1
