"""reference/fixed.py against exact rational arithmetic (fractions.Fraction) as the oracle."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metafab.reference import fixed as fx
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, QFormat, Rounding, Xorshift32

# --- strategies -------------------------------------------------------------


@st.composite
def formats(draw, max_width=24, signed=None):
    width = draw(st.integers(1, max_width))
    frac = draw(st.integers(0, width))
    s = draw(st.booleans()) if signed is None else signed
    return QFormat.from_width(width, frac, s)


@st.composite
def codes_in(draw, fmt, n=8):
    return np.array(draw(st.lists(st.integers(fmt.min_code, fmt.max_code), min_size=1, max_size=n)))


# --- oracle -----------------------------------------------------------------


def oracle_round(v: Fraction, mode: Rounding, rnd_frac: Fraction | None = None) -> int:
    """Round a rational to an integer."""
    if mode is Rounding.TRUNCATE:
        return math.floor(v)
    if mode is Rounding.HALF_EVEN:
        return round(v)  # Fraction.__round__ rounds half to even
    return math.floor(v + rnd_frac)


def oracle_overflow(code: int, fmt: QFormat, mode: Overflow) -> int:
    if mode is Overflow.SATURATE:
        return min(max(code, fmt.min_code), fmt.max_code)
    span = 1 << fmt.width
    return (code - fmt.min_code) % span + fmt.min_code


# --- formats ----------------------------------------------------------------


def test_format_basics():
    f = QFormat(1, 15)
    assert f.width == 16 and f.min_code == -32768 and f.max_code == 32767
    assert f.min_value == -1.0 and f.max_value == 32767 / 32768
    u = QFormat(0, 8, signed=False)
    assert (u.min_code, u.max_code, u.max_value) == (0, 255, 255 / 256)
    assert QFormat.parse("Q4.12") == QFormat(4, 12)
    assert QFormat.parse("UQ0.16") == QFormat(0, 16, False)
    assert QFormat.parse("sq2.14") == QFormat(2, 14)
    assert str(QFormat(3, 5, False)) == "UQ3.5"
    assert QFormat.from_width(18, 14) == QFormat(4, 14)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: QFormat(0, 0), "width 0"),
        (lambda: QFormat(-3, 5), "5 fraction bits exceed the width 2"),
        (lambda: QFormat(4, -1), "fraction bits must be >= 0"),
        (lambda: QFormat.from_width(0, 0), "width 0"),
        (lambda: QFormat.from_width(-4, 0), "width -4"),
        (lambda: QFormat.from_width(8, 9), "9 fraction bits in a 8-bit"),
        (lambda: QFormat(40, 40), "at most 62"),
        (lambda: QFormat(1.5, 2), "integer"),
        (lambda: QFormat.parse("Q4"), "'Q4'"),
    ],
)
def test_impossible_formats_are_rejected_with_the_bad_value(make, fragment):
    with pytest.raises(UserError, match=fragment):
        make()


def test_unknown_modes_name_the_value_and_the_valid_ones():
    with pytest.raises(UserError, match="'nearest'.*truncate, half_even, stochastic"):
        Rounding.parse("nearest")
    with pytest.raises(UserError, match="'clip'.*saturate, wrap, error"):
        Overflow.parse("clip")


# --- conversions --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    fmt=formats(),
    xs=st.lists(st.floats(-300, 300, allow_nan=False, allow_infinity=False), min_size=1, max_size=6),
    mode=st.sampled_from([Rounding.TRUNCATE, Rounding.HALF_EVEN]),
    ov=st.sampled_from([Overflow.SATURATE, Overflow.WRAP]),
)
def test_from_float_matches_exact_rounding(fmt, xs, mode, ov):
    got = fx.from_float(np.array(xs), fmt, mode, ov)
    for x, g in zip(xs, got, strict=True):
        want = oracle_overflow(oracle_round(Fraction(x) * (1 << fmt.frac_bits), mode), fmt, ov)
        assert int(g) == want, (x, fmt, mode, ov)


@settings(max_examples=200, deadline=None)
@given(fmt=formats(), xs=st.lists(st.floats(-50, 50), min_size=1, max_size=6), seed=st.integers(1, 2**32 - 1))
def test_from_float_stochastic_uses_the_named_generator(fmt, xs, seed):
    got = fx.from_float(np.array(xs), fmt, Rounding.STOCHASTIC, Overflow.SATURATE, Xorshift32(seed))
    ref = Xorshift32(seed)
    for x, g in zip(xs, got, strict=True):
        u = Fraction(ref.step(), 1 << 32)
        want = oracle_overflow(
            math.floor(Fraction(x) * (1 << fmt.frac_bits) + u), fmt, Overflow.SATURATE
        )
        assert int(g) == want


def test_from_float_rejects_non_finite_and_out_of_range_constants():
    f = QFormat(2, 6)
    with pytest.raises(UserError, match="NaN or infinity"):
        fx.from_float([1.0, float("nan")], f)
    with pytest.raises(UserError, match="lr: 5.0 does not fit Q2.6"):
        fx.from_float(5.0, f, overflow=Overflow.ERROR, what="lr")
    assert fx.from_float(5.0, f, overflow="saturate") == f.max_code


def test_half_even_ties():
    f = QFormat(8, 0)
    got = fx.from_float([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], f, "half_even")
    assert got.tolist() == [0, 2, 2, 0, -2, -2]
    got = fx.from_float([0.5, 1.5, -0.5, -1.5], f, "truncate")
    assert got.tolist() == [0, 1, -1, -2]


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    src=formats(max_width=40),
    dst=formats(max_width=24),
    mode=st.sampled_from(list(Rounding)),
    ov=st.sampled_from([Overflow.SATURATE, Overflow.WRAP]),
    seed=st.integers(1, 2**32 - 1),
)
def test_resize_matches_exact_rounding_and_overflow(data, src, dst, mode, ov, seed):
    codes = data.draw(codes_in(src))
    lfsr = Xorshift32(seed) if mode is Rounding.STOCHASTIC else None
    got = fx.resize(codes, src, dst, mode, ov, lfsr)
    ref = Xorshift32(seed)
    shift = src.frac_bits - dst.frac_bits
    for c, g in zip(codes.tolist(), got.tolist(), strict=True):
        v = fx.to_fraction(c, src) * (1 << dst.frac_bits)
        rnd = None
        if mode is Rounding.STOCHASTIC and shift > 0:
            s = ref.step()
            bits = s >> (32 - shift) if shift <= 32 else s << (shift - 32)
            rnd = Fraction(bits, 1 << shift)
        want = oracle_overflow(oracle_round(v, mode if shift > 0 else Rounding.TRUNCATE, rnd), dst, ov)
        assert g == want, (c, src, dst, mode, ov)


def test_resize_error_mode_names_the_value():
    with pytest.raises(UserError, match="weights: code 300 does not fit Q4.4"):
        fx.resize([300 << 2], QFormat(8, 6), QFormat(4, 4), "truncate", "error", what="weights")


# --- exact arithmetic ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.data(), fa=formats(), fb=formats())
def test_mul_is_exact_and_fits_its_format(data, fa, fb):
    a = data.draw(codes_in(fa, 1))
    b = data.draw(codes_in(fb, 1))
    p, fp = fx.mul(a, fa, b, fb)
    assert fx.to_fraction(int(p[0]), fp) == fx.to_fraction(int(a[0]), fa) * fx.to_fraction(int(b[0]), fb)
    assert fp.contains(p).all()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), fa=formats(), fb=formats())
def test_add_and_sub_are_exact_and_fit_their_format(data, fa, fb):
    a = data.draw(codes_in(fa, 1))
    b = data.draw(codes_in(fb, 1))
    s, fs = fx.add(a, fa, b, fb)
    d, fd = fx.sub(a, fa, b, fb)
    va, vb = fx.to_fraction(int(a[0]), fa), fx.to_fraction(int(b[0]), fb)
    assert fx.to_fraction(int(s[0]), fs) == va + vb
    assert fx.to_fraction(int(d[0]), fd) == va - vb
    assert fs.contains(s).all() and fd.contains(d).all()


@settings(max_examples=200, deadline=None)
@given(data=st.data(), fa=formats(max_width=18, signed=True), fb=formats(max_width=18, signed=True),
       extra=st.integers(0, 8), guard=st.integers(-6, 8))
def test_dot_and_mac_wrap_exactly_in_the_accumulator(data, fa, fb, extra, guard):
    n = data.draw(st.integers(1, 12))
    a = np.array(data.draw(st.lists(st.integers(fa.min_code, fa.max_code), min_size=n, max_size=n)))
    b = np.array(data.draw(st.lists(st.integers(fb.min_code, fb.max_code), min_size=n, max_size=n)))
    fp = fx.product_format(fa, fb)
    facc = QFormat(max(fp.int_bits + guard, 1), fp.frac_bits + extra)
    got = int(fx.dot(a, fa, b, fb, facc))
    pairs = zip(a.tolist(), b.tolist(), strict=True)
    exact = sum(fx.to_fraction(x, fa) * fx.to_fraction(y, fb) for x, y in pairs)
    code = exact * (1 << facc.frac_bits)
    assert code.denominator == 1
    assert got == oracle_overflow(int(code), facc, Overflow.WRAP)
    acc = np.int64(0)
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        acc = fx.mac(acc, facc, x, fa, y, fb)
    assert int(acc) == got
    # order independence: reversed and shuffled give the same bits
    assert int(fx.dot(a[::-1], fa, b[::-1], fb, facc)) == got


def test_matmul_equals_elementwise_dot():
    rng = np.random.default_rng(1)
    fa, fb, facc = QFormat(4, 12), QFormat(2, 14), QFormat(14, 26)
    A = rng.integers(fa.min_code, fa.max_code + 1, size=(5, 7))
    B = rng.integers(fb.min_code, fb.max_code + 1, size=(7, 3))
    C = fx.matmul(A, fa, B, fb, facc)
    for i in range(5):
        for j in range(3):
            assert C[i, j] == fx.dot(A[i], fa, B[:, j], fb, facc)
    with pytest.raises(UserError, match=r"\(5, 7\) @ \(3, 7\)"):
        fx.matmul(A, fa, B.T, fb, facc)


def test_accumulator_must_hold_the_product_fraction_bits():
    with pytest.raises(UserError, match="at least 26"):
        fx.dot([1], QFormat(4, 12), [1], QFormat(2, 14), QFormat(30, 20))


def test_xorshift32_known_sequence():
    # Marsaglia 2003, "Xorshift RNGs": seed 2463534242 gives 723471715 first
    r = Xorshift32(2463534242)
    assert r.step() == 723471715
    with pytest.raises(UserError, match="non-zero"):
        Xorshift32(0)
    bits = Xorshift32(7).draw(1000, 4)
    assert bits.min() >= 0 and bits.max() <= 15 and len(set(bits.tolist())) == 16


def test_stochastic_rounding_is_unbiased_on_average():
    f_src, f_dst = QFormat(4, 12), QFormat(4, 4)
    codes = np.full(20000, 3 * 256 + 64)  # 3.25 dst LSBs
    got = fx.resize(codes, f_src, f_dst, "stochastic", "saturate", Xorshift32(99))
    assert set(got.tolist()) == {3, 4}
    assert abs(got.mean() - 3.25) < 0.02
