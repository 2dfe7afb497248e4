"""The embedding network of the similarity engine, meta-trained with the prototypical loss.

An MLP (default widths 64-128-64: 8x8 pixels in, D = 64 features out) with
ReLU on every layer *including the output*, so embeddings are non-negative;
parameters are a list of ``(W, b)`` float64 pairs as in
:mod:`metafab.reference.maml`. It is trained episodically (Snell et al. 2017):
each step draws one N-way K-shot episode, embeds support and queries, and
takes an Adam step on the prototypical loss
(:func:`metafab.reference.proto.loss_and_grads`), backpropagated by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metafab.reference import maml, mlp, proto
from metafab.reference.adam import Adam
from metafab.reference.arrays import as_count, as_float_array
from metafab.reference.errors import UserError

__all__ = ["DEFAULT_LAYERS", "init_params", "embed", "TrainResult", "train"]

DEFAULT_LAYERS = (64, 128, 64)

Params = list[tuple[np.ndarray, np.ndarray]]


def init_params(layers=DEFAULT_LAYERS, seed: int = 0) -> Params:
    """He-normal weights and zero biases for the given widths (input first, D last)."""
    return maml.init_params(layers, seed)


def _check(params, x) -> tuple[Params, np.ndarray]:
    params, shape = mlp.check_params(params)
    if shape.n_tasks is not None:
        raise UserError("params must be one embedding network, not task-stacked")
    x = as_float_array("x", x, ndims=(2,))
    if x.shape[1] != shape.layers[0]:
        raise UserError(
            f"x must have {shape.layers[0]} features per row (the network input width), "
            f"got shape {x.shape}"
        )
    return params, x


def embed(params, x) -> np.ndarray:
    """Embeddings ``relu(mlp(x))`` of the rows of ``x``: float64 ``(n, D)``, all ``>= 0``."""
    params, x = _check(params, x)
    return np.maximum(mlp.forward_trace(params, x).output, 0.0)


def _episode_step(params: Params, episode) -> tuple[float, float, Params]:
    """Prototypical loss, query accuracy and parameter gradient of one episode."""
    m = len(episode.support)
    x = np.concatenate([episode.support, episode.query])
    trace = mlp.forward_trace(params, x)
    z = trace.output
    e = np.maximum(z, 0.0)
    loss, d_s, d_q = proto.loss_and_grads(
        e[:m], episode.support_labels, e[m:], episode.query_labels, episode.n_way
    )
    _, pred = proto.readout(e[m:], proto.prototypes(e[:m], episode.support_labels, episode.n_way))
    accuracy = float(np.mean(pred == episode.query_labels))
    d_e = np.concatenate([d_s, d_q]) * (z > 0)
    return loss, accuracy, mlp.backward(params, trace, d_e)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    params : list of (W, b)
        Trained embedding parameters.
    loss, accuracy : numpy.ndarray
        float64 ``(iterations,)``: each episode's prototypical loss and query
        accuracy, before that step's update.
    """

    params: Params
    loss: np.ndarray
    accuracy: np.ndarray


def train(
    params,
    sampler: Callable,
    *,
    iterations: int,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float, float], None] | None = None,
    progress_every: int = 500,
) -> TrainResult:
    """Train the embedding with Adam on one episode per step.

    Parameters
    ----------
    params : list of (W, b)
        Starting parameters (:func:`init_params`); not modified.
    sampler : callable
        ``sampler(rng)`` returning an episode, e.g.
        :class:`metafab.reference.digits.EpisodeSampler` over the meta-train digits.
    iterations : int
        Adam steps (episodes), >= 0.
    lr : float
        Adam step size, > 0.
    seed : int
        Seed of the generator that draws the episodes.
    progress : callable, optional
        ``progress(iteration, mean_loss, mean_accuracy)`` every
        ``progress_every`` iterations and after the last one, averaged since
        the previous call.

    Returns
    -------
    TrainResult
    """
    params, shape = mlp.check_params(params)
    if shape.n_tasks is not None:
        raise UserError("params must be one embedding network, not task-stacked")
    iterations = as_count("iterations", iterations)
    seed = as_count("seed", seed)
    progress_every = as_count("progress_every", progress_every, minimum=1)
    if not callable(sampler):
        raise UserError(f"sampler must be callable as sampler(rng), got {sampler!r:.80}")
    optimiser = Adam(lr=lr)
    rng = np.random.default_rng(seed)
    losses = np.empty(iterations)
    accuracies = np.empty(iterations)
    since = 0
    for it in range(iterations):
        losses[it], accuracies[it], grads = _episode_step(params, sampler(rng))
        params = optimiser.step(params, grads)
        if progress is not None and ((it + 1) % progress_every == 0 or it + 1 == iterations):
            progress(
                it + 1,
                float(np.mean(losses[since : it + 1])),
                float(np.mean(accuracies[since : it + 1])),
            )
            since = it + 1
    return TrainResult(params=params, loss=losses, accuracy=accuracies)
