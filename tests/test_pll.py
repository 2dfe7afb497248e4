"""The PLL divider search against the vendors' equations and limits, for every board's oscillator."""

from __future__ import annotations

import numpy as np
import pytest

from metafab.gen.boards import BOARDS
from metafab.hw.pll import LIMITS, pll_setting
from metafab.reference.errors import UserError


def _within(value, limits):
    return limits[0] - 1e-9 <= value <= limits[1] + 1e-9


def ecp5_outputs(fin):
    """Every EHXPLLL output from ``fin`` (TN1263: f_out = f_in * CLKFB_DIV / CLKI_DIV, VCO = f_out * CLKOP_DIV)."""
    lim, outs = LIMITS["ecp5"], set()
    for ci in range(1, 129):
        for fb in range(1, 81):
            out = fin * fb / ci
            if _within(fin / ci, lim["pfd"]) and _within(out, lim["out"]) and any(
                    _within(out * op, lim["vco"]) for op in range(1, 129)):
                outs.add(round(out, 9))
    return np.array(sorted(outs))


def ice40_outputs(fin):
    """Every SB_PLL40 SIMPLE-feedback output: f_in / (DIVR+1) * (DIVF+1) / 2**DIVQ."""
    lim, outs = LIMITS["ice40"], set()
    for r in range(16):
        for f in range(128):
            for q in range(1, 7):
                pfd, vco = fin / (r + 1), fin / (r + 1) * (f + 1)
                if _within(pfd, lim["pfd"]) and _within(vco, lim["vco"]) and _within(vco / 2**q, lim["out"]):
                    outs.add(round(vco / 2**q, 9))
    return np.array(sorted(outs))


def _check_equations(s):
    d, lim = s.dividers, LIMITS[s.family]
    if s.family == "ecp5":
        assert s.pfd_mhz == pytest.approx(s.in_mhz / d["CLKI_DIV"])
        assert s.out_mhz == pytest.approx(s.in_mhz * d["CLKFB_DIV"] / d["CLKI_DIV"])
        assert s.vco_mhz == pytest.approx(s.out_mhz * d["CLKOP_DIV"])
        assert d["CLKOP_CPHASE"] == d["CLKOP_DIV"] - 1
        assert 1 <= d["CLKI_DIV"] <= 128 and 1 <= d["CLKFB_DIV"] <= 80 and 1 <= d["CLKOP_DIV"] <= 128
    else:
        assert s.pfd_mhz == pytest.approx(s.in_mhz / (d["DIVR"] + 1))
        assert s.vco_mhz == pytest.approx(s.pfd_mhz * (d["DIVF"] + 1))
        assert s.out_mhz == pytest.approx(s.vco_mhz / 2 ** d["DIVQ"])
        assert 0 <= d["DIVR"] <= 15 and 0 <= d["DIVF"] <= 127 and 1 <= d["DIVQ"] <= 6
        # Lattice's FILTER_RANGE table for SIMPLE feedback
        want = next((v for bound, v in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)) if s.pfd_mhz < bound), 6)
        assert d["FILTER_RANGE"] == want
    for what, value in (("pfd", s.pfd_mhz), ("vco", s.vco_mhz), ("out", s.out_mhz)):
        assert _within(value, lim[what]), (what, value)


OSCILLATORS = sorted({(b.family, b.oscillator_mhz) for b in BOARDS.values()})


@pytest.mark.parametrize("family, fin", OSCILLATORS)
def test_every_request_gets_the_highest_pll_clock_at_or_below_it(family, fin):
    outputs = ecp5_outputs(fin) if family == "ecp5" else ice40_outputs(fin)
    lo, hi = LIMITS[family]["out"]
    for want in np.linspace(max(lo, outputs[0]), hi, 97):
        s = pll_setting(family, fin, float(want))
        _check_equations(s)
        best = outputs[outputs <= want + 1e-9].max()
        assert s.out_mhz == pytest.approx(best), want
        assert s.requested_mhz == pytest.approx(want)


def test_known_settings():
    s = pll_setting("ice40", 12, 24)
    assert (s.out_mhz, s.dividers) == (24.0, {"DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1})
    s = pll_setting("ecp5", 25, 100)
    assert s.out_mhz == 100.0 and s.in_mhz * s.dividers["CLKFB_DIV"] / s.dividers["CLKI_DIV"] == 100.0
    assert pll_setting("ecp5", 25, 88.02).out_mhz == 87.5  # 25 * 7 / 2
    assert pll_setting("ecp5", 25, 1000).out_mhz == 400.0  # the output's upper limit


@pytest.mark.parametrize(
    "family, fin, want, message",
    [
        ("ecp5", 25, 2, "clock 2 MHz is below what the ecp5 PLL makes from 25 MHz; valid: 3.125..400 MHz"),
        ("ice40", 12, 10, "clock 10 MHz is below what the ice40 PLL makes from 12 MHz; valid: 16..275 MHz"),
        ("ice40", 12, 16, "no ice40 PLL setting makes 16 MHz or less from 12 MHz; valid: 16.12..275 MHz"),
        ("ice40", 12, "fast", "clock 'fast' MHz must be a number"),
        ("ice40", 200, 50, "a 200 MHz oscillator is outside the ice40 PLL's input range 10..133 MHz"),
        ("gowin", 27, 50, "no PLL model for the 'gowin' family; valid: ecp5, ice40"),
    ],
)
def test_out_of_range_requests_name_the_range(family, fin, want, message):
    with pytest.raises(UserError) as info:
        pll_setting(family, fin, want)
    assert str(info.value) == message
