"""Import sine_mlp.onnx, adapt it to one sinusoid task on the bit-exact reference and in an RTL simulation.

Steps: ``metafab.api.import_model`` (the quantisation report and a metafab weight file under ``--out``),
``Design.from_model`` (the ``maml`` engine with the model's 1-40-40-1 layers, ``--lanes`` MAC lanes), then
one task (K=10 support points, 10 queries of ``A sin(x - phase)``) on the ``reference`` backend and on
``--backend``: the outputs and the adapted weights (``parameter_codes()``, read back with READ_WEIGHTS)
must be identical. Prints the query MSE against the true sinusoid before and after adaptation.

    python examples/onnx_mlp/adapt_in_sim.py                       # reference vs Verilator
    python examples/onnx_mlp/adapt_in_sim.py --backend icarus --out /tmp/sine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(HERE / "sine_mlp.onnx"),
                   help="the ONNX model (default: the checked-in sine_mlp.onnx beside this script)")
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "onnx_mlp")),
                   help="output folder of the import (default: build/examples/onnx_mlp)")
    p.add_argument("--backend", choices=("verilator", "icarus", "reference"), default="verilator",
                   help="the backend compared with the reference (default verilator; reference: the reference alone)")
    p.add_argument("--lanes", type=int, default=16, help="MAC lanes of the design (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the task (default 0)")
    args = p.parse_args(argv)

    from metafab.api import MAML, Design, import_model
    from metafab.reference.errors import UserError

    try:
        report = import_model(args.model, out=Path(args.out) / "import")
        q = report["quantisation"]
        t, a = q["total"], q["agreement"]
        print(f"imported {report['source']}: layers {'-'.join(map(str, report['layers']))}, engine {report['engine']}")
        print(f"quantisation: {t['count']} values, {t['saturated']} saturated, {t['to_zero']} to zero in "
              f"{q['formats']['master_fmt']}; agreement float64 vs fixed point on {a['samples']} inputs: "
              f"max |error| {a['max_abs_error']:.4g}, rms {a['rms_error']:.4g}")
        print(f"weight file: {report['weights']}")

        design = Design.from_model(args.model, lanes=args.lanes)
        cfg = design.config
        rng = np.random.default_rng(args.seed)
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
        xs = rng.uniform(-5.0, 5.0, (cfg.k_support, 1))
        xq = rng.uniform(-5.0, 5.0, (cfg.n_query, 1))
        ys, yq = amp * np.sin(xs - phase), amp * np.sin(xq - phase)
        print(f"design {cfg.name}; task A={amp:.3f} phase={phase:.3f}, K={cfg.k_support} support points, "
              f"{cfg.n_query} queries, {cfg.steps} SGD step(s) of lr {cfg.lr}")

        results = {}
        for backend in dict.fromkeys(("reference", args.backend)):
            task = MAML(design, backend=backend).clone()
            task.adapt(xs, ys)
            results[backend] = (task(xq), task.parameter_codes())
        y_ref, w_ref = results["reference"]
        if args.backend != "reference":
            y_sim, w_sim = results[args.backend]
            assert np.array_equal(y_sim, y_ref), (y_sim, y_ref)
            assert len(w_sim) == len(w_ref) and all(np.array_equal(s, r) for s, r in zip(w_sim, w_ref, strict=True))
            n_w = sum(w.size for w in w_ref)
            print(f"reference and {args.backend}: identical outputs ({y_ref.size} words) and identical adapted "
                  f"weights ({n_w} codes)")

        from metafab.reference import mlp

        y0 = mlp.forward_trace(MAML(design).initial_parameters(), xq).output
        print(f"query MSE vs the true sinusoid: {np.mean((y0 - yq) ** 2):.4f} before adaptation (float64 forward of "
              f"the loaded weights), {np.mean((y_ref - yq) ** 2):.4f} after adaptation on the engine")
    except UserError as exc:
        print(f"adapt_in_sim.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
