"""Bit-exact fixed-point similarity read-out: the specification of the similarity engine.

Integer arithmetic on :mod:`metafab.reference.fixed` with the formats, rounding
points and approximations of one :class:`~metafab.reference.config.MatchConfig`.
The hardware (:mod:`metafab.hw.match_engine`) computes the same operations;
dot products and squared norms are sums of exact products (never rounded, never
wrapping), so the order in which the lanes add them does not change a bit.
Rounding happens only at the named points (``docs/fixed_point.md``,
"Similarity read-out"):

``unit`` (matching, on LOAD)
    ``u = round(s * y_s * 2**-(H + k_s))`` into ``unit_fmt``, where
    ``y_s * 2**-(H + k_s) * 2**F_e`` is :func:`rsqrt` of the exact squared
    norm ``|s|^2``: the support rows normalised to length 1.
``prototype`` (proto, on LOAD)
    ``p = round(C * c_k * 2**-H)`` into ``proto_fmt``: the exact class sum
    ``C`` times the constant ``c_k = round(2**H / k)`` of its row count ``k``.
    Then the exact ``|p|^2``.
``logit``
    matching: ``x_j = round(q.u_j * y_q * 2**-(H + k_q))``, the cosine, with
    :func:`rsqrt` of ``|q|^2``; proto: ``x_n = round(2 q.p_n - |p_n|^2)``,
    which is ``|q|^2 - |q - p_n|^2``: minus the squared distance up to a term
    common to all classes, so the softmax is the same. Into ``logit_fmt``.
``exp_index``
    ``z = x - x_ref`` (matching: ``x_ref = 1.0``, the largest cosine; proto:
    ``x_ref = max_n x_n``); table index ``i = round(-z * 2**(B - r))`` for a
    table of ``2**B`` entries over ``[-2**r, 0]``; ``e = table[i]``
    (``i < 0`` reads entry 0, ``i >= 2**B`` gives 0).
``prob``
    ``p_n = round(S_n * y_T * 2**-(H + L_T))`` into ``prob_fmt``, where
    ``S_n`` is the exact sum of the ``e`` of class ``n``, ``T`` the exact
    sum of all of them and ``y_T * 2**-(H + L_T) * 2**F_x`` is :func:`reciprocal` of ``T``.
``newton``
    the roundings inside the Newton-Raphson step of :func:`reciprocal` and :func:`rsqrt`.

The winning class is the argmax of the exact class sums ``S_n`` (the
numerators, before the reciprocal), ties to the lowest class index.
Arrays of codes are ``int64``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, Rounding

__all__ = [
    "quantize",
    "check_codes",
    "round_shift_var",
    "bit_length",
    "recip_table",
    "rsqrt_table",
    "count_constants",
    "reciprocal",
    "rsqrt",
    "exp_table",
    "exp_lookup",
    "Prepared",
    "normalise",
    "prototypes",
    "prepare",
    "Readout",
    "readout",
    "normalise_sums",
    "result_words",
]


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def quantize(x, cfg: MatchConfig, what: str = "embedding") -> np.ndarray:
    """Float embeddings to ``emb_fmt`` codes: round half to even, saturate."""
    return fx.from_float(np.asarray(x, dtype=np.float64), cfg.emb_fmt, Rounding.HALF_EVEN,
                         Overflow.SATURATE, what=what)


def check_codes(codes, cfg: MatchConfig, what: str, width: int | None = None) -> np.ndarray:
    """``codes`` as int64 ``(n, D)`` (or ``(D,)``), UserError if a code is outside ``emb_fmt``."""
    c = np.asarray(codes)
    width = cfg.dim if width is None else width
    if c.ndim not in (1, 2) or c.shape[-1] != width:
        raise UserError(f"{what} must have shape (n, {width}) or ({width},), got {c.shape}")
    return cfg.emb_fmt.check(c, what)


# ---------------------------------------------------------------------------
# integer helpers
# ---------------------------------------------------------------------------


def round_shift_var(v, shift, rounding: Rounding | str) -> np.ndarray:
    """``v * 2**-shift`` rounded to an integer, element by element (``0 <= shift <= 62``).

    The same as :func:`metafab.reference.fixed.round_shift` with a shift that
    may differ per element (a barrel shifter in hardware).
    """
    rounding = Rounding.parse(rounding)
    v = np.asarray(v, dtype=np.int64)
    s = np.broadcast_to(np.asarray(shift, dtype=np.int64), v.shape)
    if (s < 0).any() or (s > 62).any():
        raise UserError(f"round_shift_var needs shifts in 0..62, got {int(s.min())}..{int(s.max())}")
    q = v >> s
    if rounding is Rounding.TRUNCATE:
        return q
    if rounding is not Rounding.HALF_EVEN:
        raise UserError(f"round_shift_var supports 'truncate' and 'half_even', not {rounding.value!r}")
    r = v - (q << s)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    up = (s > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    return q + up.astype(np.int64)


def bit_length(x) -> np.ndarray:
    """``int.bit_length`` of each non-negative int64 (0 for 0)."""
    x = np.asarray(x, dtype=np.int64)
    if (x < 0).any():
        raise UserError("bit_length needs non-negative integers")
    est = np.zeros(x.shape, dtype=np.int64)
    pos = x > 0
    est[pos] = np.floor(np.log2(x[pos].astype(np.float64))).astype(np.int64) + 1
    # float rounding can be off by one near powers of two: correct exactly
    one = np.int64(1)
    too_big = pos & (est > 0) & ((one << np.maximum(est - 1, 0)) > x)
    est = np.where(too_big, est - 1, est)
    too_small = pos & (est < 63) & ((one << np.minimum(est, 62)) <= x)
    return np.where(too_small, est + 1, est)


def _div_half_even(num: int, den: int) -> int:
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
    return q


# ---------------------------------------------------------------------------
# reciprocal and inverse square root: normalise, table, Newton-Raphson
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _recip_table(bits: int, H: int) -> tuple[int, ...]:
    # entry i for index idx = 2**(bits-1) + i (mantissa bucket [idx, idx+1) * 2**(1-bits) in [1, 2)):
    # 1 / (bucket midpoint) = 2**bits / (2 idx + 1), in UQ1.H, rounded half to even
    lo = 1 << (bits - 1)
    return tuple(_div_half_even(1 << (H + bits), 2 * idx + 1) for idx in range(lo, 2 * lo))


@functools.lru_cache(maxsize=64)
def _rsqrt_table(bits: int, H: int) -> tuple[int, ...]:
    # index idx in [2**(bits-2), 2**bits): mantissa bucket [idx, idx+1) * 2**(2-bits) in [1, 4);
    # 1 / sqrt(midpoint) = sqrt(2**(bits-1) / (2 idx + 1)), in UQ1.H, rounded to nearest (never a tie)
    import math

    out = []
    for idx in range(1 << (bits - 2), 1 << bits):
        num, den = 1 << (2 * H + bits - 1), 2 * idx + 1
        n = math.isqrt(num // den)
        if 4 * num >= (2 * n + 1) ** 2 * den:
            n += 1
        out.append(n)
    return tuple(out)


def recip_table(cfg: MatchConfig) -> np.ndarray:
    """The reciprocal table: ``2**(B-1)`` entries in ``UQ1.H`` (index offset ``2**(B-1)``)."""
    return np.array(_recip_table(cfg.recip_table_bits, cfg.mant_bits), dtype=np.int64)


def rsqrt_table(cfg: MatchConfig) -> np.ndarray:
    """The inverse-square-root table: ``3 * 2**(B-2)`` entries in ``UQ1.H`` (index offset ``2**(B-2)``)."""
    return np.array(_rsqrt_table(cfg.rsqrt_table_bits, cfg.mant_bits), dtype=np.int64)


def count_constants(cfg: MatchConfig) -> np.ndarray:
    """``c_k = round(2**H / k)`` for ``k = 0 .. M`` (``c_0 = 0``), ``UQ1.H``: the prototype scale."""
    H = cfg.mant_bits
    return np.array([0] + [_div_half_even(1 << H, k) for k in range(1, cfg.n_support + 1)], dtype=np.int64)


def _mantissa(x: np.ndarray, exp: np.ndarray, H: int) -> np.ndarray:
    """``floor(x * 2**(H - exp))``: ``x`` with its leading bits moved to a fixed position."""
    left = np.maximum(H - exp, 0)
    right = np.maximum(exp - H, 0)
    return (x << left) >> right


def _saturate_mant(y: np.ndarray, H: int) -> np.ndarray:
    return np.clip(y, 0, (1 << (H + 1)) - 1)


def reciprocal(x, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """``1/x`` of positive integers as ``(y, L)`` with ``1/x ~= y * 2**-(H + L)``.

    ``L = bit_length(x) - 1``; the mantissa ``m = floor(x * 2**(H - L))`` lies
    in ``[2**H, 2**(H+1))``; its top ``B`` bits (``recip_table_bits``) index
    :func:`recip_table`, giving ``y0``. Method ``newton`` then takes one
    Newton-Raphson step ``y = y0 (2 - m y0)`` with the ``newton`` rounding
    after each product: ``t = round(m y0 2**-H)``, ``y = round(y0 (2**(H+1) - t) 2**-H)``.
    ``y`` is ``UQ1.H`` (saturated). ``x = 0`` gives ``(0, 0)``.
    """
    H, B = cfg.mant_bits, cfg.recip_table_bits
    rnd = cfg.newton_rounding
    x = np.asarray(x, dtype=np.int64)
    L = np.maximum(bit_length(x) - 1, 0)
    m = _mantissa(x, L, H)
    idx = (m >> (H + 1 - B)) - (1 << (B - 1))
    tab = recip_table(cfg)
    y = tab[np.clip(idx, 0, len(tab) - 1)]
    if cfg.recip_method == "newton":
        t = fx.round_shift(m * y, H, rnd)
        y = fx.round_shift(y * ((1 << (H + 1)) - t), H, rnd)
    y = _saturate_mant(y, H)
    zero = x == 0
    return np.where(zero, 0, y), np.where(zero, 0, L)


def rsqrt(x, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """``1/sqrt(x)`` of positive integers as ``(y, k)`` with ``1/sqrt(x) ~= y * 2**-(H + k)``.

    ``k = (bit_length(x) - 1) // 2``; the mantissa ``m = floor(x * 2**(H - 2k))``
    lies in ``[2**H, 2**(H+2))`` (``[1, 4)``); its top ``B`` bits
    (``rsqrt_table_bits``) index :func:`rsqrt_table`, giving ``y0``. Method
    ``newton`` then takes one step ``y = y0 (3 - m y0^2) / 2`` with the
    ``newton`` rounding after each product: ``a = round(y0^2 2**-H)``,
    ``b = round(m a 2**-H)``, ``y = round(y0 (3 * 2**H - b) 2**-(H+1))``.
    ``y`` is ``UQ1.H`` (saturated). ``x = 0`` gives ``(0, 0)``.
    """
    H, B = cfg.mant_bits, cfg.rsqrt_table_bits
    rnd = cfg.newton_rounding
    x = np.asarray(x, dtype=np.int64)
    k = np.maximum(bit_length(x) - 1, 0) >> 1
    m = _mantissa(x, 2 * k, H)
    idx = (m >> (H + 2 - B)) - (1 << (B - 2))
    tab = rsqrt_table(cfg)
    y = tab[np.clip(idx, 0, len(tab) - 1)]
    if cfg.rsqrt_method == "newton":
        a = fx.round_shift(y * y, H, rnd)
        b = fx.round_shift(m * a, H, rnd)
        y = fx.round_shift(y * (3 * (1 << H) - b), H + 1, rnd)
    y = _saturate_mant(y, H)
    zero = x == 0
    return np.where(zero, 0, y), np.where(zero, 0, k)


# ---------------------------------------------------------------------------
# the exp table
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _exp_table(bits: int, shift_bits: int, frac: int, max_code: int) -> tuple[int, ...]:
    i = np.arange(1 << bits, dtype=np.float64)
    vals = np.rint(np.exp(-np.ldexp(i, -shift_bits)) * float(1 << frac))
    return tuple(int(v) for v in np.clip(vals, 0, max_code))


def exp_table(cfg: MatchConfig) -> np.ndarray:
    """``round(exp(-i * 2**-(B - r)))`` in ``exp_fmt`` for ``i = 0 .. 2**B - 1`` (float64 exp, half even)."""
    return np.array(_exp_table(cfg.exp_table_bits, cfg.exp_shift_bits, cfg.exp_fmt.frac_bits,
                               cfg.exp_fmt.max_code), dtype=np.int64)


def exp_lookup(z, cfg: MatchConfig) -> np.ndarray:
    """``exp(z)`` for ``logit_fmt`` codes ``z <= 0`` through the table (see the module docstring)."""
    z = np.asarray(z, dtype=np.int64)
    idx = fx.round_shift(-z, cfg.logit_fmt.frac_bits - cfg.exp_shift_bits, cfg.exp_index_rounding)
    tab = exp_table(cfg)
    inside = idx < len(tab)
    return np.where(inside, tab[np.clip(idx, 0, len(tab) - 1)], 0)


# ---------------------------------------------------------------------------
# LOAD: normalise the support set or build the prototypes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The support set as the engine holds it after LOAD.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``(V, D)`` codes in ``cfg.store_fmt``: unit rows (matching) or prototypes (proto).
    norms : numpy.ndarray
        ``(V,)`` exact squared norms: ``|s|^2`` of the raw support rows (matching,
        fraction bits ``2 F_e``) or ``|p|^2`` of the prototypes (proto, ``2 F_p``).
    labels : numpy.ndarray
        ``(M,)`` the support labels.
    counts : numpy.ndarray
        ``(N,)`` support rows per class.
    scale_y, scale_e : numpy.ndarray
        ``(V,)``: matching: :func:`rsqrt` of each row's squared norm; proto: the
        constant ``c_k`` of each class and 0.
    """

    vectors: np.ndarray
    norms: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    scale_y: np.ndarray
    scale_e: np.ndarray


def _check_support(support, labels, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = check_codes(support, cfg, "support")
    if s.ndim != 2 or s.shape[0] != cfg.n_support:
        raise UserError(f"support must have shape ({cfg.n_support}, {cfg.dim}), got {s.shape}")
    y = np.asarray(labels)
    if y.shape != (cfg.n_support,) or y.dtype.kind not in "iu":
        raise UserError(f"support labels must be {cfg.n_support} integers, got {y!r:.80}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= cfg.n_way)
    if bad.any():
        raise UserError(f"support label {int(y[bad][0])} is outside 0..{cfg.n_way - 1}")
    counts = np.bincount(y, minlength=cfg.n_way)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise UserError(f"every class needs at least one support row; classes {missing} have none")
    return s, y, counts


def normalise(support, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matching: unit rows ``(M, D)`` in ``unit_fmt``, squared norms, ``rsqrt`` ``(y, k)`` of each row."""
    s = check_codes(support, cfg, "support")
    s = s.reshape(-1, cfg.dim)
    H, Fu = cfg.mant_bits, cfg.unit_fmt.frac_bits
    norms = np.einsum("md,md->m", s, s)
    y, k = rsqrt(norms, cfg)
    u = round_shift_var(s * y[:, None], (H + k - Fu)[:, None], cfg.unit_rounding)
    return fx.saturate(u, cfg.unit_fmt), norms, y, k


def prototypes(support, labels, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Proto: prototypes ``(N, D)`` in ``proto_fmt``, their squared norms, the class sums and counts."""
    s, y, counts = _check_support(support, labels, cfg)
    sums = np.zeros((cfg.n_way, cfg.dim), dtype=np.int64)
    np.add.at(sums, y, s)
    c = count_constants(cfg)[counts]
    shift = cfg.emb_fmt.frac_bits + cfg.mant_bits - cfg.proto_fmt.frac_bits
    p = fx.saturate(fx.round_shift(sums * c[:, None], shift, cfg.prototype_rounding), cfg.proto_fmt)
    return p, np.einsum("nd,nd->n", p, p), sums, counts


def prepare(support, labels, cfg: MatchConfig) -> Prepared:
    """What LOAD leaves in the engine (raises UserError where the engine answers BAD_VALUE).

    ``support``: ``(M, D)`` ``emb_fmt`` codes; ``labels``: ``(M,)`` classes in ``0..N-1``,
    every class at least once.
    """
    s, y, counts = _check_support(support, labels, cfg)
    if cfg.mode == "matching":
        u, norms, sy, se = normalise(s, cfg)
        return Prepared(u, norms, y, counts, sy, se)
    p, norms, _, counts = prototypes(s, y, cfg)
    return Prepared(p, norms, y, counts, count_constants(cfg)[counts], np.zeros(cfg.n_way, dtype=np.int64))


# ---------------------------------------------------------------------------
# RUN: one query (or a batch) against the prepared support set
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """Outputs and intermediates of :func:`readout` for ``Q`` queries (rows).

    ``probs`` ``(Q, N)`` in ``prob_fmt`` and ``pred`` ``(Q,)`` are what the
    engine sends; the rest is for tests and debugging: ``dots`` ``(Q, V)``
    exact dot products (fraction bits ``F_e + F_store``), ``logits`` and
    ``z`` ``(Q, V)`` in ``logit_fmt``, ``exps`` ``(Q, V)`` in ``exp_fmt``,
    ``sums`` ``(Q, N)`` and ``total`` ``(Q,)`` in ``sum_fmt``, ``recip``
    ``(y_T, L_T)`` and ``qscale`` ``(y_q, k_q)`` (matching) of each query.
    """

    probs: np.ndarray
    pred: np.ndarray
    dots: np.ndarray
    logits: np.ndarray
    z: np.ndarray
    exps: np.ndarray
    sums: np.ndarray
    total: np.ndarray
    recip: tuple[np.ndarray, np.ndarray]
    qscale: tuple[np.ndarray, np.ndarray] | None


def readout(query, prepared: Prepared, cfg: MatchConfig) -> Readout:
    """Class probabilities and the winning class of each query (codes ``(Q, D)`` or ``(D,)``)."""
    q = check_codes(query, cfg, "query")
    q = q.reshape(-1, cfg.dim)
    H = cfg.mant_bits
    Fe, Fl, Fs = cfg.emb_fmt.frac_bits, cfg.logit_fmt.frac_bits, cfg.store_fmt.frac_bits
    v = prepared.vectors
    dots = q @ v.T  # exact: int64 matrix products do not round
    qscale = None
    if cfg.mode == "matching":
        yq, kq = rsqrt(np.einsum("qd,qd->q", q, q), cfg)
        qscale = (yq, kq)
        x = round_shift_var(dots * yq[:, None], (Fs + H + kq - Fl)[:, None], cfg.logit_rounding)
        logits = fx.saturate(x, cfg.logit_fmt)
        z = logits - (1 << Fl)
    else:
        # in acc_fmt (fraction bits F_a >= F_l, checked by the config): exact, never wraps
        fa = cfg.acc_fmt.frac_bits
        x = (2 * dots << (fa - Fe - Fs)) - (prepared.norms[None, :] << (fa - 2 * Fs))
        logits = fx.saturate(fx.round_shift(x, fa - Fl, cfg.logit_rounding), cfg.logit_fmt)
        z = logits - logits.max(axis=1, keepdims=True)
    e = exp_lookup(z, cfg)
    if cfg.mode == "matching":
        onehot = np.eye(cfg.n_way, dtype=np.int64)[prepared.labels]  # (M, N)
        sums = e @ onehot
    else:
        sums = e
    probs, total, (yT, LT) = normalise_sums(sums, cfg)
    pred = np.argmax(sums, axis=1).astype(np.int64)  # first maximum: ties go to the lowest class
    return Readout(probs, pred, dots, logits, z, e, sums, total, (yT, LT), qscale)


def normalise_sums(sums, cfg) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The ``prob`` rounding point: ``p_n = round(S_n * y_T * 2**-(H + L_T))`` into ``prob_fmt``, row by row.

    ``sums`` ``(Q, N)`` are exact sums of exp-table entries (``exp_fmt`` fraction bits), ``T`` each row's
    exact total and ``(y_T, L_T)`` its :func:`reciprocal`. ``cfg`` is any config with the softmax fields
    (``prob_fmt``, ``prob_rounding``, ``mant_bits`` and the reciprocal's): the similarity engine's and the
    classifier's share this one implementation. Returns ``(probs, total, (y_T, L_T))``.
    """
    sums = np.asarray(sums, dtype=np.int64)
    total = sums.sum(axis=1)
    yT, LT = reciprocal(total, cfg)
    probs = round_shift_var(sums * yT[:, None], (cfg.mant_bits + LT - cfg.prob_fmt.frac_bits)[:, None],
                            cfg.prob_rounding)
    return fx.saturate(probs, cfg.prob_fmt), total, (yT, LT)


def result_words(probs, pred) -> list[int]:
    """The RUN response payload of one query: ``N`` probability codes, then the winning class."""
    return [int(v) for v in np.asarray(probs).reshape(-1)] + [int(pred)]
