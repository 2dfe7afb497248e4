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
from dataclasses import dataclass, fields

from metafab.reference.errors import UserError
from metafab.reference.fixed import (
    MAX_OPERAND_WIDTH,
    Overflow,
    QFormat,
    Rounding,
    product_format,
)

__all__ = ["MacLaneConfig", "config_digest"]


def _fmt(v) -> QFormat:
    return QFormat.parse(v)


def config_digest(cfg) -> str:
    """A short stable hash of a config (for build caches and manifests)."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _ConfigBase:
    """Dict round-trip shared by the configs (formats as ``"Q4.12"`` strings)."""

    def to_dict(self) -> dict:
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

    @classmethod
    def from_dict(cls, d: dict):
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
