"""The MAML inner loop (full-batch SGD on the support set) and its exact derivative, in float64.

Unchecked, task-stacked math behind :mod:`metafab.reference.maml` and
:mod:`metafab.reference.meta_train`; see :mod:`metafab.reference.mlp` for the
parameter layout and the optional leading task axis.

With ``theta_0`` the initial parameters, ``L_s`` the support loss and ``L_q``
the query loss, the inner loop is ``theta_{s+1} = theta_s - lr * grad L_s(theta_s)``
for ``s = 0 .. steps-1``, and the MAML objective is ``L_q(theta_steps)``. Its
exact gradient with respect to ``theta_0`` is

    grad L_q(theta_steps)  premultiplied by  prod_s (I - lr * H_s(theta_s)),

applied from the last step back to the first, each ``H_s v`` a Hessian-vector
product (:func:`metafab.reference.mlp.mse_hvp`). First-order MAML drops the
Hessian terms and returns ``grad L_q(theta_steps)``.
"""

from __future__ import annotations

import numpy as np

from metafab.reference import mlp

__all__ = ["inner_step", "support_grad", "adapt", "meta_grad_and_loss", "task_mean"]

Params = list[tuple[np.ndarray, np.ndarray]]


def inner_step(params: Params, grads: Params, lr: float) -> Params:
    """One SGD update ``theta - lr * grad``."""
    return [(w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, grads, strict=True)]


def support_grad(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[Params, mlp.Trace]:
    """Gradient of the MSE loss at ``params`` and the forward trace it came from."""
    trace = mlp.forward_trace(params, x)
    return mlp.backward(params, trace, mlp.mse_output_grad(trace.output, y)), trace


def adapt(params: Params, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> Params:
    """``steps`` full-batch SGD steps on the MSE loss of ``(x, y)``."""
    for _ in range(steps):
        grads, _ = support_grad(params, x, y)
        params = inner_step(params, grads, lr)
    return params


def task_mean(grads: Params) -> Params:
    """Average task-stacked gradients over the leading task axis (no-op for plain ones)."""
    return [(gw.mean(axis=0), gb.mean(axis=0)) if gw.ndim == 3 else (gw, gb) for gw, gb in grads]


def meta_grad_and_loss(
    params: Params,
    xs: np.ndarray,
    ys: np.ndarray,
    xq: np.ndarray,
    yq: np.ndarray,
    steps: int,
    lr: float,
    *,
    first_order: bool = False,
) -> tuple[Params, np.ndarray]:
    """MAML gradient of the query loss after adaptation, and that query loss.

    Returns
    -------
    grads : list of (W, b)
        Per-task gradients with respect to ``params`` (task-stacked if the data
        is); average them with :func:`task_mean` for the meta-batch gradient.
    query_loss : numpy.ndarray
        Query MSE after adaptation, one value per task (0-D for one task).
    """
    thetas, traces = [], []
    theta = params
    for _ in range(steps):
        grads, trace = support_grad(theta, xs, ys)
        thetas.append(theta)
        traces.append(trace)
        theta = inner_step(theta, grads, lr)
    q_trace = mlp.forward_trace(theta, xq)
    query_loss = mlp.mse(q_trace.output, yq)
    vec = mlp.backward(theta, q_trace, mlp.mse_output_grad(q_trace.output, yq))
    if not first_order:
        for s in range(steps - 1, -1, -1):
            hv = mlp.mse_hvp(thetas[s], traces[s], ys, vec)
            vec = inner_step(vec, hv, lr)  # (I - lr H_s) vec
    return vec, query_loss
