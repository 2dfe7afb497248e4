"""A support set of your own on the similarity engine: three clusters, 3-way 2-shot, 16-dimensional.

Makes three clusters of 16-dimensional embeddings (seeded), takes two of each class as the support set
and five of each as queries, runs ``metafab.api.Match`` on the ``reference`` backend and on ``--backend``
(an RTL simulation), checks that the class probabilities and classes are identical, prints the accuracy
against the cluster labels, and writes the episode as JSON in the format ``metafab run match --input``
reads (a list of ``{"support", "labels", "queries", "query_labels"}``).

    python examples/custom_support_set/run.py --out build/examples/custom_support_set
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

N_WAY, K_SHOT, DIM, QUERIES_PER_CLASS = 3, 2, 16, 5


def clusters(seed: int, spread: float):
    """Support rows ``(N K, D)`` with labels, and queries ``(N * 5, D)`` with labels, around 3 centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_WAY, DIM))
    centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True)  # length 2: well inside emb_fmt's range
    labels = np.repeat(np.arange(N_WAY), K_SHOT)
    support = centres[labels] + spread * rng.standard_normal((len(labels), DIM))
    query_labels = np.repeat(np.arange(N_WAY), QUERIES_PER_CLASS)
    queries = centres[query_labels] + spread * rng.standard_normal((len(query_labels), DIM))
    return support, labels, queries, query_labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "custom_support_set")),
                   help="output folder (default: build/examples/custom_support_set)")
    p.add_argument("--backend", choices=("verilator", "icarus", "reference"), default="verilator",
                   help="the backend compared with the reference (default verilator; reference: the reference alone)")
    p.add_argument("--mode", choices=("matching", "proto"), default="matching",
                   help="cosine attention (matching, default) or squared distance to prototypes (proto)")
    p.add_argument("--lanes", type=int, default=4, help="MAC lanes of the design (default 4)")
    p.add_argument("--spread", type=float, default=0.5, help="standard deviation around each centre (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clusters (default 0)")
    args = p.parse_args(argv)

    from metafab.api import Design, Match
    from metafab.reference.errors import UserError

    try:
        design = Design("match", n_way=N_WAY, k_shot=K_SHOT, dim=DIM, mode=args.mode, lanes=args.lanes)
        support, labels, queries, query_labels = clusters(args.seed, args.spread)
        print(f"design {design.config.name}: {len(labels)} support rows, {len(queries)} queries")
        answers = {}
        for backend in dict.fromkeys(("reference", args.backend)):
            answers[backend] = Match(design, backend=backend).support(support, labels).classify(queries)
        probs, classes = answers["reference"]
        if args.backend != "reference":
            p_sim, c_sim = answers[args.backend]
            assert np.array_equal(p_sim, probs) and np.array_equal(c_sim, classes)
            print(f"reference and {args.backend}: identical probabilities ({probs.size} values) and classes "
                  f"({classes.size})")
        accuracy = float(np.mean(classes == query_labels))
        print(f"accuracy against the cluster labels: {100 * accuracy:.1f} % ({int(np.sum(classes == query_labels))} "
              f"of {len(queries)})")

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        episode = {"support": support.tolist(), "labels": labels.tolist(), "queries": queries.tolist(),
                   "query_labels": query_labels.tolist()}
        path = out / "episode.json"
        path.write_text(json.dumps([episode]) + "\n")
        print(f"wrote {path}; on a board built for this design: metafab run match --input {path} --ways {N_WAY} "
              f"--shots {K_SHOT} --dim {DIM} --mode {args.mode} --lanes {args.lanes} --port /dev/ttyUSB0")
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
