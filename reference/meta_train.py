"""Meta-training of an MLP initialisation: MAML, first-order MAML, Reptile and a joint baseline.

Each iteration draws a meta-batch of tasks from a sampler, computes an outer
gradient for the shared initial parameters, and applies one Adam step
(Finn et al. 2017 used Adam with meta step size 1e-3, inner step size 0.01,
meta-batch 25 and K = 10 for sinusoids). Outer gradients, per method:

``maml``
    Exact second-order gradient of the mean query loss after ``inner_steps``
    SGD steps on the support set (:func:`metafab.reference.maml.meta_grad`).
``fomaml``
    First-order MAML: the query-loss gradient at the adapted parameters.
``reptile``
    Nichol, Achiam and Schulman 2018 ("On First-Order Meta-Learning
    Algorithms"): ``(theta - mean_tasks(phi)) / (inner_steps * inner_lr)``
    with ``phi`` the parameters after ``inner_steps`` SGD steps on the
    support set; the division puts it on the scale of a gradient (with one
    step it equals the mean support gradient) before it goes to Adam.
``joint``
    The "pretrained" baseline of Finn et al.: no adaptation, the gradient of
    the MSE over all support and query points of the meta-batch, i.e. one
    network regressed on all tasks jointly.

The loss is the sampler's (:class:`metafab.reference.inner_loop.Loss`: MSE for
regression, softmax cross-entropy for classification, where the targets are
labels), and ``layers`` restricts the inner loop to some layers (ANIL: the
head only; the outer gradient still reaches every layer).

Reproducibility: the tasks come from ``numpy.random.default_rng(seed)`` and
all arithmetic is deterministic, so the same inputs give bit-identical
parameters on the same numpy build, CPU family and BLAS thread count (OpenBLAS
partitions large matrix products by thread count, which moves the last bits;
``metafab train`` pins BLAS to one thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metafab.reference import inner_loop, mlp
from metafab.reference.adam import Adam
from metafab.reference.arrays import as_count, as_rate
from metafab.reference.errors import UserError

__all__ = ["METHODS", "MetaTrainResult", "meta_train", "outer_grad"]

METHODS = ("maml", "fomaml", "reptile", "joint")

Params = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MetaTrainResult:
    """Outcome of :func:`meta_train`.

    Attributes
    ----------
    params : list of (W, b)
        The meta-trained initial parameters (float64).
    loss : numpy.ndarray
        float64 ``(iterations,)``: the meta-batch's training loss at each
        iteration, measured before that iteration's update (mean query MSE
        after adaptation for ``maml``/``fomaml``/``reptile``, the joint MSE for
        ``joint``).
    """

    params: Params
    loss: np.ndarray


def outer_grad(
    params: Params, tasks, *, method: str, inner_steps: int, inner_lr: float,
    loss: inner_loop.Loss = inner_loop.MSE, layers: tuple[int, ...] | None = None,
) -> tuple[Params, float]:
    """Outer gradient of one meta-batch for ``method``, and its training loss.

    ``tasks`` has ``x_support``, ``y_support``, ``x_query``, ``y_query`` with a
    leading task axis (a :class:`metafab.reference.sinusoid.TaskBatch`, or a
    :class:`metafab.reference.glyphs.EpisodeBatch` whose targets are labels);
    ``loss`` and ``layers`` as in :func:`metafab.reference.inner_loop.meta_grad_and_loss`.
    """
    xs, ys, xq, yq = tasks.x_support, tasks.y_support, tasks.x_query, tasks.y_query
    if method in ("maml", "fomaml"):
        grads, q_loss = inner_loop.meta_grad_and_loss(
            params, xs, ys, xq, yq, inner_steps, inner_lr, first_order=method == "fomaml", loss=loss,
            layers=layers,
        )
        return inner_loop.task_mean(grads), float(np.mean(q_loss))
    if method == "reptile":
        phi_tasks = inner_loop.adapt(params, xs, ys, inner_steps, inner_lr, loss, layers)
        q_loss = loss.value(mlp.forward_trace(phi_tasks, xq).output, yq)
        phi = inner_loop.task_mean(phi_tasks)
        scale = 1.0 / (inner_steps * inner_lr)
        grads = [
            (scale * (w - pw), scale * (b - pb))
            for (w, b), (pw, pb) in zip(params, phi, strict=True)
        ]
        return grads, float(np.mean(q_loss))
    if method == "joint":
        x = np.concatenate([xs, xq], axis=-2)
        y = np.concatenate([ys, yq], axis=-2 if ys.ndim == xs.ndim else -1)
        grads, trace = inner_loop.support_grad(params, x, y, loss)
        return inner_loop.task_mean(grads), float(np.mean(loss.value(trace.output, y)))
    raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def meta_train(
    params,
    sampler: Callable,
    *,
    method: str = "maml",
    iterations: int,
    meta_batch: int = 25,
    inner_steps: int = 1,
    inner_lr: float = 0.01,
    meta_lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    progress_every: int = 1000,
    loss: inner_loop.Loss = inner_loop.MSE,
    layers: tuple[int, ...] | None = None,
) -> MetaTrainResult:
    """Meta-train the initial parameters ``params`` on tasks from ``sampler``.

    Parameters
    ----------
    params : list of (W, b)
        Starting parameters (e.g. :func:`metafab.reference.maml.init_params`); not modified.
    sampler : callable
        ``sampler(rng, n_tasks)`` returning a task batch with a leading task
        axis, e.g. :class:`metafab.reference.sinusoid.SinusoidTasks`.
    method : {"maml", "fomaml", "reptile", "joint"}
        Outer gradient (see the module docstring).
    iterations : int
        Outer (Adam) steps, >= 0.
    meta_batch : int
        Tasks per outer step, >= 1.
    inner_steps : int
        Inner SGD steps (>= 0; >= 1 for ``reptile``).
    inner_lr : float
        Inner SGD step size (finite, >= 0; > 0 for ``reptile``).
    meta_lr : float
        Adam step size (> 0).
    seed : int
        Seed of the generator that draws the tasks.
    progress : callable, optional
        Called as ``progress(iteration, mean_loss)`` every ``progress_every``
        iterations and after the last one; ``mean_loss`` averages the training
        loss since the previous call.
    progress_every : int
        Iterations between progress calls, >= 1.
    loss : inner_loop.Loss
        The task loss (``inner_loop.SOFTMAX_CE`` for classification samplers).
    layers : tuple of int or None
        The layers the inner loop adapts (None: all; the head only: ANIL).

    Returns
    -------
    MetaTrainResult
    """
    params, shape = mlp.check_params(params)
    if shape.n_tasks is not None:
        raise UserError("params must be shared initial parameters, not task-stacked")
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    iterations = as_count("iterations", iterations)
    meta_batch = as_count("meta_batch", meta_batch, minimum=1)
    inner_steps = as_count("inner_steps", inner_steps, minimum=1 if method == "reptile" else 0)
    inner_lr = as_rate("inner_lr", inner_lr, positive=method == "reptile")
    seed = as_count("seed", seed)
    progress_every = as_count("progress_every", progress_every, minimum=1)
    if not callable(sampler):
        raise UserError(f"sampler must be callable as sampler(rng, n_tasks), got {sampler!r:.80}")
    optimiser = Adam(lr=meta_lr)
    rng = np.random.default_rng(seed)
    history = np.empty(iterations)
    since = 0
    for it in range(iterations):
        tasks = sampler(rng, meta_batch)
        grads, history[it] = outer_grad(
            params, tasks, method=method, inner_steps=inner_steps, inner_lr=inner_lr, loss=loss, layers=layers
        )
        params = optimiser.step(params, grads)
        if progress is not None and ((it + 1) % progress_every == 0 or it + 1 == iterations):
            progress(it + 1, float(np.mean(history[since : it + 1])))
            since = it + 1
    return MetaTrainResult(params=params, loss=history)
