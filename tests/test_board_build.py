"""Board builds report the clock the bitstream runs at: the PLL's frequency, Fmax, timing PASS/FAIL, device
utilisation in percent, the link; a failing build exits 1, and --clock-mhz auto finds a clock that passes.

The design is the test-only echo engine's board top on the iCEBreaker (a build of a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metafab.gen.cli import main
from metafab.gen.engines import register_engine, unregister_engine
from metafab.hw.pll import pll_setting

from .echo_engine import EchoEngine

pytestmark = pytest.mark.slow


def build(capsys, *argv):
    code = main(["build", *argv, "--board", "icebreaker", "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_build_reports_the_pll_clock_timing_and_device_percentages(echo, capsys):
    code, r, err = build(capsys, "echo")
    assert code == 0, err
    want = pll_setting("ice40", 12, echo.default_clock_mhz("ice40"))
    assert r["clock_source"] == "pll" and r["clock_mhz"] == pytest.approx(want.out_mhz)
    assert r["constraint_mhz"] == pytest.approx(want.out_mhz)  # nextpnr's constraint is the PLL's real output
    assert r["pll"]["dividers"] == want.dividers
    assert r["timing"] == ("PASS" if r["fmax_mhz"] >= r["constraint_mhz"] else "FAIL") == "PASS"
    assert r["utilisation"]["ICESTORM_PLL"]["used"] == 1
    for cell, e in r["utilisation"].items():
        assert e["percent"] == round(100 * e["used"] / e["available"], 1), cell
    assert r["critical_path_ns"] > 0 and r["critical_path_from"] and r["critical_path_to"]
    assert r["nextpnr"] and r["yosys"].startswith("Yosys")
    # the link: RUN request and response bytes (header + 4 words each) at 10 bits a byte, plus the engine
    for baud in (115200, 12_000_000):
        link = r["link"][str(baud)]
        assert link["request_bytes"] == link["response_bytes"] == 4 * (1 + 4)
        assert link["total_us"] == pytest.approx(40 * 10 / baud * 1e6 + 1 / r["clock_mhz"], abs=2e-3)
    folder = Path(r["build_dir"])
    assert json.loads((folder / "report.json").read_text())["timing"] == "PASS"
    assert "timing PASS" in (folder / "report.md").read_text()
    assert "report: " in err and "routing (" in err  # the phases, with elapsed time


def test_a_build_that_misses_its_clock_exits_1(echo, capsys):
    code, r, err = build(capsys, "echo", "--clock-mhz", "150")
    assert code == 1 and r["timing"] == "FAIL" and r["fmax_mhz"] < r["clock_mhz"] == 150
    assert "timing FAIL" in err
    code, r, _ = build(capsys, "echo", "--clock-mhz", "150", "--allow-timing-fail")
    assert code == 0 and r["timing"] == "FAIL"


class _FastEcho(EchoEngine):
    name = "echo-fast"
    default_clock = {"ice40": 150.0, "ecp5": 400.0}


def test_clock_auto_rebuilds_at_a_pll_clock_below_fmax(echo, capsys):
    """Each rebuild is at the highest PLL clock at or below the previous build's Fmax, until timing passes or
    the tries run out (place and route decides which: a build at a PLL clock just under the last Fmax may
    miss it by a little, so the verdict of the last try is reported, not assumed)."""
    fast = register_engine(_FastEcho())
    try:
        code, r, err = build(capsys, "echo-fast", "--clock-mhz", "auto", "--allow-timing-fail")
    finally:
        unregister_engine(fast.name)
    assert code == 0, err
    tries = r["tries"]
    assert tries[0]["clock_mhz"] == 150 and tries[0]["timing"] == "FAIL" and 2 <= len(tries) <= 3
    for before, after in zip(tries, tries[1:], strict=False):
        assert before["timing"] == "FAIL"
        want = pll_setting("ice40", 12, min(before["fmax_mhz"], before["clock_mhz"] * 0.99)).out_mhz
        assert after["clock_mhz"] == pytest.approx(want, rel=1e-3) and after["clock_mhz"] <= before["fmax_mhz"]
    assert r["clock_mhz"] == tries[-1]["clock_mhz"] and r["timing"] == tries[-1]["timing"]
    assert len(tries) == 3 or r["timing"] == "PASS"
    assert "timing fails at 150 MHz" in err


def test_bad_clock_and_baud_are_one_line(echo, capsys):
    assert main(["build", "echo", "--board", "icebreaker", "--clock-mhz", "5"]) == 2
    err = capsys.readouterr().err
    assert "clock 5 MHz is below what the ice40 PLL makes from 12 MHz; valid: 16..275 MHz" in err
    assert main(["build", "echo", "--board", "ulx3s-85f", "--baud", "6000000"]) == 2
    err = capsys.readouterr().err
    assert "baud rate 6000000 is not one the ulx3s-85f's FT231X runs; valid: 300..3000000" in err
    assert main(["build", "echo", "--board", "icebreaker", "--clock-mhz", "fast"]) == 2
    assert "'fast' is neither a number of MHz nor 'auto'" in capsys.readouterr().err
