"""``metafab study match-precision``: fixed-point vs float64 accuracy of the similarity read-out.

Registered as a target of ``metafab study`` (see :mod:`metafab.gen.cmd_study`);
the table is the one in ``docs/fixed_point.md`` ("Similarity read-out").
"""

from __future__ import annotations

import json
import sys
import time

from metafab.reference import weights
from metafab.reference.arrays import as_count

__all__ = ["register_study", "run"]


def register_study(targets) -> None:
    """Add the ``match-precision`` target to ``metafab study``'s sub-parsers."""
    p = targets.add_parser(
        "match-precision",
        help="similarity read-out: fixed-point vs float64 accuracy on digits episodes, across formats",
        description="5-way 1- and 5-shot episodes of the meta-test digits 5-9 through the float64 "
        "Matching/Prototypical read-outs and the bit-exact fixed-point model, for a family of operand "
        "widths and softmax options; prints accuracy and agreement tables (docs/fixed_point.md).",
    )
    p.add_argument("--episodes", type=int, default=1000,
                   help="episodes per shot count (default: %(default)s)")
    p.add_argument("--seed", type=int, default=2016, help="seed of the episodes (default: %(default)s)")
    p.add_argument("--features", default="embedding,pixels",
                   help="feature sets, comma-separated: embedding, pixels (default: %(default)s)")
    p.add_argument("--embedding", default=None,
                   help=f"embedding weights file (default: the shipped {weights.DIGITS_EMBEDDING})")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    from threadpoolctl import threadpool_limits

    from metafab.gen.cmd_study import write_study
    from metafab.reference import match_precision

    start = time.perf_counter()
    episodes = as_count("--episodes", args.episodes, minimum=2)
    seed = as_count("--seed", args.seed)
    features = tuple(f.strip() for f in str(args.features).split(",") if f.strip())
    if args.embedding is None:
        emb = weights.load_shipped(weights.DIGITS_EMBEDDING)
    else:
        emb = weights.load(args.embedding)
    with threadpool_limits(limits=1, user_api="blas"):  # same numbers on any core count
        rows = match_precision.match_precision(
            emb.params, episodes=episodes, seed=seed, features=features,
            progress=lambda m: print(m, file=sys.stderr, flush=True),
        )
    print(f"metafab study match-precision: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    doc = {
        "study": "match-precision",
        "metric": "5-way query accuracy (%) on the meta-test digits 5-9: fixed point vs float64, "
        "same episodes; agreement = fraction of queries with the same prediction",
        "settings": {"episodes": episodes, "seed": seed, "features": list(features), "n_way": 5,
                     "shots": [1, 5], "queries_per_class": 15},
        "variants": [{"label": lab, "width": w, "overrides": over}
                     for lab, w, over in match_precision.VARIANTS],
        "rows": match_precision.as_dicts(rows),
    }
    write_study(doc)
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print(match_precision.precision_markdown(rows), end="")
    return 0
