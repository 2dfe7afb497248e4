"""Bit-exact fixed-point MAML for classification: the specification of the classification engine.

Integer arithmetic with the formats and rounding points of one
:class:`~metafab.reference.config.MamlClsConfig`. The forward pass, the
backward pass and the update are the regression engine's
(:mod:`metafab.reference.maml_fixed`: the same functions, the same rounding
points); what differs is the output error, taken through a softmax:

``forward`` (last layer)
    the logits ``z = round(W a)`` in ``act_fmt`` (no ReLU).
``exp_index``
    ``e_n = exp(z_n - max_m z_m)`` through the exp table of
    :func:`metafab.reference.match_fixed.exp_lookup` (``2**exp_table_bits``
    entries over ``[-exp_range, 0]``, ``exp_fmt``).
``prob``
    ``p_n = round(e_n * y_T * 2**-(H + L_T))`` into ``prob_fmt``, ``T = sum_n e_n``
    exact and ``(y_T, L_T)`` its reciprocal
    (:func:`metafab.reference.match_fixed.normalise_sums`, ``newton``).
``error``
    ``delta = round(lr_eff (p - onehot(y)))`` into ``grad_fmt``, the product
    taken exactly through the accumulator, ``lr_eff = lr / k_support`` in
    ``lr_fmt``: the cross-entropy gradient of the mean over the support
    samples with the step size folded in.

Then ``backward`` and ``update`` as for regression, for the adapted layers only
(``adapt_layers = "head"``: ANIL, only the last layer is updated and no delta
goes below it). A query is answered with its probabilities ``p`` (the same
softmax) and its class: the argmax of its logit codes, ties to the lowest class.
Arrays of codes are ``int64``, activations feature-major as in ``maml_fixed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlClsConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, Xorshift32
from metafab.reference.match_fixed import exp_lookup, normalise_sums

__all__ = ["check_labels", "softmax", "forward", "inner_step", "adapt", "ClassifyResult", "run_task",
           "result_words"]


def check_labels(labels, cfg: MamlClsConfig, n: int, what: str = "labels") -> np.ndarray:
    """``n`` integer class labels in ``0..N-1`` as int64 (UserError naming the first bad one)."""
    raw = np.asarray(labels)
    if raw.dtype.kind not in "iu":
        raise UserError(f"{what} must be integer class labels, got dtype {raw.dtype}")
    if raw.shape != (n,):
        raise UserError(f"{what} must have shape ({n},), one per support sample, got {raw.shape}")
    bad = (raw < 0) | (raw >= cfg.n_way)
    if bad.any():
        raise UserError(f"{what} must lie in 0..{cfg.n_way - 1} (the {cfg.n_way} classes), got {raw[bad][0]}")
    return raw.astype(np.int64)


def softmax(z, cfg: MamlClsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of logit codes ``z`` ``(n, N)`` (``act_fmt``): ``(p in prob_fmt, e in exp_fmt)``."""
    z = np.asarray(z, dtype=np.int64)
    e = exp_lookup(z - z.max(axis=1, keepdims=True), cfg)
    probs, _, _ = normalise_sums(e, cfg)
    return probs, e


def forward(wq, x_codes, cfg: MamlClsConfig, lfsr: Xorshift32 | None = None):
    """Forward pass of ``n`` samples: ``(logits (n, N) in act_fmt, acts)`` as :func:`maml_fixed.forward`."""
    return mf.forward(wq, x_codes, cfg, lfsr)


def _error(logits: np.ndarray, labels: np.ndarray, cfg: MamlClsConfig, lfsr) -> np.ndarray:
    """``round(lr_eff (p - onehot))`` in ``grad_fmt``, feature-major ``(N, n)``."""
    p, _ = softmax(logits, cfg)
    onehot = (labels[:, None] == np.arange(cfg.n_way)[None, :]).astype(np.int64) << cfg.prob_fmt.frac_bits
    diff = (p - onehot).T  # exact, prob_fmt's fraction bits, one sign bit more
    diff_fmt = fx.QFormat(cfg.prob_fmt.int_bits + 1, cfg.prob_fmt.frac_bits)
    acc = fx.mac(np.zeros_like(diff), cfg.acc_fmt, diff, diff_fmt, np.int64(cfg.lr_code), cfg.lr_fmt)
    return fx.resize(acc, cfg.acc_fmt, cfg.grad_fmt, cfg.error_rounding, Overflow.SATURATE, lfsr)


def inner_step(wq, x_codes, labels, cfg: MamlClsConfig, lfsr: Xorshift32 | None = None):
    """One full-batch SGD step on the labelled support set; returns the new master codes.

    Forward (keeps the activations), the softmax error, backward through the
    layers above the lowest adapted one with the old weights, then the update
    ``W - round(sum_k delta a)`` of every adapted layer (the others are
    returned unchanged).
    """
    lfsr = mf._lfsr(cfg, lfsr)
    x = np.asarray(x_codes)
    labels = check_labels(labels, cfg, x.shape[0] if x.ndim == 2 else -1)
    logits, acts = forward(wq, x_codes, cfg, lfsr)
    return mf.backprop_update(wq, acts, _error(logits, labels, cfg, lfsr), cfg, lfsr, cfg.adapted)


def adapt(wq, x_codes, labels, cfg: MamlClsConfig, steps: int | None = None, lfsr: Xorshift32 | None = None):
    """``steps`` (default ``cfg.steps``) inner steps from ``wq``; returns the adapted codes."""
    return mf.adapt(wq, x_codes, labels, cfg, steps, lfsr, step=inner_step)


@dataclass
class ClassifyResult:
    """One task through the fixed-point model."""

    probs: np.ndarray  # (n_query, N) prob_fmt codes
    pred: np.ndarray  # (n_query,) classes
    logits: np.ndarray  # (n_query, N) act_fmt codes
    weights: list  # adapted master codes


def run_task(wq0, xs_codes, labels, xq_codes, cfg: MamlClsConfig) -> ClassifyResult:
    """What the engine does per task: adapt from ``wq0`` on the labelled support set, then classify the
    queries (probabilities and class)."""
    lfsr = mf._lfsr(cfg, None)
    wq = adapt(wq0, xs_codes, labels, cfg, lfsr=lfsr)
    logits, _ = forward(wq, xq_codes, cfg, lfsr)
    probs, _ = softmax(logits, cfg)
    return ClassifyResult(probs, np.argmax(logits, axis=1).astype(np.int64), logits, wq)


def result_words(result: ClassifyResult) -> list[int]:
    """The RUN response payload: per query its ``N`` probability codes, then its class."""
    out = []
    for p, c in zip(result.probs, result.pred, strict=True):
        out += [int(v) for v in p] + [int(c)]
    return out
