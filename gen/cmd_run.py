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
        description=HELP + ". maml: tasks come from the built-in sinusoid sampler or from a JSON file "
        '(a list of {"xs": [[..]], "ys": [[..]], "xq": [[..]]} in real numbers). match: episodes come from '
        "the digits few-shot data (shipped embedding when D=64) or from a JSON file (a list of "
        '{"support": [[..]], "labels": [..], "queries": [[..]]}, optional "query_labels"); each episode\'s '
        "support set is loaded, then its queries are sent. Every answer is checked against the bit-exact "
        "reference.",
    )
    p.add_argument("engine", choices=ENGINES, help="which engine is on the board")
    add_design_args(p)
    p.add_argument("--port", required=True, metavar="DEVICE", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--weights", choices=("auto", "shipped", "random", "preloaded"), default="auto",
                   help="maml: weights to LOAD first; 'preloaded' sends none (the board top has them). match: "
                   "'preloaded' runs the episode whose support set the board top holds, without a LOAD")
    p.add_argument("--tasks", type=int, default=3,
                   help="built-in sinusoid tasks (maml) or digits episodes (match) to run (default 3)")
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
    if args.engine == "match":
        return run_match(args)
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


def _file_episodes(path: str, cfg):
    from metafab.reference.errors import UserError

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read episode file {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"episode file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not all(isinstance(t, dict) for t in doc):
        raise UserError(f"episode file {path!r} must hold a list of objects with support, labels, queries")
    eps = []
    for n, t in enumerate(doc):
        try:
            support, queries = (np.asarray(t[k], dtype=np.float64) for k in ("support", "queries"))
            labels = np.asarray(t["labels"], dtype=np.int64)
            qlabels = np.asarray(t.get("query_labels", [-1] * len(queries)), dtype=np.int64)
        except (KeyError, ValueError, TypeError):
            raise UserError(f"episode {n} in {path!r} needs numeric support, labels and queries arrays") from None
        m = cfg.n_way * cfg.k_shot
        want = {"support": (support, (m, cfg.dim)), "labels": (labels, (m,)),
                "queries": (queries, (len(queries), cfg.dim))}
        for k, (a, shape) in want.items():
            if a.shape != shape or (k == "queries" and len(a) == 0):
                raise UserError(f"episode {n} in {path!r}: {k} has shape {a.shape}, the design needs {shape}"
                                + (" with at least one query" if k == "queries" else ""))
        if labels.min() < 0 or labels.max() >= cfg.n_way:
            raise UserError(f"episode {n} in {path!r}: labels must be 0..{cfg.n_way - 1}")
        eps.append({"support": support, "labels": labels, "queries": queries, "query_labels": qlabels})
    return eps, "file"


def run_match(args) -> int:
    """Load each episode's support set, send its queries, check every answer against the reference."""
    from metafab.gen.designs import match_config
    from metafab.gen.host import Host, match_load_payload, match_run_payload, open_serial
    from metafab.gen.match_flow import episode_codes, make_episodes
    from metafab.reference import fixed as fx
    from metafab.reference import match_fixed as mx
    from metafab.reference.errors import UserError

    cfg = match_config(args)
    preloaded = args.weights == "preloaded"
    if args.input:
        eps, source = _file_episodes(args.input, cfg)
    elif preloaded:  # the episode the board top was built with (metafab build match: support seed 0)
        eps, source = make_episodes(cfg, 1, 0, "auto", n_query=1)
    else:
        if args.tasks < 1:
            raise UserError(f"--tasks must be at least 1, got {args.tasks}")
        eps, source = make_episodes(cfg, args.tasks, args.seed, "auto", n_query=1)
    host = Host(open_serial(args.port, args.baud), timeout=args.timeout)
    results, mismatches, correct, labelled = [], 0, 0, 0
    for n, (ep, codes) in enumerate(zip(eps, episode_codes(cfg, eps), strict=True)):
        support, labels = np.asarray(codes["support"]), np.asarray(codes["labels"])
        if not (preloaded and n == 0 and not args.input):
            print(f"episode {n}: loading {len(labels)} support embeddings ({source})", file=sys.stderr)
            host.load(match_load_payload(support, labels))
        ro = mx.readout(np.asarray(codes["queries"]), mx.prepare(support, labels, cfg), cfg)
        for q, query in enumerate(codes["queries"]):
            got = host.run(match_run_payload(query, cfg)).tolist()
            want = mx.result_words(ro.probs[q], ro.pred[q])
            bad = sum(int(a != b) for a, b in zip(got, want, strict=True))
            mismatches += bad
            label = int(ep["query_labels"][q])
            if label >= 0:
                labelled += 1
                correct += int(got[-1] == label)
            st = host.status()
            probs = fx.to_float(np.asarray(got[:-1]), cfg.prob_fmt).tolist()
            results.append({"episode": n, "query": q, "class": int(got[-1]), "label": label,
                            "probabilities": probs, "mismatches": bad, "cycles": st["last_cycles"]})
            if not args.json:
                vals = " ".join(f"{v:.3f}" for v in probs)
                lab = f" (label {label})" if label >= 0 else ""
                print(f"episode {n} query {q}: class {got[-1]}{lab}, {st['last_cycles']} cycles on chip, "
                      f"{bad} mismatches; probabilities {vals}")
    status = host.status()
    accuracy = correct / labelled if labelled else None
    if args.json:
        print(json.dumps({"design": cfg.name, "port": args.port, "features": source, "results": results,
                          "accuracy": accuracy, "mismatches": mismatches, "status": status},
                         indent=2, sort_keys=True))
    else:
        if accuracy is not None:
            print(f"accuracy {100 * accuracy:.1f} % over {labelled} queries; mismatches {mismatches}")
        print(f"counters: {status}")
    return 0 if mismatches == 0 else 1
