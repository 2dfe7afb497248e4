"""``metafab data glyphs``: make the glyphs few-shot set from a seed, picture it, measure a baseline.

The set is rendered from the fonts inside matplotlib (:mod:`metafab.gen.glyph_render`);
nothing is downloaded. The written ``.npz`` is byte-identical for the same
options on the same Pillow, FreeType and zlib; the shipped
``metafab/reference/data/glyphs16.npz`` is ``metafab data glyphs --seed 0``
and :data:`metafab.reference.glyphs.SHA256` is the checksum of its arrays.
``--shipped`` uses the shipped set instead of making one (with
``--baseline`` or ``--picture``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from metafab.gen.cli import count, progress, seed
from metafab.reference import glyphs
from metafab.reference.errors import UserError

__all__ = ["register", "run_glyphs", "picture"]


def _size(text: str) -> int:
    from metafab.gen.glyph_render import SIZES

    if text not in {str(s) for s in SIZES}:
        import argparse

        raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, SIZES))}, got {text!r}")
    return int(text)


def register(subparsers) -> None:
    """Add ``data`` and its target ``glyphs`` to the ``metafab`` parser."""
    parser = subparsers.add_parser(
        "data", help="make the few-shot data sets that ship with metafab (glyphs)",
        description="Make a data set that ships with metafab, reproducibly from a seed.")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    g = targets.add_parser(
        "glyphs", help="the Omniglot-like glyphs set, rendered from matplotlib's fonts",
        description="Render the glyphs set (one class per letter of 15 Unicode scripts, 20 distorted "
        "grey samples each, split by script into train / validation / test) from the fonts inside "
        "matplotlib, and write it as a compressed .npz.")
    g.add_argument("--seed", type=seed, default=0, help="seed of the samples (default: %(default)s)")
    g.add_argument("--size", type=_size, default=16, help="picture side, 16 or 28 (default: %(default)s)")
    g.add_argument("-o", "--out", type=Path, default=None,
                   help="the .npz to write (default: BUILD/glyphs/glyphs<size>-seed<seed>.npz)")
    g.add_argument("--classes", type=count, default=None,
                   help="make only the first N classes (a quick run; default: all)")
    g.add_argument("--shipped", action="store_true",
                   help="use the shipped 16x16 set instead of making one (for --baseline, --picture)")
    g.add_argument("--baseline", action="store_true",
                   help="nearest-prototype accuracy on raw pixels, 5-way 1-shot and 5-shot, on test episodes")
    g.add_argument("--episodes", type=count, default=1000,
                   help="episodes per --baseline figure (default: %(default)s)")
    g.add_argument("--picture", type=Path, default=None,
                   help="also write a PNG grid of 10 classes x 10 samples to this path")
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")
    g.set_defaults(func=run_glyphs)


def run_glyphs(args) -> int:
    """The ``metafab data glyphs`` command."""
    if args.shipped and (args.out is not None or args.classes is not None or args.size != 16 or args.seed != 0):
        raise UserError("--shipped uses the shipped set as it is; it takes no --out, --classes, --size or --seed")
    result: dict = {}
    if args.shipped:
        data = glyphs.load_shipped()
        result["file"] = "shipped " + glyphs.SHIPPED
    else:
        from metafab.gen import glyph_render
        from metafab.sim.runner import build_root

        out = args.out or build_root() / "glyphs" / f"glyphs{args.size}-seed{args.seed}.npz"
        if out.is_dir():
            raise UserError(f"--out {str(out)!r} is a folder; give a file name ending in .npz")
        start = time.monotonic()
        arrays = glyph_render.make_set(seed=args.seed, size=args.size, classes=args.classes, progress=progress)
        glyphs.save(out, arrays)
        progress(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - start:.0f} s")
        data = glyphs.load(out)
        result["file"] = str(out)
        result["bytes"] = out.stat().st_size
    result.update(size=data.size, seed=data.seed, classes=int(len(data.codepoints)),
                  sha256=glyphs.array_digest({"images": data.images, "codepoints": data.codepoints,
                                              "scripts": data.scripts, "splits": data.splits,
                                              "script_names": np.array(data.script_names),
                                              "seed": np.array(data.seed, dtype=np.int64)}),
                  scripts=[{"script": n, "split": s, "classes": c} for n, s, c in data.counts()])
    if args.picture is not None:
        picture(data, args.picture)
        progress(f"wrote {args.picture}")
        result["picture"] = str(args.picture)
    if args.baseline:
        rows = []
        for k in (1, 5):
            progress(f"baseline: 5-way {k}-shot, {args.episodes} test episodes")
            mean, half = glyphs.prototype_baseline(n_way=5, k_shot=k, n_query=15, n_episodes=args.episodes,
                                                   seed=0, data=data)
            rows.append({"n_way": 5, "k_shot": k, "n_query": 15, "episodes": args.episodes,
                         "accuracy": round(mean, 2), "ci95": round(half, 2)})
        result["baseline"] = rows
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        _print(result)
    return 0


def _print(result: dict) -> None:
    print(f"glyphs set {result['file']}: {result['classes']} classes x {glyphs.SAMPLES} samples, "
          f"{result['size']}x{result['size']}, seed {result['seed']}")
    print(f"arrays sha256 {result['sha256']}")
    totals: dict[str, int] = {}
    for row in result["scripts"]:
        print(f"  {row['script']:<20} {row['split']:<11} {row['classes']:>4}")
        totals[row["split"]] = totals.get(row["split"], 0) + row["classes"]
    print("  " + ", ".join(f"{s} {totals.get(s, 0)}" for s in glyphs.SPLITS))
    for row in result.get("baseline", []):
        print(f"nearest prototype, raw pixels, {row['n_way']}-way {row['k_shot']}-shot: "
              f"{row['accuracy']:.2f} +- {row['ci95']:.2f} % ({row['episodes']} test episodes, 95 % interval)")


def picture(data: glyphs.GlyphSet, path, *, n_classes: int = 10, n_samples: int = 10) -> Path:
    """A PNG grid (matplotlib Agg) of the first ``n_samples`` of ``n_classes`` classes, one per script in turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one class from each script in turn, the middle letter of the script (fixed, no randomness)
    picks = []
    for s in range(len(data.script_names)):
        members = np.flatnonzero(data.scripts == s)
        if len(members):
            picks.append(int(members[len(members) // 2]))
    picks = picks[:n_classes]
    fig, axes = plt.subplots(len(picks), n_samples, figsize=(n_samples * 0.42 + 1.6, len(picks) * 0.42),
                             squeeze=False)
    for r, c in enumerate(picks):
        for j in range(n_samples):
            ax = axes[r, j]
            ax.imshow(data.images[c, j], cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        name = data.script_names[int(data.scripts[c])]
        axes[r, 0].set_ylabel(f"{name}\nU+{int(data.codepoints[c]):04X}", rotation=0, ha="right", va="center",
                              fontsize=6)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
