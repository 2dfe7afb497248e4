"""Import a safetensors MLP by its nn.Sequential names and by a tensor map, then verify its RTL.

Writes the two files of ``make_safetensors.py`` under ``--out``, imports both with
``metafab.api.import_model`` (the second with ``tensor_map=``), checks that they give the same parameters
and the same quantisation report, and runs ``metafab.api.verify`` on a ``maml`` design with those weights
(``--count`` random tasks through the RTL in Verilator, every output word against the bit-exact
reference).

    python examples/safetensors_import/run.py --out build/examples/safetensors_import
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_safetensors  # noqa: E402  (the script beside this one)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "safetensors_import")),
                   help="output folder (default: build/examples/safetensors_import)")
    p.add_argument("--count", type=int, default=5, help="tasks to verify (default 5)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator", help="simulator (default verilator)")
    p.add_argument("--lanes", type=int, default=4, help="MAC lanes of the design (default 4)")
    args = p.parse_args(argv)

    from metafab.api import Design, import_model, verify
    from metafab.gen.model_import import read_model
    from metafab.reference.errors import UserError

    out = Path(args.out)
    try:
        seq_path, named_path = make_safetensors.write(out)
        seq = import_model(seq_path, out=out / "import_sequential")
        named = import_model(named_path, out=out / "import_named", tensor_map=make_safetensors.TENSOR_MAP)
        for r in (seq, named):
            t = r["quantisation"]["total"]
            print(f"imported {r['source']}: layers {'-'.join(map(str, r['layers']))}, {t['count']} values, "
                  f"{t['saturated']} saturated, {t['to_zero']} to zero; wrote {r['weights']}")
        a = read_model(seq_path).params
        b = read_model(named_path, tensor_map=make_safetensors.TENSOR_MAP).params
        same = len(a) == len(b) and all(np.array_equal(wa, wb) and np.array_equal(ba, bb)
                                        for (wa, ba), (wb, bb) in zip(a, b, strict=True))
        assert same, "the two files gave different parameters"
        assert _same_figures(seq, named), "the two imports gave different quantisation figures"
        print(f"sequential names and tensor map: identical parameters ({sum(w.size + v.size for w, v in a)} values) "
              f"and quantisation figures")

        design = Design("maml", weights=str(seq_path), lanes=args.lanes)
        report = verify(design, count=args.count, sim=args.sim)
        print(f"verify {report['design']} ({report['weights']}) in {report['simulator']}: {report['tasks']} tasks, "
              f"{report['output_words']} output words, mismatches {report['mismatches']}")
        if report["mismatches"]:
            return 1
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _same_figures(a: dict, b: dict) -> bool:
    """The reports agree but for the tensor names (each file names its own tensors)."""
    strip = [{k: v for k, v in layer.items() if k not in ("weight", "bias")} for layer in a["quantisation"]["layers"]]
    other = [{k: v for k, v in layer.items() if k not in ("weight", "bias")} for layer in b["quantisation"]["layers"]]
    qa = {k: v for k, v in a["quantisation"].items() if k != "layers"}
    qb = {k: v for k, v in b["quantisation"].items() if k != "layers"}
    return strip == other and qa == qb


if __name__ == "__main__":
    sys.exit(main())
