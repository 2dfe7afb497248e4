"""Bit-exact fixed-point MAML inner loop: the specification of the MAML engine.

Everything is integer arithmetic on :mod:`metafab.reference.fixed` with the
formats and rounding points of one :class:`~metafab.reference.config.MamlConfig`.
The hardware computes the same operations; because every product is added
exactly into a wrapping accumulator, the order in which the hardware's lanes
accumulate does not change a bit. Rounding happens only at the named points:

``forward``
    ``z = round(sum_j W[i,j] a[j])`` into ``act_fmt`` (saturating); hidden
    layers then apply ReLU. Bias = last column of ``W``, input 1.0.
``error``
    ``delta_out = round(lr_eff * (y_hat - y))`` (the product taken through the
    accumulator) into ``grad_fmt``: the MSE
    gradient ``2 (y_hat - y) / (K n_out)`` and the learning rate folded into
    one constant ``lr_eff`` (``lr_fmt``), applied once per output.
``backward``
    ``delta = round(sum_i W[i,j] delta_up[i])`` into ``grad_fmt``, times the
    ReLU derivative ``[a > 0]`` of the stored activation (old weights).
``update``
    ``W' = saturate(W - round(sum_k delta[k,i] a[k,j]))`` in ``master_fmt``:
    the gradient of the whole support batch, summed exactly, rounded once.
``weight_read``
    The multiplier operand ``round(W)`` from ``master_fmt`` to ``weight_fmt``
    (an identity when the two formats are equal, the default).

Arrays of codes are ``int64``; activations are stored feature-major,
``A[feature, sample]``, with the constant-1 row last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, Rounding, Xorshift32

__all__ = [
    "quantize_params",
    "dequantize_params",
    "quantize_inputs",
    "forward",
    "inner_step",
    "backprop_update",
    "adapt",
    "run_task",
    "TaskResult",
]


def _lfsr(cfg: MamlConfig, lfsr: Xorshift32 | None) -> Xorshift32 | None:
    if lfsr is not None:
        return lfsr
    points = (cfg.forward_rounding, cfg.error_rounding, cfg.backward_rounding, cfg.update_rounding,
              cfg.weight_read_rounding)
    return Xorshift32(cfg.seed) if Rounding.STOCHASTIC in points else None


def quantize_params(params, cfg: MamlConfig, overflow: Overflow | str = Overflow.SATURATE) -> list:
    """Float ``[(W, b), ...]`` to augmented master-format codes ``[W | b]``, rounding half to even.

    ``overflow="error"`` rejects weights outside ``master_fmt`` instead of
    saturating them.
    """
    shapes = cfg.weight_shapes
    if len(params) != len(shapes):
        raise UserError(f"params has {len(params)} layers; config {cfg.layers} needs {len(shapes)}")
    out = []
    for li, ((W, b), (o, i1)) in enumerate(zip(params, shapes, strict=True)):
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.shape != (o, i1 - 1) or b.shape != (o,):
            raise UserError(
                f"layer {li}: weights {W.shape} and bias {b.shape} do not match config "
                f"{cfg.layers} (want {(o, i1 - 1)} and {(o,)})"
            )
        aug = np.concatenate([W, b[:, None]], axis=1)
        out.append(fx.from_float(aug, cfg.master_fmt, Rounding.HALF_EVEN, overflow,
                                 what=f"layer {li} weights"))
    return out


def dequantize_params(wq, cfg: MamlConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Augmented master codes back to float ``[(W, b), ...]`` (exact)."""
    out = []
    for w in wq:
        f = fx.to_float(w, cfg.master_fmt)
        out.append((f[:, :-1].copy(), f[:, -1].copy()))
    return out


def quantize_inputs(x, cfg: MamlConfig, what: str = "input") -> np.ndarray:
    """Samples (float, shape ``(n, features)``) to ``act_fmt`` codes, half to even, saturating."""
    return fx.from_float(np.asarray(x, dtype=np.float64), cfg.act_fmt, Rounding.HALF_EVEN,
                         Overflow.SATURATE, what=what)


def _operand(w: np.ndarray, cfg: MamlConfig, lfsr) -> np.ndarray:
    if cfg.master_fmt == cfg.weight_fmt:
        return w
    return fx.resize(w, cfg.master_fmt, cfg.weight_fmt, cfg.weight_read_rounding, Overflow.SATURATE, lfsr)


def _augment(a: np.ndarray, cfg: MamlConfig) -> np.ndarray:
    one = np.full((1, a.shape[1]), 1 << cfg.act_fmt.frac_bits, dtype=np.int64)
    return np.concatenate([a, one], axis=0)


def _check_codes(x, cfg: MamlConfig, width: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != width:
        raise UserError(f"{what} must have shape (n, {width}), got {x.shape}")
    return cfg.act_fmt.check(x, what)


def forward(wq, x_codes, cfg: MamlConfig, lfsr: Xorshift32 | None = None):
    """Forward pass of ``n`` samples.

    Returns ``(y, acts)``: ``y`` of shape ``(n, n_out)`` in ``act_fmt`` and
    ``acts[l]`` the augmented input of weight layer ``l``, shape
    ``(layers[l] + 1, n)`` (feature-major, constant-1 row last).
    """
    lfsr = _lfsr(cfg, lfsr)
    x = _check_codes(x_codes, cfg, cfg.n_in, "inputs")
    a = _augment(x.T, cfg)
    acts = []
    for li, w in enumerate(wq):
        acts.append(a)
        z = fx.matmul(_operand(w, cfg, lfsr), cfg.weight_fmt, a, cfg.act_fmt, cfg.acc_fmt)
        z = fx.resize(z, cfg.acc_fmt, cfg.act_fmt, cfg.forward_rounding, Overflow.SATURATE, lfsr)
        if li < len(wq) - 1:
            a = _augment(np.maximum(z, 0), cfg)
        else:
            a = z
    return a.T.copy(), acts


def inner_step(wq, x_codes, y_codes, cfg: MamlConfig, lfsr: Xorshift32 | None = None):
    """One full-batch SGD step on the support set; returns the new master codes.

    Forward (stores activations), output error scaled by ``lr_eff``, backward
    through the hidden layers with the old weights, then every layer's
    update ``W - round(sum_k delta a)``.
    """
    lfsr = _lfsr(cfg, lfsr)
    y_codes = _check_codes(y_codes, cfg, cfg.n_out, "targets")
    y_hat, acts = forward(wq, x_codes, cfg, lfsr)
    if y_hat.shape != y_codes.shape:
        raise UserError(f"targets {y_codes.shape} do not match inputs' outputs {y_hat.shape}")
    e, fe = fx.sub(y_hat.T, cfg.act_fmt, y_codes.T, cfg.act_fmt)
    p = fx.mac(np.zeros_like(e), cfg.acc_fmt, e, fe, np.int64(cfg.lr_code), cfg.lr_fmt)
    delta = fx.resize(p, cfg.acc_fmt, cfg.grad_fmt, cfg.error_rounding, Overflow.SATURATE, lfsr)
    return backprop_update(wq, acts, delta, cfg, lfsr)


def backprop_update(wq, acts, delta_top, cfg: MamlConfig, lfsr: Xorshift32 | None = None,
                    adapted: tuple[int, ...] | None = None) -> list:
    """The ``backward`` and ``update`` rounding points of one step, from the top layer's delta.

    ``delta_top`` is the output error in ``grad_fmt`` (feature-major ``(n_out, n)``), ``acts`` the
    forward pass's augmented layer inputs. Deltas go down with the old weights as far as the lowest
    layer in ``adapted`` (None: every layer), and each adapted layer is updated
    ``W - round(sum_k delta a)``; the others are returned unchanged. Shared by regression and
    classification (:mod:`metafab.reference.maml_cls_fixed`).
    """
    adapted = tuple(range(len(wq))) if adapted is None else adapted
    deltas = [None] * len(wq)
    deltas[-1] = delta_top  # delta of layer l's output, shape (out, n)
    for li in range(len(wq) - 1, min(adapted), -1):
        w = _operand(wq[li], cfg, lfsr)[:, :-1]  # no bias column
        back = fx.matmul(w.T, cfg.weight_fmt, deltas[li], cfg.grad_fmt, cfg.acc_fmt)
        back = fx.resize(back, cfg.acc_fmt, cfg.grad_fmt, cfg.backward_rounding, Overflow.SATURATE, lfsr)
        mask = acts[li][:-1] > 0
        deltas[li - 1] = np.where(mask, back, 0)
    new = []
    shift = cfg.acc_fmt.frac_bits - cfg.master_fmt.frac_bits
    for li, w in enumerate(wq):
        if li not in adapted:
            new.append(w)
            continue
        g = fx.matmul(deltas[li], cfg.grad_fmt, acts[li].T, cfg.act_fmt, cfg.acc_fmt)
        upd = fx.round_shift(g, shift, cfg.update_rounding, lfsr)
        new.append(fx.saturate(w - upd, cfg.master_fmt))
    return new


def adapt(wq, x_codes, y_codes, cfg: MamlConfig, steps: int | None = None,
          lfsr: Xorshift32 | None = None, step=None):
    """``steps`` (default ``cfg.steps``) inner steps from ``wq``; returns the adapted codes.

    ``step`` is the inner step (default :func:`inner_step`; the classifier passes its own).
    """
    steps = cfg.steps if steps is None else steps
    if steps < 0:
        raise UserError(f"steps must be >= 0, got {steps}")
    lfsr = _lfsr(cfg, lfsr)
    step = inner_step if step is None else step
    for _ in range(steps):
        wq = step(wq, x_codes, y_codes, cfg, lfsr)
    return wq


@dataclass
class TaskResult:
    """One task through the fixed-point model: query outputs and the adapted weights."""

    y_query: np.ndarray  # (n_query, n_out) act_fmt codes
    weights: list  # adapted master codes


def run_task(wq0, xs_codes, ys_codes, xq_codes, cfg: MamlConfig) -> TaskResult:
    """What the engine does per task: adapt from ``wq0`` on the support set, then predict the queries."""
    lfsr = _lfsr(cfg, None)
    wq = adapt(wq0, xs_codes, ys_codes, cfg, lfsr=lfsr)
    y, _ = forward(wq, xq_codes, cfg, lfsr)
    return TaskResult(y, wq)
