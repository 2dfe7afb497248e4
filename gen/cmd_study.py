"""``metafab study {sinusoid,digits}``: reproduce the paper-claim tables of docs/reference.md.

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
        study_fn = {"sinusoid": _sinusoid, "digits": _digits, "maml-precision": _maml_precision}
        doc, table = study_fn[args.target](args)
    print(f"metafab study {args.target}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    write_study(doc)
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print(table if table.endswith("\n") else table + "\n", end="")
    return 0
