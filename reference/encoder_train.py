"""Episodic training of a few-shot encoder (:mod:`metafab.reference.encoder`) on the glyph set, in float64.

Every iteration draws one ``n_way``-way ``k_shot``-shot episode with ``n_query`` queries per class from the
glyph set's meta-train scripts, embeds support and queries, and takes one Adam step (Kingma and Ba 2015) on
the episode's loss, backpropagated through the encoder by hand:

``proto``
    the prototypical loss of Snell et al. 2017: the cross-entropy of the query labels under the softmax
    over minus the squared Euclidean distances to the class prototypes (the class means of the support
    embeddings), :func:`metafab.reference.proto.loss_and_grads`.
``matching``
    the matching loss of Vinyals et al. 2016 without full-context embeddings: the cross-entropy of the
    query labels under ``p_n = sum_{j : y_j = n} softmax_j(cos(q, s_j))``, the attention over the cosine
    similarities to every support embedding (:func:`matching_loss_and_grads`).

Snell et al. 2017 train with more classes per episode than they test with (60-way for 5-way Omniglot
tests); ``n_way`` may be larger than the 5 of the validation episodes here too.

Every ``progress_every`` iterations (and after the last) the encoder is evaluated on fixed validation
episodes (5-way, the training ``k_shot``, 15 queries per class, from the validation scripts) with the
read-out of its loss; with ``keep_best`` the parameters of the best such evaluation are returned (early
stopping on the validation split; the test split is never seen). Training is reproducible: the initial
weights (:func:`metafab.reference.encoder.init_params`) and the episode stream come from their seeds, so
the same call gives the same weights bit for bit on one machine and BLAS build (limit BLAS to one thread:
threadpoolctl ``threadpool_limits(1)``). ``max_seconds`` stops after the iteration that crosses it; the
result records how many iterations ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from metafab.reference import encoder as enc
from metafab.reference import glyphs, matching, proto
from metafab.reference.adam import Adam
from metafab.reference.arrays import as_count, as_labels, as_rate
from metafab.reference.errors import UserError
from metafab.reference.softmax import softmax
from metafab.reference.support_set import check_queries, check_support_set

__all__ = ["LOSSES", "matching_loss_and_grads", "episode_loss_and_grads", "validation_episodes", "evaluate",
           "TrainResult", "train"]

#: The episodic losses.
LOSSES = ("proto", "matching")


def _unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.sqrt(np.einsum("nd,nd->n", x, x))[:, None]
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0), norm


def _unit_backward(d_unit: np.ndarray, unit: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Gradient through ``u = x / |x|``: ``(d_u - u (u . d_u)) / |x|`` (0 for a zero vector)."""
    d = d_unit - unit * np.einsum("nd,nd->n", unit, d_unit)[:, None]
    return np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)


def matching_loss_and_grads(support, support_labels, query, query_labels, n_classes):
    """Matching-network loss of one episode (Vinyals et al. 2016, cosine attention, no full-context
    embeddings) and its gradient with respect to the embeddings.

    ``loss = -mean_i log p_{y_i}(q_i)`` with ``p_n(q) = sum_{j : y_j = n} a_j``, ``a = softmax_j cos(q, s_j)``
    (the read-out :func:`metafab.reference.matching.readout`). Returns ``(loss, d_support, d_query)``.
    """
    s, labels, n = check_support_set(support, support_labels, n_classes)
    q, _ = check_queries(query, s.shape[1])
    q_labels = as_labels("query_labels", query_labels, n_classes=n, length=q.shape[0])
    us, ns = _unit(s)
    uq, nq = _unit(q)
    att = softmax(uq @ us.T)  # (Q, M)
    probs = att @ np.eye(n)[labels]  # (Q, N)
    p_true = probs[np.arange(len(q)), q_labels]
    loss = -float(np.mean(np.log(p_true)))
    same = (labels[None, :] == q_labels[:, None]).astype(np.float64)  # (Q, M)
    g_att = -same / (len(q) * p_true[:, None])
    g_cos = att * (g_att - np.sum(att * g_att, axis=1, keepdims=True))
    d_query = _unit_backward(g_cos @ us, uq, nq)
    d_support = _unit_backward(g_cos.T @ uq, us, ns)
    return loss, d_support, d_query


def _images(x: np.ndarray, spec: enc.EncoderSpec) -> np.ndarray:
    return x.reshape((x.shape[0], *spec.input_shape))


def episode_loss_and_grads(params, spec, episode, loss: str = "proto"):
    """The loss, query accuracy (fraction) and parameter gradients of one episode.

    ``episode`` has ``support``, ``support_labels``, ``query``, ``query_labels`` (a glyph episode's flat
    pixel rows or ``(n, C, H, W)`` images).
    """
    if loss not in LOSSES:
        raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    spec = enc.EncoderSpec.parse(spec)
    m = len(episode.support)
    x = np.concatenate([np.asarray(episode.support, dtype=np.float64), np.asarray(episode.query, dtype=np.float64)])
    trace = enc.forward_trace(params, spec, x)
    e = trace.output
    n_way = int(np.max(episode.support_labels)) + 1
    fn = proto.loss_and_grads if loss == "proto" else matching_loss_and_grads
    value, d_s, d_q = fn(e[:m], episode.support_labels, e[m:], episode.query_labels, n_way)
    if loss == "proto":
        _, pred = proto.readout(e[m:], proto.prototypes(e[:m], episode.support_labels, n_way))
    else:
        _, pred = matching.readout(e[m:], e[:m], episode.support_labels, n_way)
    acc = float(np.mean(pred == episode.query_labels))
    return value, acc, enc.backward(params, spec, trace, np.concatenate([d_s, d_q]))


def validation_episodes(k_shot: int, n: int = 200, seed: int = 7, *, n_way: int = 5, n_query: int = 15,
                        split: str = "validation", data=None) -> list:
    """The fixed evaluation episodes: :func:`metafab.reference.glyphs.episodes` of ``split``."""
    sampler = glyphs.EpisodeSampler(split=split, n_way=n_way, k_shot=k_shot, n_query=n_query, data=data)
    return list(glyphs.episodes(sampler, as_count("n", n, minimum=1), seed))


def evaluate(params, spec, episodes, mode: str = "proto", chunk: int = 25) -> tuple[float, float]:
    """Mean query accuracy (percent) of the float64 encoder + read-out ``mode`` over ``episodes``, and its
    95 % half-width ``1.96 std / sqrt(n)``. Episodes are embedded ``chunk`` at a time."""
    if mode not in LOSSES:
        raise UserError(f"mode must be one of {', '.join(LOSSES)}, got {mode!r}")
    spec = enc.EncoderSpec.parse(spec)
    acc = []
    for start in range(0, len(episodes), chunk):
        part = episodes[start:start + chunk]
        x = np.concatenate([np.concatenate([ep.support, ep.query]) for ep in part])
        e = enc.forward(params, spec, x)
        row = 0
        for ep in part:
            m, q = len(ep.support), len(ep.query)
            s, qe = e[row:row + m], e[row + m:row + m + q]
            row += m + q
            n_way = int(np.max(ep.support_labels)) + 1
            if mode == "proto":
                _, pred = proto.readout(qe, proto.prototypes(s, ep.support_labels, n_way))
            else:
                _, pred = matching.readout(qe, s, ep.support_labels, n_way)
            acc.append(100.0 * np.mean(pred == ep.query_labels))
    acc = np.asarray(acc)
    half = 1.96 * acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else 0.0
    return float(acc.mean()), float(half)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    params : list of (W, b)
        The trained parameters (the best validation check's with ``keep_best``, else the last).
    loss, accuracy : numpy.ndarray
        ``(iterations,)``: each training episode's loss and query accuracy (fraction), before its step.
    history : list of (int, float, float)
        ``(iteration, mean training loss since the previous check, validation accuracy %)`` of every check.
    iterations : int
        Iterations run (fewer than asked when ``max_seconds`` stopped the run).
    stopped_by_time : bool
    best_iteration : int
        The iteration of the returned parameters.
    validation_accuracy, validation_ci95 : float
        Percent, of the returned parameters on the validation episodes.
    seconds : float
        Wall-clock time of the run, validation included.
    """

    params: list
    loss: np.ndarray
    accuracy: np.ndarray
    history: list = field(default_factory=list)
    iterations: int = 0
    stopped_by_time: bool = False
    best_iteration: int = 0
    validation_accuracy: float = float("nan")
    validation_ci95: float = float("nan")
    seconds: float = 0.0


def train(params, spec, *, loss: str = "proto", n_way: int = 20, k_shot: int = 1, n_query: int = 5,
          iterations: int, lr: float = 1e-3, seed: int = 0, max_seconds: float | None = None,
          progress: Callable[[int, float, float], None] | None = None, progress_every: int = 500,
          val_episodes: int = 200, val_seed: int = 7, keep_best: bool = True, data=None) -> TrainResult:
    """Train ``params`` (:func:`metafab.reference.encoder.init_params`) with Adam, one episode per step.

    Parameters
    ----------
    params : list of (W, b)
        Starting parameters; not modified.
    spec : str or EncoderSpec
        The encoder.
    loss : str
        ``"proto"`` or ``"matching"`` (module docstring); validation uses the same read-out.
    n_way, k_shot, n_query : int
        Training episodes: classes, support and query samples per class.
    iterations : int
        Adam steps (>= 0).
    lr : float
        Adam step size (> 0).
    seed : int
        Seed of the training episode stream (``default_rng(seed)``).
    max_seconds : float or None
        Stop after the iteration that reaches this wall-clock time.
    progress : callable, optional
        ``progress(iteration, mean_loss, validation_accuracy)`` at every check.
    progress_every : int
        Iterations between validation checks (there is always one after the last iteration).
    val_episodes, val_seed : int
        The 5-way ``k_shot``-shot validation episodes (15 queries per class).
    keep_best : bool
        Return the parameters of the best validation check (the first on ties) instead of the last.
    data : GlyphSet or None
        The glyph set (default: the shipped one).
    """
    spec = enc.EncoderSpec.parse(spec)
    params = enc.check_params(params, spec)
    if loss not in LOSSES:
        raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    iterations = as_count("iterations", iterations)
    progress_every = as_count("progress_every", progress_every, minimum=1)
    if max_seconds is not None:
        max_seconds = as_rate("max_seconds", max_seconds, positive=True)
    data = glyphs.load_shipped() if data is None else data
    if spec.input_shape != (1, data.size, data.size):
        raise UserError(f"encoder {spec} takes inputs {spec.input_shape}; glyphs are (1, {data.size}, {data.size})")
    sampler = glyphs.EpisodeSampler(split="train", n_way=n_way, k_shot=k_shot, n_query=n_query, data=data)
    val = validation_episodes(k_shot, val_episodes, val_seed, data=data)
    rng = np.random.default_rng(as_count("seed", seed))
    opt = Adam(lr=lr)
    losses, accs, history = [], [], []
    start = time.perf_counter()
    best = (-1.0, 0.0, 0, params)
    since = 0
    stopped = False
    it = 0
    while it < iterations:
        value, acc, grads = episode_loss_and_grads(params, spec, sampler.sample(rng), loss)
        params = opt.step(params, grads)
        losses.append(value)
        accs.append(acc)
        it += 1
        stopped = max_seconds is not None and time.perf_counter() - start >= max_seconds and it < iterations
        if it % progress_every == 0 or it == iterations or stopped:
            v, ci = evaluate(params, spec, val, loss)
            mean_loss = float(np.mean(losses[since:it]))
            since = it
            history.append((it, mean_loss, v))
            if v > best[0] or not keep_best:
                best = (v, ci, it, params)
            if progress is not None:
                progress(it, mean_loss, v)
        if stopped:
            break
    if not history:  # no iterations: evaluate the starting point
        v, ci = evaluate(params, spec, val, loss)
        best = (v, ci, 0, params)
    return TrainResult(params=best[3], loss=np.asarray(losses), accuracy=np.asarray(accs), history=history,
                       iterations=it, stopped_by_time=stopped, best_iteration=best[2], validation_accuracy=best[0],
                       validation_ci95=best[1], seconds=time.perf_counter() - start)
