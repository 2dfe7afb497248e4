"""Fixed-point numbers: the project's one number vocabulary (numpy only).

A value in format ``Q(int_bits, frac_bits)`` is stored as an integer *code*
``c`` and means ``c * 2**-frac_bits``. The format's width is
``int_bits + frac_bits``; for a signed format the sign bit is counted in
``int_bits`` (so ``Q(1, 15)`` is a 16-bit signed number in ``[-1, 1)``),
which is the vocabulary of Amaranth RFC 41 (``SQ``/``UQ``).

Every operation says its result format. Products and sums have *exact* result
formats (wide enough that nothing is lost); the only lossy step is
:func:`resize`, which applies an explicit :class:`Rounding` when fraction bits
are dropped and an explicit :class:`Overflow` when integer bits are dropped.
The hardware in :mod:`metafab.hw.fixed` applies exactly these operations, so
the two agree on every bit.

Codes are numpy ``int64`` arrays; operand formats are limited to
:data:`MAX_OPERAND_WIDTH` bits and accumulators to :data:`MAX_WIDTH` bits so
that every exact intermediate fits. Accumulation of many products uses
:func:`wrap` semantics (two's complement modulo ``2**width``), which is what
a hardware accumulator register does and which makes the sum independent of
the order of accumulation.

Stochastic rounding draws its random bits from :class:`Xorshift32`, a
32-bit xorshift generator (Marsaglia 2003, shifts 13/17/5): a linear
feedback shift register over GF(2) that costs one register and three XOR
layers in hardware (:class:`metafab.hw.fixed.Xorshift32`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

import numpy as np

from metafab.reference.errors import UserError

__all__ = [
    "MAX_OPERAND_WIDTH",
    "MAX_WIDTH",
    "Rounding",
    "Overflow",
    "QFormat",
    "Xorshift32",
    "from_float",
    "to_float",
    "to_fraction",
    "round_shift",
    "saturate",
    "wrap",
    "resize",
    "mul",
    "add",
    "sub",
    "mac",
    "dot",
    "matmul",
    "product_format",
    "sum_format",
]

#: Widest format a multiplier operand may have (two of them multiply exactly in int64).
MAX_OPERAND_WIDTH = 31
#: Widest format of any value (accumulators included).
MAX_WIDTH = 62


class Rounding(StrEnum):
    """How :func:`resize` drops fraction bits.

    ``truncate``: towards minus infinity (an arithmetic shift right).
    ``half_even``: to nearest, ties to the even code.
    ``stochastic``: add ``d`` random bits from :class:`Xorshift32` below the
    kept LSB, then truncate (rounds up with probability equal to the dropped
    fraction).
    """

    TRUNCATE = "truncate"
    HALF_EVEN = "half_even"
    STOCHASTIC = "stochastic"

    @classmethod
    def parse(cls, value: Rounding | str) -> Rounding:
        """The :class:`Rounding` named by ``value``; UserError listing valid names otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise UserError(f"unknown rounding mode {value!r}; valid: {valid}") from None


class Overflow(StrEnum):
    """How :func:`resize` drops integer bits.

    ``saturate``: clamp to the format's range. ``wrap``: two's complement
    modulo ``2**width``. ``error``: raise :class:`UserError` naming the value
    (for constants and user data, where silent clamping would hide a mistake).
    """

    SATURATE = "saturate"
    WRAP = "wrap"
    ERROR = "error"

    @classmethod
    def parse(cls, value: Overflow | str) -> Overflow:
        """The :class:`Overflow` named by ``value``; UserError listing valid names otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise UserError(f"unknown overflow mode {value!r}; valid: {valid}") from None


_FORMAT_RE = re.compile(r"^\s*([SU]?)Q\s*(-?\d+)\s*[.,]\s*(-?\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class QFormat:
    """A fixed-point format ``Q(int_bits, frac_bits)``, signed or unsigned.

    Parameters
    ----------
    int_bits : int
        Integer bits, the sign bit included for a signed format (>= 0).
    frac_bits : int
        Fraction bits (>= 0).
    signed : bool
        Two's complement when true.

    Attributes
    ----------
    width : int
        ``int_bits + frac_bits``, between 1 and :data:`MAX_WIDTH`.
    min_code, max_code : int
        The smallest and largest integer code.

    Raises
    ------
    UserError
        For a width of zero or less, negative or beyond-width fraction bits,
        or a width above :data:`MAX_WIDTH`.
    """

    int_bits: int
    frac_bits: int
    signed: bool = True

    def __post_init__(self):
        for name in ("int_bits", "frac_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise UserError(f"QFormat {name} must be an integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not isinstance(self.signed, (bool, np.bool_)):
            raise UserError(f"QFormat signed must be a bool, got {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        width = self.int_bits + self.frac_bits
        if width < 1:
            raise UserError(
                f"impossible fixed-point format Q({self.int_bits},{self.frac_bits}): "
                f"width {width} must be at least 1 bit"
            )
        if self.frac_bits < 0:
            raise UserError(
                f"impossible fixed-point format Q({self.int_bits},{self.frac_bits}): "
                f"fraction bits must be >= 0"
            )
        if self.int_bits < 0:
            raise UserError(
                f"impossible fixed-point format Q({self.int_bits},{self.frac_bits}): "
                f"{self.frac_bits} fraction bits exceed the width {width}"
            )
        if width > MAX_WIDTH:
            raise UserError(
                f"fixed-point format {self} is {width} bits wide; at most {MAX_WIDTH} are supported"
            )

    @classmethod
    def from_width(cls, width: int, frac_bits: int, signed: bool = True) -> QFormat:
        """The format of ``width`` bits with ``frac_bits`` of them below the binary point."""
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
            raise UserError(f"fixed-point width must be an integer, got {width!r}")
        if width < 1:
            raise UserError(f"impossible fixed-point width {width}: must be at least 1 bit")
        if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
            raise UserError(f"fraction bits must be an integer, got {frac_bits!r}")
        if not 0 <= frac_bits <= width:
            raise UserError(
                f"impossible fixed-point format: {frac_bits} fraction bits in a "
                f"{width}-bit number (valid: 0..{width})"
            )
        return cls(int(width) - int(frac_bits), int(frac_bits), signed)

    @classmethod
    def parse(cls, text: str | QFormat) -> QFormat:
        """Parse ``"Q4.12"`` / ``"SQ4.12"`` (signed) or ``"UQ4.12"`` (unsigned)."""
        if isinstance(text, QFormat):
            return text
        m = _FORMAT_RE.match(str(text))
        if not m:
            raise UserError(
                f"cannot read fixed-point format {text!r}; write e.g. 'Q4.12' (signed, 4 integer "
                f"bits including the sign, 12 fraction bits) or 'UQ0.16' (unsigned)"
            )
        return cls(int(m.group(2)), int(m.group(3)), m.group(1).upper() != "U")

    # --- derived properties -------------------------------------------------
    @property
    def width(self) -> int:
        return self.int_bits + self.frac_bits

    @property
    def min_code(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_code(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> Fraction:
        """The value of one code step, ``2**-frac_bits``, exactly."""
        return Fraction(1, 1 << self.frac_bits)

    @property
    def min_value(self) -> float:
        return self.min_code / (1 << self.frac_bits)

    @property
    def max_value(self) -> float:
        return self.max_code / (1 << self.frac_bits)

    def __str__(self) -> str:
        return f"{'' if self.signed else 'U'}Q{self.int_bits}.{self.frac_bits}"

    def contains(self, codes) -> np.ndarray:
        """Whether each code lies in this format's range."""
        c = np.asarray(codes, dtype=np.int64)
        return (c >= self.min_code) & (c <= self.max_code)

    def check(self, codes, what: str = "value") -> np.ndarray:
        """Return ``codes`` as int64, raising UserError if any is outside this format."""
        c = np.asarray(codes)
        if c.dtype.kind not in "iu":
            raise UserError(f"{what}: fixed-point codes must be integers, got dtype {c.dtype}")
        c = c.astype(np.int64)
        bad = ~self.contains(c)
        if bad.any():
            v = int(c[bad].flat[0])
            raise UserError(
                f"{what}: code {v} does not fit {self} (valid codes {self.min_code}..{self.max_code})"
            )
        return c


# ---------------------------------------------------------------------------
# random bits for stochastic rounding
# ---------------------------------------------------------------------------


class Xorshift32:
    """Marsaglia's 32-bit xorshift generator (shifts 13, 17, 5), a GF(2) LFSR.

    One :meth:`step` computes ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` on
    32 bits. A stochastic rounding that drops ``d`` bits of one value takes
    one step and uses the top ``d`` bits of the new state (``d <= 32``; for
    ``d > 32`` those bits are shifted up, the low ones zero). Arrays draw one
    step per element in C order. The state must be non-zero.
    """

    __slots__ = ("state",)

    def __init__(self, seed: int = 0x2545F491):
        seed = int(seed) & 0xFFFFFFFF
        if seed == 0:
            raise UserError("xorshift32 seed must be non-zero (zero is a fixed point)")
        self.state = seed

    @staticmethod
    def next_state(x: int) -> int:
        """The state after one step from ``x``."""
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        return x

    def step(self) -> int:
        """Advance one step and return the new 32-bit state."""
        self.state = self.next_state(self.state)
        return self.state

    def draw(self, n: int, bits: int) -> np.ndarray:
        """``n`` successive ``bits``-bit random integers (int64), one step each."""
        if not 0 <= bits <= MAX_WIDTH:
            raise UserError(f"cannot draw {bits} random bits (valid: 0..{MAX_WIDTH})")
        out = np.empty(n, dtype=np.int64)
        for i in range(n):
            s = self.step()
            out[i] = s >> (32 - bits) if bits <= 32 else s << (bits - 32)
        return out


# ---------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------


def _as_codes(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise UserError(f"fixed-point codes must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def saturate(codes, fmt: QFormat) -> np.ndarray:
    """Clamp integer codes to ``fmt``'s range."""
    return np.clip(_as_codes(codes), fmt.min_code, fmt.max_code)


def wrap(codes, fmt: QFormat) -> np.ndarray:
    """Reduce integer codes modulo ``2**fmt.width`` into ``fmt``'s range (two's complement)."""
    c = _as_codes(codes)
    mask = np.int64((1 << fmt.width) - 1)
    u = c & mask
    if fmt.signed:
        sign = np.int64(1 << (fmt.width - 1))
        u = np.where(u >= sign, u - (mask + 1), u)
    return u.astype(np.int64)


def _overflow(codes: np.ndarray, fmt: QFormat, overflow: Overflow, what: str) -> np.ndarray:
    overflow = Overflow.parse(overflow)
    if overflow is Overflow.SATURATE:
        return saturate(codes, fmt)
    if overflow is Overflow.WRAP:
        return wrap(codes, fmt)
    return fmt.check(codes, what)


def round_shift(codes, shift: int, rounding: Rounding | str, lfsr: Xorshift32 | None = None):
    """Divide codes by ``2**shift`` and round to an integer (``shift >= 0``).

    This is the one place where fraction bits are dropped; see
    :class:`Rounding` for the modes. Stochastic rounding needs ``lfsr``.
    """
    rounding = Rounding.parse(rounding)
    c = _as_codes(codes)
    if shift < 0:
        raise UserError(f"round_shift needs shift >= 0, got {shift}")
    if shift == 0:
        return c.copy()
    if rounding is Rounding.TRUNCATE:
        return c >> shift
    if rounding is Rounding.HALF_EVEN:
        q = c >> shift
        r = c & np.int64((1 << shift) - 1)
        half = np.int64(1 << (shift - 1))
        up = (r > half) | ((r == half) & ((q & 1) == 1))
        return q + up.astype(np.int64)
    if lfsr is None:
        raise UserError("stochastic rounding needs an Xorshift32 random source (lfsr=...)")
    rnd = lfsr.draw(c.size, shift).reshape(c.shape)
    return (c + rnd) >> shift


def resize(
    codes,
    src: QFormat,
    dst: QFormat,
    rounding: Rounding | str = Rounding.HALF_EVEN,
    overflow: Overflow | str = Overflow.SATURATE,
    lfsr: Xorshift32 | None = None,
    what: str = "value",
) -> np.ndarray:
    """Re-format codes from ``src`` to ``dst``: align the binary point, round, then overflow.

    Fraction bits are added exactly or dropped with ``rounding``; the rounded
    code is then brought into ``dst``'s range with ``overflow``. This is the
    hardware's order (:func:`metafab.hw.fixed.resize`).
    """
    c = _as_codes(codes)
    d = src.frac_bits - dst.frac_bits
    if d > 0:
        c = round_shift(c, d, rounding, lfsr)
    elif d < 0:
        c = c << (-d)
    return _overflow(c, dst, overflow, what)


def from_float(
    x,
    fmt: QFormat,
    rounding: Rounding | str = Rounding.HALF_EVEN,
    overflow: Overflow | str = Overflow.SATURATE,
    lfsr: Xorshift32 | None = None,
    what: str = "value",
) -> np.ndarray:
    """Quantise real numbers to ``fmt`` codes (int64).

    ``x * 2**frac_bits`` is exact in float64 (a power-of-two scale), then it
    is rounded to an integer with ``rounding`` and brought into range with
    ``overflow``. NaN and infinity are rejected.
    """
    rounding = Rounding.parse(rounding)
    overflow = Overflow.parse(overflow)
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise UserError(f"{what}: cannot convert NaN or infinity to fixed point {fmt}")
    if overflow is Overflow.ERROR:
        bad = (a < fmt.min_value) | (a > fmt.max_value)
        if bad.any():
            v = float(a[bad].flat[0])
            raise UserError(
                f"{what}: {v!r} does not fit {fmt} (range {fmt.min_value!r} .. {fmt.max_value!r})"
            )
    s = np.ldexp(a, fmt.frac_bits)
    # keep far-out-of-range values finite as int64 before overflow handling
    lim = float(2**MAX_WIDTH)
    s = np.clip(s, -lim, lim)
    if rounding is Rounding.TRUNCATE:
        c = np.floor(s)
    elif rounding is Rounding.HALF_EVEN:
        c = np.rint(s)
    else:
        if lfsr is None:
            raise UserError("stochastic rounding needs an Xorshift32 random source (lfsr=...)")
        u = np.ldexp(lfsr.draw(a.size, 32).reshape(a.shape).astype(np.float64), -32)
        c = np.floor(s + u)
    return _overflow(c.astype(np.int64), fmt, overflow, what)


def to_float(codes, fmt: QFormat) -> np.ndarray:
    """The real value of each code, as float64 (exact for widths up to 53 bits)."""
    return np.ldexp(_as_codes(codes).astype(np.float64), -fmt.frac_bits)


def to_fraction(code: int, fmt: QFormat) -> Fraction:
    """The exact rational value of one code."""
    return Fraction(int(code), 1 << fmt.frac_bits)


# ---------------------------------------------------------------------------
# exact arithmetic
# ---------------------------------------------------------------------------


def product_format(a: QFormat, b: QFormat) -> QFormat:
    """The exact format of ``a * b``: widths add, fraction bits add."""
    signed = a.signed or b.signed
    width = a.width + b.width
    frac = a.frac_bits + b.frac_bits
    if not (a.signed and b.signed) and signed:
        # unsigned * signed: an unsigned operand of w bits needs w+1 signed bits
        width += 1
    return QFormat.from_width(min(width, MAX_WIDTH), frac, signed)


def sum_format(a: QFormat, b: QFormat) -> QFormat:
    """The exact format of ``a + b`` (or ``a - b``): aligned binary points, one carry bit."""
    frac = max(a.frac_bits, b.frac_bits)
    signed = True  # a difference can be negative; keep sums signed for one rule
    ia = a.int_bits + (0 if a.signed else 1)
    ib = b.int_bits + (0 if b.signed else 1)
    return QFormat(min(max(ia, ib) + 1, MAX_WIDTH - frac), frac, signed)


def _check_operand(fmt: QFormat, what: str):
    if fmt.width > MAX_OPERAND_WIDTH:
        raise UserError(
            f"{what} format {fmt} is {fmt.width} bits; multiplier operands are at most "
            f"{MAX_OPERAND_WIDTH} bits"
        )


def mul(a, fa: QFormat, b, fb: QFormat) -> tuple[np.ndarray, QFormat]:
    """Exact element-wise product; returns ``(codes, product_format(fa, fb))``."""
    _check_operand(fa, "left operand")
    _check_operand(fb, "right operand")
    return _as_codes(a) * _as_codes(b), product_format(fa, fb)


def _align(c: np.ndarray, f: QFormat, frac: int) -> np.ndarray:
    return c << (frac - f.frac_bits)


def add(a, fa: QFormat, b, fb: QFormat) -> tuple[np.ndarray, QFormat]:
    """Exact element-wise sum; returns ``(codes, sum_format(fa, fb))``."""
    out = sum_format(fa, fb)
    return _align(_as_codes(a), fa, out.frac_bits) + _align(_as_codes(b), fb, out.frac_bits), out


def sub(a, fa: QFormat, b, fb: QFormat) -> tuple[np.ndarray, QFormat]:
    """Exact element-wise difference ``a - b``; returns ``(codes, sum_format(fa, fb))``."""
    out = sum_format(fa, fb)
    return _align(_as_codes(a), fa, out.frac_bits) - _align(_as_codes(b), fb, out.frac_bits), out


def mac(acc, facc: QFormat, a, fa: QFormat, b, fb: QFormat) -> np.ndarray:
    """One multiply-accumulate ``acc + a*b`` in the accumulator format, wrapping.

    The product's fraction bits must not exceed the accumulator's (the
    product is aligned exactly, never rounded); the sum wraps modulo
    ``2**facc.width`` like a hardware accumulator register.
    """
    p, fp = mul(a, fa, b, fb)
    if fp.frac_bits > facc.frac_bits:
        raise UserError(
            f"accumulator {facc} has fewer fraction bits than the product {fp}; "
            f"it must have at least {fp.frac_bits}"
        )
    return wrap(_as_codes(acc) + _align(p, fp, facc.frac_bits), facc)


def dot(a, fa: QFormat, b, fb: QFormat, facc: QFormat, axis: int = -1) -> np.ndarray:
    """Sum of exact products along ``axis`` in accumulator format ``facc`` (wrapping).

    Because the sum wraps modulo ``2**facc.width`` (int64 arithmetic itself
    wraps modulo ``2**64``, a multiple), the result does not depend on the
    order of accumulation: any hardware schedule gives the same bits.
    """
    p, fp = mul(a, fa, b, fb)
    if fp.frac_bits > facc.frac_bits:
        raise UserError(
            f"accumulator {facc} has fewer fraction bits than the product {fp}; "
            f"it must have at least {fp.frac_bits}"
        )
    with np.errstate(over="ignore"):
        s = np.sum(_align(p, fp, facc.frac_bits), axis=axis, dtype=np.int64)
    return wrap(s, facc)


def matmul(a, fa: QFormat, b, fb: QFormat, facc: QFormat) -> np.ndarray:
    """Matrix product ``a @ b`` of code arrays, exact products summed in ``facc`` (wrapping).

    ``a`` has shape ``(m, k)`` and ``b`` shape ``(k, n)``; the result has shape
    ``(m, n)`` in format ``facc``. Same semantics as :func:`dot`.
    """
    a = _as_codes(a)
    b = _as_codes(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise UserError(f"matmul shapes do not match: {a.shape} @ {b.shape}")
    return dot(a[:, :, None], fa, b[None, :, :], fb, facc, axis=1)
