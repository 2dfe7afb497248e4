"""Design configurations: the one source of truth for widths, formats and sizes.

Each engine is described by one frozen dataclass. ``reference/`` computes with
it, ``hw/`` generates hardware from it and ``gen/`` exports and reports it; no
module re-derives a width or a format on its own. Every config validates on
construction and raises :class:`~metafab.reference.errors.UserError` naming
the bad value, and round-trips through a plain dict (:meth:`to_dict` /
:meth:`from_dict`) for manifests, TOML files and cache keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields

from metafab.reference.errors import UserError
from metafab.reference.fixed import (
    MAX_OPERAND_WIDTH,
    Overflow,
    QFormat,
    Rounding,
    product_format,
)
from metafab.reference.protocol import WORD_BITS

__all__ = ["MacLaneConfig", "MamlConfig", "MamlClsConfig", "MatchConfig", "config_digest", "ADAPT_LAYERS"]


def _fmt(v) -> QFormat:
    return QFormat.parse(v)


def config_digest(cfg) -> str:
    """A short stable hash of a config (for build caches and manifests)."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _ConfigBase:
    """Dict round-trip shared by the configs (formats as ``"Q4.12"`` strings)."""

    def to_dict(self) -> dict:
        """A plain, JSON-serialisable dict (formats as strings); :meth:`from_dict` inverts it."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, QFormat):
                v = str(v)
            elif isinstance(v, (Rounding, Overflow)):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    def replace(self, **changes):
        """A copy with some fields changed (validated like a new config)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict as :meth:`to_dict` gives (unknown keys are a UserError)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(
                f"unknown {cls.__name__} key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        return cls(**d)


@dataclass(frozen=True)
class MacLaneConfig(_ConfigBase):
    """One multiply-accumulate lane: dot products of ``a`` and ``b`` vectors.

    Parameters
    ----------
    a_fmt, b_fmt : QFormat
        Operand formats (each at most 31 bits; 16/18 bits map to one DSP).
    acc_fmt : QFormat
        Accumulator format; products are added exactly (its fraction bits
        must be at least ``a.frac + b.frac``) and the sum wraps at its width.
    out_fmt : QFormat
        Result format; the accumulator is resized to it at the end of each
        dot product with ``rounding`` and ``overflow``.
    rounding, overflow : str
        See :class:`~metafab.reference.fixed.Rounding` / ``Overflow``.
    seed : int
        Seed of the lane's xorshift32 generator (stochastic rounding only).
    """

    a_fmt: QFormat = QFormat(4, 12)
    b_fmt: QFormat = QFormat(2, 14)
    acc_fmt: QFormat = QFormat(14, 26)
    out_fmt: QFormat = QFormat(6, 10)
    rounding: Rounding = Rounding.HALF_EVEN
    overflow: Overflow = Overflow.SATURATE
    seed: int = 0x2545F491

    def __post_init__(self):
        for name in ("a_fmt", "b_fmt", "acc_fmt", "out_fmt"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        object.__setattr__(self, "rounding", Rounding.parse(self.rounding))
        object.__setattr__(self, "overflow", Overflow.parse(self.overflow))
        if self.overflow is Overflow.ERROR:
            raise UserError("MacLaneConfig overflow must be 'saturate' or 'wrap' (hardware cannot raise)")
        for name in ("a_fmt", "b_fmt"):
            f = getattr(self, name)
            if f.width > MAX_OPERAND_WIDTH:
                raise UserError(f"{name} {f} is {f.width} bits; operands are at most {MAX_OPERAND_WIDTH}")
        prod = product_format(self.a_fmt, self.b_fmt)
        if self.acc_fmt.frac_bits < prod.frac_bits:
            raise UserError(
                f"acc_fmt {self.acc_fmt} has {self.acc_fmt.frac_bits} fraction bits; the exact "
                f"product {prod} needs at least {prod.frac_bits}"
            )
        if self.acc_fmt.width < prod.width:
            raise UserError(
                f"acc_fmt {self.acc_fmt} ({self.acc_fmt.width} bits) is narrower than one "
                f"product {prod} ({prod.width} bits)"
            )
        if not self.acc_fmt.signed:
            raise UserError("acc_fmt must be signed")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
            0 < self.seed < 2**32
        ):
            raise UserError(f"seed must be an integer in 1..2**32-1, got {self.seed!r}")

    @property
    def product_fmt(self) -> QFormat:
        """The exact product format of ``a_fmt * b_fmt``."""
        return product_format(self.a_fmt, self.b_fmt)


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise UserError(f"{name} must be {rng}, got {value}")
    return value


@dataclass(frozen=True)
class MamlConfig(_ConfigBase):
    """The on-chip MAML adaptation engine and its bit-exact fixed-point model.

    The network is an MLP with ReLU hidden layers and a linear output; each
    weight layer is stored *augmented*, ``[W | b]`` of shape ``(out, in+1)``,
    and its input with a constant 1.0 appended, so a bias is one more
    multiply-accumulate. Per task the engine runs ``steps`` full-batch SGD
    steps on ``k_support`` samples with the mean-squared-error loss, then the
    ``n_query`` queries through the adapted net.

    Parameters
    ----------
    layers : tuple of int
        Layer widths, input first (e.g. ``(1, 40, 40, 1)``).
    k_support, n_query, steps : int
        Support samples per task, query samples per task, inner SGD steps.
    lr : float
        Inner learning rate on the mean-squared loss (Finn et al. 2017 use 0.01).
    lanes : int
        Parallel MAC lanes ``P`` in the hardware: a power of two, 1..256
        (the engine's tile shapes and memory words follow from it; see docs/maml_engine.md).
    act_fmt : QFormat
        Inputs, targets, activations and outputs. Needs 1.0 (the bias input).
    weight_fmt : QFormat
        Weights as multiplier operands.
    master_fmt : QFormat
        Stored (updated) weights; the operand is read from it with
        ``weight_read_rounding``. Equal to ``weight_fmt`` by default.
    grad_fmt : QFormat
        Back-propagated deltas, already scaled by the learning rate.
    lr_fmt : QFormat
        The constant ``lr_eff = 2 * lr / (k_support * n_out)`` (unsigned).
    acc_fmt : QFormat
        The accumulator: every product is added exactly; wraps at its width.
    forward_rounding, error_rounding, backward_rounding, update_rounding, weight_read_rounding : str
        Rounding at each named point (see ``docs/fixed_point.md``).
    seed : int
        xorshift32 seed, used only by stochastic rounding (reference only).
    """

    layers: tuple = (1, 40, 40, 1)
    k_support: int = 10
    n_query: int = 10
    steps: int = 1
    lr: float = 0.01
    lanes: int = 16
    # the 16-bit member of the precision study's format family (docs/fixed_point.md)
    act_fmt: QFormat = QFormat(5, 11)
    weight_fmt: QFormat = QFormat(4, 12)
    master_fmt: QFormat | None = None
    grad_fmt: QFormat = QFormat(0, 16)
    lr_fmt: QFormat = QFormat(0, 15, signed=False)
    acc_fmt: QFormat = QFormat(16, 28)
    forward_rounding: Rounding = Rounding.HALF_EVEN
    error_rounding: Rounding = Rounding.HALF_EVEN
    backward_rounding: Rounding = Rounding.HALF_EVEN
    update_rounding: Rounding = Rounding.HALF_EVEN
    weight_read_rounding: Rounding = Rounding.TRUNCATE
    seed: int = 0x2545F491

    def __post_init__(self):
        layers = self.layers
        if isinstance(layers, str):
            try:
                layers = tuple(int(v) for v in layers.split("-"))
            except ValueError:
                raise UserError(f"layers {self.layers!r} must look like '1-40-40-1'") from None
        if not isinstance(layers, (tuple, list)) or len(layers) < 2:
            raise UserError(f"layers must list at least an input and an output width, got {layers!r}")
        layers = tuple(_check_int(f"layers[{i}]", v, 1, 4096) for i, v in enumerate(layers))
        object.__setattr__(self, "layers", layers)
        _check_int("k_support", self.k_support, 1, 4096)
        _check_int("n_query", self.n_query, 1, 4096)
        _check_int("steps", self.steps, 0, 1000)
        _check_int("lanes", self.lanes, 1, 256)
        if self.lanes & (self.lanes - 1):
            raise UserError(f"lanes must be a power of two (1, 2, 4, ..., 256), got {self.lanes}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(
            self.lr
        ) or self.lr < 0:
            raise UserError(f"lr must be a finite number >= 0, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))
        for name in ("act_fmt", "weight_fmt", "grad_fmt", "lr_fmt", "acc_fmt"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        if self.master_fmt is None:
            object.__setattr__(self, "master_fmt", self.weight_fmt)
        else:
            object.__setattr__(self, "master_fmt", _fmt(self.master_fmt))
        for name in ("forward_rounding", "error_rounding", "backward_rounding", "update_rounding",
                     "weight_read_rounding"):
            object.__setattr__(self, name, Rounding.parse(getattr(self, name)))
        for name in ("act_fmt", "weight_fmt", "grad_fmt", "lr_fmt"):
            f = getattr(self, name)
            if f.width > MAX_OPERAND_WIDTH:
                raise UserError(f"{name} {f} is {f.width} bits; operands are at most {MAX_OPERAND_WIDTH}")
        for name in ("act_fmt", "weight_fmt", "master_fmt", "grad_fmt", "acc_fmt"):
            if not getattr(self, name).signed:
                raise UserError(f"{name} must be signed, got {getattr(self, name)}")
        if self.lr_fmt.signed:
            raise UserError(f"lr_fmt must be unsigned (e.g. UQ0.18), got {self.lr_fmt}")
        if self.act_fmt.max_value < 1.0:
            raise UserError(
                f"act_fmt {self.act_fmt} cannot hold 1.0, the bias input; it needs at least 2 integer bits"
            )
        if self.master_fmt.frac_bits < self.weight_fmt.frac_bits or (
            self.master_fmt.int_bits < self.weight_fmt.int_bits
        ):
            raise UserError(f"master_fmt {self.master_fmt} must contain weight_fmt {self.weight_fmt}")
        need = max(self.act_fmt.frac_bits + self.weight_fmt.frac_bits,
                   self.weight_fmt.frac_bits + self.grad_fmt.frac_bits,
                   self.grad_fmt.frac_bits + self.act_fmt.frac_bits)
        if self.acc_fmt.frac_bits < need:
            raise UserError(
                f"acc_fmt {self.acc_fmt} has {self.acc_fmt.frac_bits} fraction bits; the products "
                f"need {need} (weight*act, weight*grad and grad*act are added exactly)"
            )
        if self.acc_fmt.frac_bits < self.master_fmt.frac_bits:
            raise UserError(f"acc_fmt {self.acc_fmt} needs at least the master weights' fraction bits")
        lr_code = self.lr_code  # validates that lr_eff fits lr_fmt
        if self.lr > 0 and lr_code == 0:
            raise UserError(
                f"lr {self.lr} gives lr_eff {self.lr_eff:.3g}, which is 0 in lr_fmt {self.lr_fmt}; "
                f"give lr_fmt more fraction bits"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 < self.seed < 2**32:
            raise UserError(f"seed must be an integer in 1..2**32-1, got {self.seed!r}")
        for what, words, made_of in (
            ("LOAD request", self.load_words, f"the {self.n_params} weights and biases of layers "
                                              f"{'-'.join(map(str, self.layers))}"),
            ("RUN request", self.run_words, f"K={self.k_support} support pairs and {self.n_query} query inputs"),
            ("RUN response", self.result_words, f"{self.n_query} queries x {self.n_out} outputs"),
        ):
            if words > 0xFFFF:
                raise UserError(f"a {what} would carry {words} words ({made_of}); a packet holds at most 65535")

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if isinstance(d.get("layers"), list):
            d["layers"] = tuple(d["layers"])
        return super().from_dict(d)

    # --- derived sizes ----------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.layers[0]

    @property
    def n_out(self) -> int:
        return self.layers[-1]

    @property
    def n_layers(self) -> int:
        """Number of weight layers."""
        return len(self.layers) - 1

    @property
    def weight_shapes(self) -> list[tuple[int, int]]:
        """Shape ``(out, in+1)`` of each augmented weight matrix ``[W | b]``."""
        return [(o, i + 1) for i, o in zip(self.layers[:-1], self.layers[1:], strict=True)]

    @property
    def n_params(self) -> int:
        return sum(o * i for o, i in self.weight_shapes)

    @property
    def load_words(self) -> int:
        """LOAD payload: the augmented master weights ``[W | b]``, layer by layer, row-major."""
        return self.n_params

    @property
    def run_words(self) -> int:
        """RUN payload: the ``K`` support pairs ``(x, y)`` sample by sample, then the ``Q`` query inputs."""
        return self.k_support * (self.n_in + self.n_out) + self.n_query * self.n_in

    @property
    def result_words(self) -> int:
        """RUN response payload: the ``Q x n_out`` query outputs of the adapted net."""
        return self.n_query * self.n_out

    @property
    def lr_eff(self) -> float:
        """``2 * lr / (k_support * n_out)``: the MSE gradient's factor folded into the step."""
        return 2.0 * self.lr / (self.k_support * self.n_out)

    @property
    def lr_code(self) -> int:
        """``lr_eff`` in ``lr_fmt`` (round half to even; UserError if it does not fit)."""
        from metafab.reference.fixed import from_float

        return int(from_float(self.lr_eff, self.lr_fmt, Rounding.HALF_EVEN, Overflow.ERROR,
                              what="effective learning rate 2*lr/(K*n_out)"))

    @property
    def name(self) -> str:
        shape = "-".join(map(str, self.layers))
        return f"maml-{shape}-k{self.k_support}-q{self.n_query}-s{self.steps}-p{self.lanes}"

    def useful_macs(self) -> int:
        """Multiply-accumulates of one task (support steps and queries), bias included.

        Per step and support sample: the forward pass (``n_params``), the
        backward pass through the hidden layers (``sum out*in`` for the
        layers above the first) and the weight gradient (``n_params``); the
        output error scaling (``n_out``). Per query: the forward pass.
        """
        back = sum(o * i for i, o in zip(self.layers[1:-1], self.layers[2:], strict=True))
        per_sample = 2 * self.n_params + back + self.n_out
        return self.steps * self.k_support * per_sample + self.n_query * self.n_params


def _check_softmax(cfg, logit_name: str) -> None:
    """The softmax fields shared by the similarity engine and the classifier (one exp table, one
    reciprocal): table sizes, the exp range, ``exp_fmt``, ``prob_fmt``'s fraction bits, and logits
    (``cfg.logit_fmt``, named ``logit_name``) fine enough for the table's step."""
    _choice("recip_method", cfg.recip_method, RECIP_METHODS)
    _check_int("exp_table_bits", cfg.exp_table_bits, 1, 16)
    _check_int("recip_table_bits", cfg.recip_table_bits, 2, 14)
    _check_int("mant_bits", cfg.mant_bits, 8, 24)
    if cfg.exp_range is not None:
        _check_int("exp_range", cfg.exp_range, 1, 1 << 12)
        if cfg.exp_range & (cfg.exp_range - 1):
            raise UserError(f"exp_range must be a power of two (1, 2, 4, ...), got {cfg.exp_range}")
    if cfg.exp_fmt.signed or cfg.exp_fmt.max_value < 1.0:
        raise UserError(f"exp_fmt must be unsigned and hold 1.0 (e.g. UQ1.17), got {cfg.exp_fmt}")
    if cfg.exp_fmt.width > 24:
        raise UserError(f"exp_fmt {cfg.exp_fmt} is wider than 24 bits")
    if cfg.prob_fmt.frac_bits > cfg.mant_bits:
        raise UserError(f"prob_fmt has {cfg.prob_fmt.frac_bits} fraction bits; at most {cfg.mant_bits} "
                        f"(mant_bits) are computed")
    if cfg.logit_fmt.frac_bits < cfg.exp_shift_bits:
        raise UserError(
            f"{logit_name} {cfg.logit_fmt} has {cfg.logit_fmt.frac_bits} fraction bits; the exp table "
            f"step 2**-{cfg.exp_shift_bits} (exp_range {cfg.exp_span}, {cfg.exp_table_bits} "
            f"index bits) needs at least {cfg.exp_shift_bits}"
        )


#: Which layers the classifier's inner loop adapts: every layer (MAML) or the head only (ANIL).
ADAPT_LAYERS = ("all", "head")


@dataclass(frozen=True)
class MamlClsConfig(MamlConfig):
    """MAML for N-way classification: the inner loop with the softmax cross-entropy loss.

    Every field of :class:`MamlConfig` keeps its meaning, with these
    differences: the output layer gives ``N = layers[-1] >= 2`` logits (one
    per class); ``k_support`` is the number of labelled support samples of a
    task (``N * K`` for an N-way K-shot episode); a support sample's target is
    its class label. Per task the engine adapts on the support set, then
    answers every query with its class probabilities and its class.

    Rounding points (``docs/fixed_point.md``, "Classification"): the logits
    ``z`` (the ``forward`` point of the last layer, in ``act_fmt``); ``e =
    exp(z - max z)`` through the exp table (``exp_index``); ``p = e / sum e``
    through the reciprocal (``prob``, ``newton``), into ``prob_fmt``; the
    error ``round(lr_eff (p - onehot(y)))`` with ``lr_eff = lr / k_support``
    (``error``), then backward and update as for regression. The exp table
    and the reciprocal are the similarity engine's (one implementation in
    :mod:`metafab.reference.match_fixed`).

    Parameters (in addition to :class:`MamlConfig`'s)
    ----------
    adapt_layers : str
        ``"all"`` (MAML) or ``"head"`` (ANIL: only the last layer adapts).
    exp_fmt, prob_fmt : QFormat
        Exp-table entries and class probabilities (unsigned, holding 1.0).
    exp_table_bits : int
        The exp table has ``2**exp_table_bits`` entries over ``[-exp_range, 0]``.
    exp_range : int
        Power of two: logits more than ``exp_range`` below the largest give ``exp = 0``.
    recip_method, recip_table_bits, mant_bits : str, int, int
        The reciprocal of the exp sum (as :class:`MatchConfig`).
    exp_index_rounding, prob_rounding, newton_rounding : str
        Rounding at those points.
    """

    layers: tuple = (256, 128, 64, 64, 5)
    k_support: int = 5
    n_query: int = 25
    # the shipped glyph classifiers were meta-trained with 5 inner steps of 0.4 (docs/reference.md)
    steps: int = 5
    lr: float = 0.4
    lanes: int = 16
    # the 16-bit member of the classification precision study's family (docs/fixed_point.md): the
    # glyph classifiers' weights stay below 1 and their activations reach 26
    act_fmt: QFormat = QFormat(6, 10)
    weight_fmt: QFormat = QFormat(2, 14)
    acc_fmt: QFormat = QFormat(16, 30)
    adapt_layers: str = "all"
    exp_fmt: QFormat = QFormat(1, 17, signed=False)
    prob_fmt: QFormat = QFormat(1, 13, signed=False)
    exp_table_bits: int = 10
    exp_range: int = 8
    recip_method: str = "newton"
    recip_table_bits: int = 8
    mant_bits: int = 17
    exp_index_rounding: Rounding = Rounding.HALF_EVEN
    prob_rounding: Rounding = Rounding.HALF_EVEN
    newton_rounding: Rounding = Rounding.HALF_EVEN

    #: The classifier's rounding-point fields beyond :class:`MamlConfig`'s.
    SOFTMAX_ROUNDING = ("exp_index_rounding", "prob_rounding", "newton_rounding")

    def __post_init__(self):
        super().__post_init__()
        if self.n_out < 2:
            raise UserError(f"a classifier needs at least 2 classes: the last layer width is the class count N, "
                            f"got layers {'-'.join(map(str, self.layers))}")
        _choice("adapt_layers", self.adapt_layers, ADAPT_LAYERS)
        for name in ("exp_fmt", "prob_fmt"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        if self.prob_fmt.signed or self.prob_fmt.max_value < 1.0:
            raise UserError(f"prob_fmt must be unsigned and hold 1.0 (e.g. UQ1.13), got {self.prob_fmt}")
        for name in self.SOFTMAX_ROUNDING:
            r = Rounding.parse(getattr(self, name))
            if r is Rounding.STOCHASTIC:
                raise UserError(f"{name}: the softmax rounds with 'half_even' or 'truncate', not 'stochastic'")
            object.__setattr__(self, name, r)
        if isinstance(self.exp_range, bool) or not isinstance(self.exp_range, int):
            raise UserError(f"exp_range must be an integer power of two, got {self.exp_range!r}")
        _check_softmax(self, "act_fmt")
        if self.acc_fmt.frac_bits < self.prob_fmt.frac_bits + self.lr_fmt.frac_bits:
            raise UserError(
                f"acc_fmt {self.acc_fmt} has {self.acc_fmt.frac_bits} fraction bits; the error lr_eff (p - onehot) "
                f"needs {self.prob_fmt.frac_bits + self.lr_fmt.frac_bits} (prob_fmt + lr_fmt)"
            )

    # --- the softmax fields under the names the shared exp table and reciprocal read ---
    @property
    def logit_fmt(self) -> QFormat:
        """The logits are the last layer's outputs: ``act_fmt``."""
        return self.act_fmt

    @property
    def exp_span(self) -> int:
        return self.exp_range

    @property
    def exp_shift_bits(self) -> int:
        """``log2`` of the exp-table steps per unit: ``exp_table_bits - log2(exp_range)``."""
        return self.exp_table_bits - (self.exp_range.bit_length() - 1)

    @property
    def n_way(self) -> int:
        """Classes ``N``: the output width."""
        return self.n_out

    @property
    def adapted(self) -> tuple[int, ...]:
        """Indices of the weight layers the inner loop updates."""
        return tuple(range(self.n_layers)) if self.adapt_layers == "all" else (self.n_layers - 1,)

    @property
    def lr_eff(self) -> float:
        """``lr / k_support``: the mean over the support samples folded into the step."""
        return self.lr / self.k_support

    @property
    def run_words(self) -> int:
        """RUN payload: per support sample its ``n_in`` inputs and its label, then the ``Q`` query inputs."""
        return self.k_support * (self.n_in + 1) + self.n_query * self.n_in

    @property
    def result_words(self) -> int:
        """RUN response payload: per query its ``N`` probabilities, then its class."""
        return self.n_query * (self.n_out + 1)

    @property
    def name(self) -> str:
        shape = "-".join(map(str, self.layers))
        tag = "" if self.adapt_layers == "all" else "-anil"
        return f"maml-cls-{shape}-k{self.k_support}-q{self.n_query}-s{self.steps}{tag}-p{self.lanes}"

    def useful_macs(self) -> int:
        """Multiply-accumulates of one task, bias included: per step and support sample the forward pass,
        the backward pass through the layers below the top adapted one, the adapted layers' weight
        gradients and the error scaling; per query the forward pass."""
        shapes = self.weight_shapes
        low = min(self.adapted)
        back = sum(o * (i - 1) for li, (o, i) in enumerate(shapes) if li > low)
        grads = sum(o * i for li, (o, i) in enumerate(shapes) if li in self.adapted)
        per_sample = self.n_params + back + grads + self.n_out
        return self.steps * self.k_support * per_sample + self.n_query * self.n_params


#: Read-out modes of the similarity engine.
MATCH_MODES = ("matching", "proto")
#: Ways to compute a reciprocal / inverse square root (see ``docs/fixed_point.md``).
RECIP_METHODS = ("table", "newton")


def _choice(name: str, value, valid) -> str:
    if value not in valid:
        raise UserError(f"{name} {value!r} is not one of: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class MatchConfig(_ConfigBase):
    """The similarity engine (Matching / Prototypical Networks read-out) and its fixed-point model.

    A support set of ``n_way * k_shot`` embeddings of dimension ``dim`` with
    labels is loaded once; each query embedding is then scored against it.
    ``mode="matching"``: softmax over the cosine similarities to every
    support embedding, summed per class (Vinyals et al. 2016).
    ``mode="proto"``: softmax over minus the squared Euclidean distances to
    the ``n_way`` class prototypes (class means), computed on chip as
    ``2 q.p - |p|^2`` (Snell et al. 2017). Every step, rounding point and
    approximation is in ``docs/fixed_point.md`` ("Similarity read-out").

    Parameters
    ----------
    mode : str
        ``"matching"`` (cosine attention) or ``"proto"`` (squared Euclidean to prototypes).
    n_way, k_shot, dim : int
        Classes ``N``, support embeddings per class ``K`` (the support set has
        ``M = N K`` rows; labels are free, each class needs at least one row),
        embedding dimension ``D``.
    lanes : int
        Parallel multipliers ``P`` of the dot products: a power of two, 1..256.
    emb_fmt : QFormat
        Support and query embeddings, as they arrive (signed).
    unit_fmt : QFormat
        Normalised support embeddings ``s / |s|`` (matching; signed, needs 2 integer bits for 1.0).
    proto_fmt : QFormat
        Class prototypes (proto; signed).
    acc_fmt : QFormat
        Exact dot products and squared norms; must hold the worst case (checked), so it never wraps.
    logit_fmt : QFormat
        Softmax inputs: cosines (matching) or ``2 q.p - |p|^2`` (proto).
    exp_fmt : QFormat
        Exp-table entries (unsigned, holds 1.0).
    prob_fmt : QFormat
        The class probabilities the engine outputs.
    exp_table_bits : int
        The exp table has ``2**exp_table_bits`` entries spread over ``[-exp_range, 0]``.
    exp_range : int or None
        Power of two: softmax inputs more than ``exp_range`` below the reference
        (1.0 in matching, the largest logit in proto) give 0. ``None`` (default):
        2 for matching (cosines span ``[-1, 1]``), 8 for proto.
    recip_method, rsqrt_method : str
        ``"table"`` (a table of ``2**bits`` entries on the normalised
        mantissa) or ``"newton"`` (the table, then one Newton-Raphson step).
    recip_table_bits, rsqrt_table_bits : int
        Index bits of the two tables.
    mant_bits : int
        Fraction bits ``H`` of reciprocal / inverse-square-root mantissas and of the ``1/k`` constants.
    unit_rounding, prototype_rounding, logit_rounding : str
        Rounding at the named points of the same names (see ``docs/fixed_point.md``),
    exp_index_rounding, prob_rounding, newton_rounding : str
        Rounding at each named point, ``"half_even"`` or ``"truncate"``.
    """

    mode: str = "matching"
    n_way: int = 5
    k_shot: int = 5
    dim: int = 64
    lanes: int = 64
    emb_fmt: QFormat = QFormat(4, 12)
    unit_fmt: QFormat = QFormat(2, 14)
    proto_fmt: QFormat = QFormat(4, 12)
    acc_fmt: QFormat = QFormat(20, 26)
    logit_fmt: QFormat = QFormat(10, 14)
    exp_fmt: QFormat = QFormat(1, 17, signed=False)
    prob_fmt: QFormat = QFormat(1, 15, signed=False)
    exp_table_bits: int = 12
    exp_range: int | None = None
    recip_method: str = "newton"
    recip_table_bits: int = 8
    rsqrt_method: str = "newton"
    rsqrt_table_bits: int = 8
    mant_bits: int = 17
    unit_rounding: Rounding = Rounding.HALF_EVEN
    prototype_rounding: Rounding = Rounding.HALF_EVEN
    logit_rounding: Rounding = Rounding.HALF_EVEN
    exp_index_rounding: Rounding = Rounding.HALF_EVEN
    prob_rounding: Rounding = Rounding.HALF_EVEN
    newton_rounding: Rounding = Rounding.HALF_EVEN

    #: The rounding-point fields, in the order of the computation.
    ROUNDING_POINTS = ("unit_rounding", "prototype_rounding", "logit_rounding", "exp_index_rounding",
                       "prob_rounding", "newton_rounding")

    def __post_init__(self):
        _choice("mode", self.mode, MATCH_MODES)
        _check_int("n_way", self.n_way, 1, 64)
        _check_int("k_shot", self.k_shot, 1, 1024)
        _check_int("dim", self.dim, 1, 1024)
        _check_int("lanes", self.lanes, 1, 256)
        if self.lanes & (self.lanes - 1):
            raise UserError(f"lanes must be a power of two (1, 2, 4, ..., 256), got {self.lanes}")
        if self.n_support > 1024:
            raise UserError(f"n_way * k_shot = {self.n_support} support embeddings; "
                            f"at most 1024 are supported")
        if self.load_words > 0xFFFF:
            raise UserError(f"the support set is {self.load_words} words (n_way * k_shot * (dim + 1)); "
                            f"a LOAD packet holds at most 65535")
        for name in ("emb_fmt", "unit_fmt", "proto_fmt", "acc_fmt", "logit_fmt", "exp_fmt", "prob_fmt"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        for name in self.ROUNDING_POINTS:
            r = Rounding.parse(getattr(self, name))
            if r is Rounding.STOCHASTIC:
                raise UserError(f"{name}: the similarity engine rounds with 'half_even' or 'truncate', "
                                f"not 'stochastic'")
            object.__setattr__(self, name, r)
        _choice("rsqrt_method", self.rsqrt_method, RECIP_METHODS)
        _check_int("rsqrt_table_bits", self.rsqrt_table_bits, 3, 14)
        _check_softmax(self, "logit_fmt")
        for name in ("emb_fmt", "unit_fmt", "proto_fmt", "acc_fmt", "logit_fmt"):
            if not getattr(self, name).signed:
                raise UserError(f"{name} must be signed, got {getattr(self, name)}")
        for name in ("emb_fmt", "unit_fmt", "proto_fmt"):
            f = getattr(self, name)
            if f.width > 25:
                raise UserError(f"{name} {f} is {f.width} bits; multiplier operands are at most 25 bits")
        if self.prob_fmt.width > 32:
            raise UserError(f"prob_fmt {self.prob_fmt} must fit a 32-bit word")
        if self.unit_fmt.max_value < 1.0:
            raise UserError(f"unit_fmt {self.unit_fmt} cannot hold 1.0; it needs at least 2 integer bits")
        if self.logit_fmt.max_value < 1.0:
            raise UserError(f"logit_fmt {self.logit_fmt} cannot hold 1.0; it needs at least 2 integer bits")
        H = self.mant_bits
        checks = (
            ("unit_fmt", self.unit_fmt.frac_bits, H, "mant_bits"),
            ("proto_fmt", self.proto_fmt.frac_bits, self.emb_fmt.frac_bits + H,
             "emb_fmt fraction bits + mant_bits"),
            ("logit_fmt", self.logit_fmt.frac_bits, self.unit_fmt.frac_bits + H,
             "unit_fmt fraction bits + mant_bits"),
            ("logit_fmt", self.logit_fmt.frac_bits, self.acc_fmt.frac_bits, "acc_fmt fraction bits"),
        )
        for name, frac, limit, what in checks:
            if frac > limit:
                raise UserError(f"{name} has {frac} fraction bits; at most {limit} ({what}) are computed")
        fe, fu, fp = self.emb_fmt.frac_bits, self.unit_fmt.frac_bits, self.proto_fmt.frac_bits
        need = max(fe + fu, fe + fp, 2 * fe, 2 * fp)
        if self.acc_fmt.frac_bits < need:
            raise UserError(f"acc_fmt {self.acc_fmt} has {self.acc_fmt.frac_bits} fraction bits; "
                            f"the products need {need}")
        # the cosine scaling multiplies an exact dot product by a mantissa: numpy's int64 must hold it
        cos_bits = ((self.dim * (-self.emb_fmt.min_code) * (-self.unit_fmt.min_code)).bit_length()
                    + self.mant_bits + 1)
        if cos_bits > 62:
            raise UserError(
                f"emb_fmt {self.emb_fmt}, unit_fmt {self.unit_fmt} and mant_bits {self.mant_bits} make the "
                f"cosine scaling a {cos_bits}-bit product for dim {self.dim}; at most 62 bits are supported"
            )
        worst = self.acc_worst_case()
        if worst > self.acc_fmt.max_code:
            need_int = self.acc_fmt.int_bits + (worst.bit_length() - (self.acc_fmt.width - 1))
            raise UserError(
                f"acc_fmt {self.acc_fmt} can overflow for dim {self.dim}: the worst-case dot product or "
                f"squared norm needs Q{need_int}.{self.acc_fmt.frac_bits}"
            )

    # --- derived sizes -----------------------------------------------------
    @property
    def n_support(self) -> int:
        """Support embeddings ``M = n_way * k_shot``."""
        return self.n_way * self.k_shot

    @property
    def n_vectors(self) -> int:
        """Vectors the engine stores and scores per query: ``M`` (matching) or ``N`` prototypes."""
        return self.n_support if self.mode == "matching" else self.n_way

    @property
    def chunks(self) -> int:
        """Cycles of the ``P`` lanes per dot product, ``ceil(D / P)``."""
        return -(-self.dim // self.lanes)

    @property
    def store_fmt(self) -> QFormat:
        """Format of the stored vectors: ``unit_fmt`` (matching) or ``proto_fmt`` (proto)."""
        return self.unit_fmt if self.mode == "matching" else self.proto_fmt

    @property
    def exp_span(self) -> int:
        """The exp table's input range ``[-exp_span, 0]``: ``exp_range``, or the mode's default."""
        if self.exp_range is not None:
            return self.exp_range
        return 2 if self.mode == "matching" else 8

    @property
    def exp_shift_bits(self) -> int:
        """``log2`` of the exp-table steps per unit: ``exp_table_bits - log2(exp_span)``."""
        return self.exp_table_bits - (self.exp_span.bit_length() - 1)

    @property
    def mant_fmt(self) -> QFormat:
        """``UQ1.H``: reciprocal and inverse-square-root mantissas, the ``1/k`` constants."""
        return QFormat(1, self.mant_bits, signed=False)

    @property
    def sum_fmt(self) -> QFormat:
        """Exact sums of up to ``M`` exp-table entries (class sums and their total)."""
        return QFormat(self.exp_fmt.int_bits + self.n_support.bit_length(), self.exp_fmt.frac_bits,
                       signed=False)

    @property
    def load_words(self) -> int:
        """LOAD payload: per support row its label, then its ``D`` codes."""
        return self.n_support * (self.dim + 1)

    @property
    def query_pack(self) -> int:
        """Query codes per RUN payload word: two 16-bit fields when the codes fit 16 bits and there are at
        least two lanes (the two codes of a word go to two lane banks in the same cycle), else one."""
        return 2 if self.emb_fmt.width <= WORD_BITS // 2 and self.lanes >= 2 else 1

    @property
    def query_words(self) -> int:
        """RUN payload: the ``D`` codes of one query, ``query_pack`` per word."""
        return -(-self.dim // self.query_pack)

    @property
    def result_words(self) -> int:
        """RUN response payload: ``N`` probabilities, then the winning class."""
        return self.n_way + 1

    @property
    def name(self) -> str:
        return f"match-{self.mode}-{self.n_way}w{self.k_shot}s-d{self.dim}-p{self.lanes}"

    def acc_worst_case(self) -> int:
        """The largest magnitude (in ``acc_fmt`` codes) of any exact dot, squared norm or proto logit."""
        fa = self.acc_fmt.frac_bits
        e, u, p = self.emb_fmt, self.unit_fmt, self.proto_fmt

        def prod(a: QFormat, b: QFormat) -> int:
            return (-a.min_code) * (-b.min_code) << (fa - a.frac_bits - b.frac_bits)

        dots = self.dim * max(prod(e, u), prod(e, p), prod(e, e), prod(p, p))
        logit = self.dim * (2 * prod(e, p) + prod(p, p))
        return max(dots, logit if self.mode == "proto" else 0)

    def useful_macs(self) -> int:
        """Multiply-accumulates of the dot products of one query: ``n_vectors * D``."""
        return self.n_vectors * self.dim
