"""Train a 1-40-40-1 sinusoid MLP in PyTorch and export it as sine_mlp.onnx (needs torch and onnx).

The network is ``nn.Sequential(Linear(1, 40), ReLU(), Linear(40, 40), ReLU(), Linear(40, 1))``; the tasks
are sinusoids ``y = A sin(x - phase)``, A in [0.1, 5], phase in [0, pi], x in [-5, 5] (the ranges of
Finn et al. 2017, section 5.1), 10 support and 10 query points each, 25 tasks a step, seeded:

- ``--method fomaml`` (default): first-order MAML with the engine's inner loop (one SGD step of lr 0.01
  on the support points of each task, then the query loss's gradient at the adapted weights);
- ``--method joint``: a plain fit of all the tasks' points (the mean sinusoid).

``torch.onnx.export`` writes the graph metafab imports: ``Gemm(transB=1)``, ``Relu``, ``Gemm``, ``Relu``,
``Gemm`` at opset 17, the weights as initializers ``0.weight``, ``0.bias``, ``2.weight``, ..., the input
``x`` with a dynamic batch axis. ``make_onnx_numpy.py`` trains and writes the same graph without torch.

    pip install torch onnx
    python examples/onnx_mlp/train_export_torch.py --out build/examples/onnx_mlp
    metafab import build/examples/onnx_mlp/sine_mlp.onnx -o build/import/sine
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

INNER_LR = 0.01
META_BATCH = 25


def sample_tasks(gen, n_tasks: int, points: int):
    """Inputs and targets ``(n_tasks, points, 1)`` of ``n_tasks`` random sinusoids."""
    import torch

    amp = torch.empty(n_tasks, 1, 1).uniform_(0.1, 5.0, generator=gen)
    phase = torch.empty(n_tasks, 1, 1).uniform_(0.0, math.pi, generator=gen)
    x = torch.empty(n_tasks, points, 1).uniform_(-5.0, 5.0, generator=gen)
    return x, amp * torch.sin(x - phase)


def forward(params, x):
    """The Sequential's forward with explicit (possibly task-stacked) weights: W (T, out, in), b (T, out)."""
    import torch

    h = x
    for i in range(0, len(params), 2):
        w, b = params[i], params[i + 1]
        h = h @ w.transpose(-1, -2) + b.unsqueeze(-2)
        if i + 2 < len(params):
            h = torch.relu(h)
    return h


def per_task_mse(params, x, y):
    return ((forward(params, x) - y) ** 2).mean(dim=(1, 2))


def fomaml_step(net, opt, gen):
    """One outer step of first-order MAML over META_BATCH tasks."""
    import torch

    x, y = sample_tasks(gen, META_BATCH, 20)
    xs, ys, xq, yq = x[:, :10], y[:, :10], x[:, 10:], y[:, 10:]
    shared = list(net.parameters())
    # one copy of the weights per task, so that one backward pass gives every task's own support gradient
    stacked = [p.detach().unsqueeze(0).repeat(META_BATCH, *([1] * p.dim())).requires_grad_() for p in shared]
    grads = torch.autograd.grad(per_task_mse(stacked, xs, ys).sum(), stacked)
    fast = [(p - INNER_LR * g).detach().requires_grad_() for p, g in zip(stacked, grads, strict=True)]
    q_loss = per_task_mse(fast, xq, yq)
    q_grads = torch.autograd.grad(q_loss.mean(), fast)
    opt.zero_grad()
    for p, g in zip(shared, q_grads, strict=True):
        p.grad = g.sum(dim=0)  # the gradient of the mean query loss (first order: through the fast weights only)
    opt.step()
    return float(q_loss.mean())


def joint_step(net, opt, gen):
    x, y = sample_tasks(gen, META_BATCH, 20)
    loss = ((net(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "onnx_mlp")),
                   help="folder of sine_mlp.onnx (default: build/examples/onnx_mlp)")
    p.add_argument("--method", choices=("fomaml", "joint"), default="fomaml",
                   help="first-order MAML (default) or a joint fit of all the tasks")
    p.add_argument("--steps", type=int, default=10000, help="Adam steps (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and of the tasks (default 0)")
    args = p.parse_args(argv)

    try:
        import torch
        from torch import nn
    except ImportError:
        print("train_export_torch.py needs PyTorch (pip install torch onnx); make_onnx_numpy.py makes the same "
              "graph without it", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step = fomaml_step if args.method == "fomaml" else joint_step
    losses = [step(net, opt, gen) for _ in range(args.steps)]
    n = min(100, len(losses))
    print(f"trained {args.steps} Adam steps of {args.method}: training MSE first {n} steps "
          f"{sum(losses[:n]) / n:.3f}, last {n} steps {sum(losses[-n:]) / n:.3f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sine_mlp.onnx"
    net.eval()
    export = dict(opset_version=17, input_names=["x"], output_names=["y"],
                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    try:  # the TorchScript exporter (torch >= 2.5 has a second one, the default from 2.9, that writes other nodes)
        torch.onnx.export(net, (torch.zeros(1, 1),), str(path), dynamo=False, **export)
    except TypeError:  # torch < 2.5: no dynamo argument, the TorchScript exporter is the only one
        torch.onnx.export(net, (torch.zeros(1, 1),), str(path), **export)
    print(f"wrote {path}; next: metafab import {path} -o build/import/sine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
