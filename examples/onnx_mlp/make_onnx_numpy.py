"""Train the 1-40-40-1 sinusoid MLP in numpy and write it as the ONNX graph torch.onnx.export writes.

The same network and training as ``train_export_torch.py`` (which needs PyTorch), with metafab's float64
reference (``metafab.reference.mlp`` forward and backprop, ``metafab.reference.adam``) instead of torch.
Tasks are sinusoids ``y = A sin(x - phase)``, A in [0.1, 5], phase in [0, pi], x in [-5, 5] (the ranges
of Finn et al. 2017, section 5.1), 10 support and 10 query points each, 25 tasks a step, seeded.

- ``--method fomaml`` (default): first-order MAML with the engine's inner loop (one SGD step of lr 0.01
  on the support points), so that the network adapts well on the engine;
- ``--method joint``: one plain fit of all the tasks' points (the network learns the mean sinusoid; one
  SGD step of lr 0.01 from it makes the query error worse, the script prints by how much).

The graph is what ``torch.onnx.export`` writes for ``nn.Sequential(Linear(1, 40), ReLU(), Linear(40, 40),
ReLU(), Linear(40, 1))`` at opset 17: ``Gemm(transB=1)``, ``Relu``, ``Gemm``, ``Relu``, ``Gemm``, the
weights as initializers named ``0.weight``, ``0.bias``, ``2.weight``, ... and the input ``x`` of shape
``["batch", 1]``. The file is the same bytes on every run: the weights are rounded to multiples of
2^-20 before they become float32, so that another BLAS's summation order cannot change them.

    python examples/onnx_mlp/make_onnx_numpy.py                            # build/examples/onnx_mlp/sine_mlp.onnx
    python examples/onnx_mlp/make_onnx_numpy.py --out examples/onnx_mlp    # the checked-in copy
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

LAYERS = (1, 40, 40, 1)
INNER_LR = 0.01      # the maml engine's default lr and steps (one SGD step)
META_BATCH = 25
META_LR = 1e-3


def _mean_over_tasks(grads):
    return [(gw.mean(axis=0), gb.mean(axis=0)) for gw, gb in grads]


def _task_grads(params, x, y):
    """Per-task gradients of the MSE (x, y of shape (T, n, 1); shared or task-stacked params)."""
    from metafab.reference import mlp

    trace = mlp.forward_trace(params, x)
    return mlp.backward(params, trace, mlp.mse_output_grad(trace.output, y)), float(np.mean(mlp.mse(trace.output, y)))


def _sgd_step(params, grads, lr):
    return [(w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, grads, strict=True)]


def train(method: str, steps: int, seed: int):
    """``steps`` Adam steps of first-order MAML or of a joint fit; the parameters and the losses."""
    from metafab.reference import mlp
    from metafab.reference.adam import Adam
    from metafab.reference.sinusoid import SinusoidTasks

    rng = np.random.default_rng(seed)
    params = mlp.init_params(LAYERS, rng)           # He-normal weights, zero biases
    tasks = SinusoidTasks(k_support=10, k_query=10)
    adam = Adam(lr=META_LR)
    losses = []
    for _ in range(steps):
        t = tasks.sample(rng, META_BATCH)
        if method == "fomaml":
            support, _ = _task_grads(params, t.x_support, t.y_support)
            fast = _sgd_step(params, support, INNER_LR)         # one inner step per task (task-stacked)
            grads, loss = _task_grads(fast, t.x_query, t.y_query)  # first order: the query gradient at fast
        else:
            x = np.concatenate([t.x_support, t.x_query], axis=1)
            y = np.concatenate([t.y_support, t.y_query], axis=1)
            grads, loss = _task_grads(params, x, y)
        params = adam.step(params, _mean_over_tasks(grads))
        losses.append(loss)
    return params, losses


def held_out_mse(params, seed: int, n_tasks: int = 100):
    """float64 query MSE on ``n_tasks`` new tasks before and after one SGD step of lr 0.01 (K = 10)."""
    from metafab.reference import mlp
    from metafab.reference.sinusoid import SinusoidTasks

    t = SinusoidTasks(k_support=10, k_query=10).sample(np.random.default_rng(seed), n_tasks)
    grads, _ = _task_grads(params, t.x_support, t.y_support)
    fast = _sgd_step(params, grads, INNER_LR)
    before = float(np.mean(mlp.mse(mlp.forward_trace(params, t.x_query).output, t.y_query)))
    after = float(np.mean(mlp.mse(mlp.forward_trace(fast, t.x_query).output, t.y_query)))
    return before, after


def as_float32(params, grid_bits: int = 20):
    """The parameters rounded to multiples of 2^-grid_bits, as float32 (exact: |w| < 8 needs 23 bits)."""
    out = []
    for w, b in params:
        w, b = (np.round(np.ldexp(a, grid_bits)) / 2.0**grid_bits for a in (w, b))
        if not (np.all(np.abs(w) < 8) and np.all(np.abs(b) < 8)):
            raise SystemExit("a weight reached 8 or more: float32 would not hold it on the 2^-20 grid exactly")
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def onnx_model(params):
    """The graph torch.onnx.export writes for the nn.Sequential at opset 17 (dynamic batch axis)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    cur = "x"
    for i, (w, b) in enumerate(params):
        idx = 2 * i                                   # nn.Sequential index of the Linear: 0, 2, 4
        inits += [numpy_helper.from_array(w, f"{idx}.weight"), numpy_helper.from_array(b, f"{idx}.bias")]
        out = "y" if i == len(params) - 1 else f"/{idx}/Gemm_output_0"
        nodes.append(helper.make_node("Gemm", [cur, f"{idx}.weight", f"{idx}.bias"], [out], name=f"/{idx}/Gemm",
                                      alpha=1.0, beta=1.0, transB=1))
        cur = out
        if i < len(params) - 1:
            relu = f"/{idx + 1}/Relu_output_0"
            nodes.append(helper.make_node("Relu", [cur], [relu], name=f"/{idx + 1}/Relu"))
            cur = relu
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", LAYERS[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", LAYERS[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="metafab-examples")
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "onnx_mlp")),
                   help="folder of sine_mlp.onnx (default: build/examples/onnx_mlp; examples/onnx_mlp holds the "
                   "checked-in copy)")
    p.add_argument("--method", choices=("fomaml", "joint"), default="fomaml",
                   help="first-order MAML (default) or a joint fit of all the tasks")
    p.add_argument("--steps", type=int, default=10000, help="Adam steps (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and of the tasks (default 0)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")

    t0 = time.perf_counter()
    params, losses = train(args.method, args.steps, args.seed)
    n = min(100, len(losses))
    print(f"trained 1-40-40-1 MLP: {args.steps} Adam steps of {args.method}, seed {args.seed}, "
          f"{time.perf_counter() - t0:.1f} s; training MSE first {n} steps {np.mean(losses[:n]):.3f}, "
          f"last {n} steps {np.mean(losses[-n:]):.3f}")
    params = as_float32(params)
    before, after = held_out_mse([(w.astype(np.float64), b.astype(np.float64)) for w, b in params], args.seed + 1)
    print(f"float64 query MSE on 100 new tasks: {before:.3f} before adaptation, {after:.3f} after one SGD step "
          f"of lr {INNER_LR} on K=10")
    model = onnx_model(params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sine_mlp.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    ops = " + ".join(n.op_type + ("(transB=1)" if n.op_type == "Gemm" else "") for n in model.graph.node)
    print(f"graph: {ops}, opset 17, input 'x' ['batch', 1]")
    print(f"wrote {path} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
