"""``metafab study {sinusoid,digits,glyphs-cls,...}``: reproduce the paper-claim tables of docs/reference.md.

Prints a markdown table (or, with ``--json``, one JSON document) computed from
the shipped weights, or from weights files given on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from threadpoolctl import threadpool_limits

from metafab.reference import study, weights
from metafab.reference.arrays import as_count, as_rate

__all__ = ["register", "run", "write_study"]


def register(subparsers) -> None:
    """Add ``study`` and its two targets to the ``metafab`` parser."""
    parser = subparsers.add_parser(
        "study",
        help="reproduce the reference tables (MAML vs pretrained, few-shot digits)",
        description="Evaluate the float64 reference models on held-out tasks and print the "
        "tables of docs/reference.md.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    sin = targets.add_parser(
        "sinusoid",
        help="query MSE after 0/1/10 SGD steps, MAML init vs pretrained init, K=5 and 10",
        description="Query MSE on held-out sinusoid tasks after adapting each initialisation "
        "with plain SGD (Finn et al. 2017, section 5.1).",
    )
    sin.add_argument(
        "--tasks", type=int, default=600, help="held-out tasks per K (default: %(default)s)"
    )
    sin.add_argument(
        "--seed", type=int, default=2017, help="seed of the held-out tasks (default: %(default)s)"
    )
    sin.add_argument(
        "--lr", type=float, default=0.01, help="SGD step size at test time (default: %(default)s)"
    )
    sin.add_argument(
        "--maml",
        default=None,
        help=f"MAML init meta-trained with K=10 (default: the shipped {weights.SINUSOID_INIT})",
    )
    sin.add_argument(
        "--maml-k5",
        default=None,
        help=f"MAML init meta-trained with K=5 (default: the shipped {weights.SINUSOID_INIT_K5})",
    )
    sin.add_argument(
        "--pretrained",
        default=None,
        help=f"pretrained (joint) init (default: the shipped {weights.SINUSOID_PRETRAINED})",
    )
    sin.add_argument("--json", action="store_true", help="print one JSON document")
    sin.set_defaults(func=run)

    dig = targets.add_parser(
        "digits",
        help="5-way 1/5-shot accuracy on digits 5-9: matching vs prototypical, pixels vs embedding",
        description="Few-shot accuracy with 95% intervals over meta-test episodes of the "
        "digits 5-9 (Vinyals et al. 2016; Snell et al. 2017).",
    )
    dig.add_argument(
        "--episodes", type=int, default=1000, help="episodes per shot count (default: %(default)s)"
    )
    dig.add_argument(
        "--seed", type=int, default=2016, help="seed of the episodes (default: %(default)s)"
    )
    dig.add_argument(
        "--embedding",
        default=None,
        help=f"embedding weights file (default: the shipped {weights.DIGITS_EMBEDDING})",
    )
    dig.add_argument("--json", action="store_true", help="print one JSON document")
    dig.set_defaults(func=run)


    prec = targets.add_parser(
        "maml-precision",
        help="fixed-point vs float64 query MSE after adaptation, across formats and rounding modes",
        description="Adapt the shipped MAML init on held-out sinusoid tasks with the bit-exact "
        "fixed-point model and with float64; print the ratio of the query MSEs per format width, "
        "rounding mode and number of steps (docs/fixed_point.md).",
    )
    prec.add_argument("--tasks", type=int, default=600, help="held-out tasks (default: %(default)s)")
    prec.add_argument("--seed", type=int, default=2015, help="seed of the tasks (default: %(default)s)")
    prec.add_argument("--widths", default="12,14,16,18,20,24",
                      help="operand widths to study, comma-separated (default: %(default)s)")
    prec.add_argument("--json", action="store_true", help="print one JSON document")
    prec.set_defaults(func=run)

    gly = targets.add_parser(
        "glyphs-cls",
        help="glyph few-shot accuracy of the shipped classifiers (MAML, FOMAML, ANIL, Reptile), float64 and "
        "fixed point",
        description="Adapt each shipped glyph classifier on 5-way 1-shot and 5-shot meta-test episodes (the "
        "steps and learning rate it was meta-trained with) and classify the queries: float64 and the "
        "bit-exact fixed-point model of the default MamlClsConfig formats, beside the raw-pixel "
        "prototype baseline (docs/datasets.md).",
    )
    gly.add_argument("--episodes", type=int, default=1000, help="test episodes per shot (default: %(default)s)")
    gly.add_argument("--seed", type=int, default=2017, help="seed of the episodes (default: %(default)s)")
    gly.add_argument("--methods", default="maml,fomaml,anil,reptile,pretrained",
                     help="shipped classifiers to study, comma-separated (default: %(default)s)")
    gly.add_argument("--json", action="store_true", help="print one JSON document")
    gly.set_defaults(func=run)

    cprec = targets.add_parser(
        "maml-cls-precision",
        help="fixed-point vs float64 glyph accuracy after adaptation, across operand widths",
        description="Adapt a shipped glyph classifier on 5-way meta-test episodes with the bit-exact "
        "fixed-point model of each operand width and with float64; print the accuracy difference "
        "(docs/fixed_point.md).",
    )
    cprec.add_argument("--episodes", type=int, default=300, help="test episodes (default: %(default)s)")
    cprec.add_argument("--seed", type=int, default=2020, help="seed of the episodes (default: %(default)s)")
    cprec.add_argument("--method", default="anil", help="shipped classifier (default: %(default)s)")
    cprec.add_argument("--k-shot", type=int, default=1, help="1 or 5 (default: %(default)s)")
    cprec.add_argument("--widths", default="10,12,14,16,18",
                       help="operand widths, comma-separated (default: %(default)s)")
    cprec.add_argument("--json", action="store_true", help="print one JSON document")
    cprec.set_defaults(func=run)

    genc = targets.add_parser(
        "glyphs-encoder",
        help="glyph few-shot accuracy of the Prototypical / Matching read-outs on raw pixels and on the shipped "
        "dense and conv encoders, float64 and fixed point",
        description="5-way 1-shot and 5-shot meta-test episodes of the glyph set through the Prototypical "
        "(Snell et al. 2017) and Matching (Vinyals et al. 2016) read-outs on raw pixels, on the shipped dense "
        "encoder and on the shipped conv encoder (metafab.reference.encoder): float64, and the bit-exact "
        "fixed-point pipeline (encoder.fewshot_fixed with the default EncoderConfig formats). The same "
        "episodes for every row.",
    )
    genc.add_argument("--episodes", type=int, default=1000, help="test episodes per shot (default: %(default)s)")
    genc.add_argument("--seed", type=int, default=2017, help="seed of the episodes (default: %(default)s)")
    genc.add_argument("--conv", default=None, help="conv encoder weights file (default: the shipped one)")
    genc.add_argument("--dense", default=None, help="dense encoder weights file (default: the shipped one)")
    genc.add_argument("--max-minutes", type=float, default=30.0,
                      help="stop after the episode that crosses this wall-clock time; every row then has the same, "
                      "fewer, episodes (default: %(default)s)")
    genc.add_argument("--json", action="store_true", help="print one JSON document")
    genc.set_defaults(func=run)

    # the similarity engine's study lives in its own module (its own run function)
    from metafab.gen.cmd_match_study import register_study as _register_match_study

    _register_match_study(targets)


def write_study(doc: dict) -> None:
    """The study's JSON document as ``<build>/study/<target>.json`` (``metafab report`` draws it)."""
    from metafab.sim.runner import build_root

    path = build_root() / "study" / f"{doc['study']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    print(f"report: {path}", file=sys.stderr)


def _weights(path, shipped: str) -> weights.Weights:
    return weights.load_shipped(shipped) if path is None else weights.load(path)


def _maml_precision(args) -> tuple[dict, str]:
    from metafab.reference import precision
    from metafab.reference.errors import UserError

    try:
        widths = tuple(int(w) for w in str(args.widths).split(","))
    except ValueError:
        raise UserError(f"--widths {args.widths!r} must be comma-separated integers, e.g. 12,16") from None
    tasks = as_count("--tasks", args.tasks, minimum=2)
    rows = precision.maml_precision(
        weights.load_sinusoid_init(), widths=widths, n_tasks=tasks, seed=args.seed,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    doc = {
        "study": "maml-precision",
        "metric": "mean post-adaptation query MSE, fixed point / float64, same tasks and init",
        "settings": {"tasks": tasks, "seed": args.seed, "widths": list(widths), "k_support": 10,
                     "n_query": 10, "lr": 0.01},
        "rows": precision.as_dicts(rows),
    }
    return doc, precision.precision_markdown(rows)


def _widths(text) -> tuple[int, ...]:
    from metafab.reference.errors import UserError

    try:
        return tuple(int(w) for w in str(text).split(","))
    except ValueError:
        raise UserError(f"--widths {text!r} must be comma-separated integers, e.g. 12,16") from None


def _glyph_setting(meta: dict) -> tuple[int, float, str]:
    """Inner steps, learning rate and adapted layers a shipped classifier was meta-trained with."""
    return int(meta["inner_steps"]), float(meta["inner_lr"]), "head" if meta.get("anil") else "all"


def _glyphs_cls(args) -> tuple[dict, str]:
    import numpy as np

    from metafab.reference import classify, glyphs, matching, proto
    from metafab.reference import maml_cls_fixed as cf
    from metafab.reference import maml_fixed as mf
    from metafab.reference.config import MamlClsConfig

    n = as_count("--episodes", args.episodes, minimum=2)
    seed = as_count("--seed", args.seed)
    methods = [m for m in str(args.methods).split(",") if m]
    for m in methods:
        weights.glyph_classifier_file(m, 1)  # a one-line error for an unknown name

    def ci(a):
        return float(np.mean(a)), float(1.96 * np.std(a, ddof=1) / np.sqrt(len(a)))

    def row(method, k, steps, fl, fxd=None, lr=None, command=None):
        (fm, fc), (xm, xc) = ci(fl), (ci(fxd) if fxd is not None else (None, None))
        print(f"5-way {k}-shot {method}, {steps} step(s): float64 {fm:.2f} +- {fc:.2f} %"
              + (f", fixed point {xm:.2f} +- {xc:.2f} %" if fxd is not None else ""), file=sys.stderr, flush=True)
        return {"method": method, "k_shot": k, "steps": steps, "float64": fm, "float64_ci95": fc, "fixed": xm,
                "fixed_ci95": xc, "lr": lr, "weights": command}

    rows = []
    data = glyphs.load_shipped()
    for k in (1, 5):
        sampler = glyphs.EpisodeSampler(split="test", n_way=5, k_shot=k, n_query=15, data=data)
        eps = list(glyphs.episodes(sampler, n, seed))
        pr = [100 * np.mean(proto.readout(ep.query, proto.prototypes(ep.support, ep.support_labels, 5))[1]
                            == ep.query_labels) for ep in eps]
        mt = [100 * np.mean(matching.readout(ep.query, ep.support, ep.support_labels, 5)[1] == ep.query_labels)
              for ep in eps]
        rows += [row("ProtoNet, raw pixels", k, 0, pr), row("Matching, raw pixels", k, 0, mt)]
        for m in methods:
            w = weights.load_glyph_classifier(m, k)
            trained_steps, lr, adapt = _glyph_setting(w.metadata)
            layers = None if adapt == "all" else classify.anil_layers(len(w.params))
            for steps in sorted({1, trained_steps}):
                cfg = MamlClsConfig(k_support=5 * k, n_query=75, steps=steps, lr=lr, adapt_layers=adapt)
                wq = mf.quantize_params(w.params, cfg)
                fl, fxd = [], []
                for ep in eps:
                    a = classify.adapt(w.params, ep.support, ep.support_labels, steps, lr, layers=layers)
                    fl.append(100 * classify.accuracy(a, ep.query, ep.query_labels))
                    res = cf.run_task(wq, mf.quantize_inputs(ep.support, cfg), ep.support_labels,
                                      mf.quantize_inputs(ep.query, cfg), cfg)
                    fxd.append(100 * float(np.mean(res.pred == ep.query_labels)))
                rows.append(row(m, k, steps, fl, fxd, lr, w.metadata.get("command")))
    doc = {"study": "glyphs-cls",
           "metric": "query accuracy (percent) on glyph meta-test episodes after adaptation, mean and 95% "
                     "half-width over episodes",
           "settings": {"episodes": n, "seed": seed, "n_way": 5, "shots": [1, 5], "queries_per_class": 15,
                        "fixed_point": "default MamlClsConfig formats"},
           "rows": rows}
    lines = ["| method | steps | 5w1s float64 | 5w1s fixed point | 5w5s float64 | 5w5s fixed point |",
             "|---|---|---|---|---|---|"]
    keys = []
    for r in rows:
        if (r["method"], r["steps"]) not in keys:
            keys.append((r["method"], r["steps"]))
    for name, steps in keys:
        cells = []
        for k in (1, 5):
            r = next((r for r in rows if (r["method"], r["steps"], r["k_shot"]) == (name, steps, k)), None)
            if r is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{r['float64']:.2f} +- {r['float64_ci95']:.2f}")
            cells.append("-" if r["fixed"] is None else f"{r['fixed']:.2f} +- {r['fixed_ci95']:.2f}")
        lines.append(f"| {name} | {steps or '-'} | " + " | ".join(cells) + " |")
    return doc, "\n".join(lines)


def _glyphs_encoder(args) -> tuple[dict, str]:
    import numpy as np

    from metafab.reference import encoder, glyphs, matching, proto

    n = as_count("--episodes", args.episodes, minimum=2)
    seed = as_count("--seed", args.seed)
    limit = 60.0 * as_rate("--max-minutes", args.max_minutes, positive=True)
    encoders = {}
    for kind, path in (("dense", args.dense), ("conv", args.conv)):
        w = encoder.load_glyph_encoder(kind) if path is None else encoder.load_encoder(path)
        cfg = encoder.EncoderConfig(spec=w.spec)
        encoders[kind] = (w, cfg, encoder.quantize_encoder(w.params, cfg))
    data = glyphs.load_shipped()
    shots = (1, 5)
    streams = {k: glyphs.episodes(glyphs.EpisodeSampler(split="test", n_way=5, k_shot=k, n_query=15, data=data),
                                  n, seed) for k in shots}
    feats = [("raw pixels", None)] + [(f"{kind} {w.spec}", kind) for kind, (w, _, _) in encoders.items()]
    modes = (("ProtoNet", "proto"), ("Matching", "matching"))
    acc = {(f, m, p, k): [] for f, _ in feats for m, _ in modes for p in ("float64", "fixed") for k in shots}
    agree = {(f, m, k): [] for f, kind in feats if kind for m, _ in modes for k in shots}

    def score(pred, ep):
        return 100.0 * float(np.mean(pred == ep.query_labels))

    start = time.perf_counter()
    done = 0
    for i in range(n):  # episode i of every shot count, then every row: a time stop leaves the same episodes
        for k in shots:
            ep = next(streams[k])
            for fname, kind in feats:
                if kind is None:
                    s, q = ep.support, ep.query
                else:
                    w, _, _ = encoders[kind]
                    e = encoder.forward(w.params, w.spec, np.concatenate([ep.support, ep.query]))
                    s, q = e[:len(ep.support)], e[len(ep.support):]
                for mname, mode in modes:
                    if mode == "proto":
                        _, pred = proto.readout(q, proto.prototypes(s, ep.support_labels, 5))
                    else:
                        _, pred = matching.readout(q, s, ep.support_labels, 5)
                    acc[(fname, mname, "float64", k)].append(score(pred, ep))
                    if kind is None:
                        continue
                    _, cfg, wq = encoders[kind]
                    cfg = cfg.replace(mode=mode, k_shot=k)
                    res = encoder.fewshot_fixed(wq, encoder.quantize_images(ep.support, cfg), ep.support_labels,
                                                encoder.quantize_images(ep.query, cfg), cfg)
                    acc[(fname, mname, "fixed", k)].append(score(res.pred, ep))
                    agree[(fname, mname, k)].append(100.0 * float(np.mean(res.pred == pred)))
        done = i + 1
        if done % 100 == 0:
            print(f"  {done}/{n} episodes ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        if time.perf_counter() - start >= limit and done < n:
            print(f"  stopped by --max-minutes after {done} episodes per shot", file=sys.stderr)
            break

    rows = []
    for fname, kind in feats:
        for mname, _ in modes:
            for k in shots:
                fl = study.interval(np.asarray(acc[(fname, mname, "float64", k)]))
                fxd = study.interval(np.asarray(acc[(fname, mname, "fixed", k)])) if kind else (None, None)
                rows.append({"features": fname, "readout": mname, "k_shot": k, "float64": fl[0], "float64_ci95": fl[1],
                             "fixed": fxd[0], "fixed_ci95": fxd[1],
                             "agreement": float(np.mean(agree[(fname, mname, k)])) if kind else None})
    doc = {"study": "glyphs-encoder",
           "metric": "query accuracy (percent) on glyph meta-test episodes, mean and 95% half-width over episodes; "
                     "agreement = percent of queries where fixed point and float64 predict the same class",
           "settings": {"episodes": done, "episodes_asked": n, "seed": seed, "n_way": 5, "shots": list(shots),
                        "queries_per_class": 15,
                        "fixed_point": {kind: cfg.to_dict() for kind, (_, cfg, _) in encoders.items()}},
           "weights": {kind: w.metadata.get("command") for kind, (w, _, _) in encoders.items()},
           "rows": rows}
    lines = ["| features | read-out | 5w1s float64 | 5w1s fixed point | 5w5s float64 | 5w5s fixed point |",
             "|---|---|---|---|---|---|"]
    for fname, _ in feats:
        for mname, _ in modes:
            cells = []
            for k in shots:
                r = next(r for r in rows if (r["features"], r["readout"], r["k_shot"]) == (fname, mname, k))
                cells.append(f"{r['float64']:.2f} +- {r['float64_ci95']:.2f}")
                cells.append("-" if r["fixed"] is None else f"{r['fixed']:.2f} +- {r['fixed_ci95']:.2f}")
            lines.append(f"| {fname} | {mname} | " + " | ".join(cells) + " |")
    return doc, "\n".join(lines)


def _maml_cls_precision(args) -> tuple[dict, str]:
    from metafab.reference import cls_precision

    widths = _widths(args.widths)
    n = as_count("--episodes", args.episodes, minimum=2)
    w = weights.load_glyph_classifier(args.method, args.k_shot)
    steps, lr, adapt = _glyph_setting(w.metadata)
    rows = cls_precision.cls_precision(w.params, widths=widths, steps=(steps,), k_shot=args.k_shot, n_episodes=n,
                                       lr=lr, adapt_layers=adapt, seed=as_count("--seed", args.seed),
                                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    doc = {"study": "maml-cls-precision",
           "metric": "glyph query accuracy after adaptation, fixed point - float64 (points), same episodes and "
                     "weights",
           "settings": {"episodes": n, "seed": args.seed, "widths": list(widths), "method": args.method,
                        "k_shot": args.k_shot, "steps": steps, "lr": lr, "adapt_layers": adapt},
           "weights": w.metadata.get("command"),
           "rows": cls_precision.as_dicts(rows)}
    return doc, cls_precision.cls_precision_markdown(rows)


def _sinusoid(args) -> tuple[dict, str]:
    settings = {
        "tasks": as_count("--tasks", args.tasks, minimum=2),
        "seed": as_count("--seed", args.seed),
        "lr": as_rate("--lr", args.lr),
        "shots": [5, 10],
        "steps": [0, 1, 10],
        "query_points": 100,
    }
    inits = {
        "MAML (K=10)": _weights(args.maml, weights.SINUSOID_INIT),
        "MAML (K=5)": _weights(args.maml_k5, weights.SINUSOID_INIT_K5),
        "pretrained": _weights(args.pretrained, weights.SINUSOID_PRETRAINED),
    }
    rows = study.sinusoid_study(
        {name: w.params for name, w in inits.items()},
        n_tasks=settings["tasks"],
        shots=tuple(settings["shots"]),
        steps=tuple(settings["steps"]),
        lr=settings["lr"],
        n_query=settings["query_points"],
        seed=settings["seed"],
    )
    doc = {
        "study": "sinusoid",
        "metric": "query MSE after SGD adaptation, mean and 95% half-width over tasks",
        "settings": settings,
        "weights": {name: w.metadata.get("command") for name, w in inits.items()},
        "rows": study.as_dicts(rows),
    }
    return doc, study.sinusoid_markdown(rows)


def _digits(args) -> tuple[dict, str]:
    settings = {
        "episodes": as_count("--episodes", args.episodes, minimum=2),
        "seed": as_count("--seed", args.seed),
        "n_way": 5,
        "shots": [1, 5],
        "queries_per_class": 15,
    }
    emb = _weights(args.embedding, weights.DIGITS_EMBEDDING)
    rows = study.digits_study(
        emb.params,
        episodes=settings["episodes"],
        shots=tuple(settings["shots"]),
        n_way=settings["n_way"],
        n_query=settings["queries_per_class"],
        seed=settings["seed"],
    )
    doc = {
        "study": "digits",
        "metric": "query accuracy on the meta-test digits 5-9, mean and 95% half-width "
        "over episodes",
        "settings": settings,
        "weights": {"embedding": emb.metadata.get("command")},
        "rows": study.as_dicts(rows),
    }
    return doc, study.digits_markdown(rows)


def run(args: argparse.Namespace) -> int:
    """Compute the table and print it (markdown or JSON) on stdout."""
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # same numbers on any core count
        study_fn = {"sinusoid": _sinusoid, "digits": _digits, "maml-precision": _maml_precision,
                    "glyphs-cls": _glyphs_cls, "maml-cls-precision": _maml_cls_precision,
                    "glyphs-encoder": _glyphs_encoder}
        doc, table = study_fn[args.target](args)
    print(f"metafab study {args.target}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    write_study(doc)
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print(table if table.endswith("\n") else table + "\n", end="")
    return 0
