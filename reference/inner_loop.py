"""The MAML inner loop (full-batch SGD on the support set) and its exact derivative, in float64.

Unchecked, task-stacked math behind :mod:`metafab.reference.maml`,
:mod:`metafab.reference.classify` and :mod:`metafab.reference.meta_train`; see
:mod:`metafab.reference.mlp` for the parameter layout and the optional leading
task axis.

With ``theta_0`` the initial parameters, ``L_s`` the support loss and ``L_q``
the query loss, the inner loop is ``theta_{s+1} = theta_s - lr * M grad L_s(theta_s)``
for ``s = 0 .. steps-1``, where ``M`` keeps the layers that adapt (all of them
for MAML; only the head for ANIL, Raghu et al. 2020) and zeroes the others.
The MAML objective is ``L_q(theta_steps)``. Its exact gradient with respect to
``theta_0`` is

    grad L_q(theta_steps)  premultiplied by  prod_s (I - lr * H_s(theta_s) M),

applied from the last step back to the first, each ``H_s v`` a Hessian-vector
product (:func:`metafab.reference.mlp.loss_hvp`). First-order MAML drops the
Hessian terms and returns ``grad L_q(theta_steps)``.

The loss is a :class:`Loss`: :data:`MSE` (regression; targets are arrays like
the output) or :data:`SOFTMAX_CE` (classification; targets are integer labels
and the output holds the logits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metafab.reference import mlp

__all__ = ["Loss", "MSE", "SOFTMAX_CE", "inner_step", "support_grad", "adapt", "meta_grad_and_loss",
           "task_mean", "adapted_layers"]

Params = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Loss:
    """A loss of the network's output: its value per task, its output gradient and that gradient's
    directional derivative ``r_output_grad(output, target, r_output)``."""

    name: str
    value: Callable
    output_grad: Callable
    r_output_grad: Callable


#: Mean squared error over samples and outputs.
MSE = Loss("mse", mlp.mse, mlp.mse_output_grad, mlp.mse_r_output_grad)
#: Mean over samples of the softmax cross-entropy of the logits against integer labels.
SOFTMAX_CE = Loss("softmax_ce", mlp.softmax_ce, mlp.softmax_ce_output_grad, mlp.softmax_ce_r_output_grad)


def adapted_layers(n_layers: int, adapt: tuple[int, ...] | None) -> tuple[bool, ...]:
    """Per layer, whether the inner loop updates it (``adapt``: the layer indices; None: every layer)."""
    return tuple(adapt is None or i in adapt for i in range(n_layers))


def inner_step(params: Params, grads: Params, lr: float, adapt: tuple[int, ...] | None = None) -> Params:
    """One SGD update ``theta - lr * grad`` of the layers in ``adapt`` (None: all)."""
    keep = adapted_layers(len(params), adapt)
    return [(w - lr * gw, b - lr * gb) if k else (w, b)
            for (w, b), (gw, gb), k in zip(params, grads, keep, strict=True)]


def support_grad(params: Params, x: np.ndarray, y: np.ndarray, loss: Loss = MSE) -> tuple[Params, mlp.Trace]:
    """Gradient of ``loss`` at ``params`` and the forward trace it came from."""
    trace = mlp.forward_trace(params, x)
    return mlp.backward(params, trace, loss.output_grad(trace.output, y)), trace


def adapt(params: Params, x: np.ndarray, y: np.ndarray, steps: int, lr: float, loss: Loss = MSE,
          layers: tuple[int, ...] | None = None) -> Params:
    """``steps`` full-batch SGD steps on ``loss`` of ``(x, y)``, updating the ``layers`` (None: all)."""
    for _ in range(steps):
        grads, _ = support_grad(params, x, y, loss)
        params = inner_step(params, grads, lr, layers)
    return params


def task_mean(grads: Params) -> Params:
    """Average task-stacked gradients over the leading task axis (no-op for plain ones)."""
    return [(gw.mean(axis=0), gb.mean(axis=0)) if gw.ndim == 3 else (gw, gb) for gw, gb in grads]


def _masked(vec: Params, keep: tuple[bool, ...]) -> Params:
    return [(w, b) if k else (np.zeros_like(w), np.zeros_like(b)) for (w, b), k in zip(vec, keep, strict=True)]


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
    loss: Loss = MSE,
    layers: tuple[int, ...] | None = None,
) -> tuple[Params, np.ndarray]:
    """MAML gradient of the query loss after adaptation, and that query loss.

    ``layers`` are the layers the inner loop adapts (None: all; the head only: ANIL).

    Returns
    -------
    grads : list of (W, b)
        Per-task gradients with respect to ``params`` (task-stacked if the data
        is); average them with :func:`task_mean` for the meta-batch gradient.
    query_loss : numpy.ndarray
        Query loss after adaptation, one value per task (0-D for one task).
    """
    thetas, traces = [], []
    theta = params
    for _ in range(steps):
        grads, trace = support_grad(theta, xs, ys, loss)
        thetas.append(theta)
        traces.append(trace)
        theta = inner_step(theta, grads, lr, layers)
    q_trace = mlp.forward_trace(theta, xq)
    query_loss = loss.value(q_trace.output, yq)
    vec = mlp.backward(theta, q_trace, loss.output_grad(q_trace.output, yq))
    if not first_order:
        keep = adapted_layers(len(params), layers)
        for s in range(steps - 1, -1, -1):
            tr = traces[s]
            hv = mlp.loss_hvp(thetas[s], tr, _masked(vec, keep), loss.output_grad(tr.output, ys),
                              lambda r, tr=tr: loss.r_output_grad(tr.output, ys, r))
            vec = inner_step(vec, hv, lr)  # (I - lr H_s M) vec
    return vec, query_loss
