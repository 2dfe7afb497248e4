"""Real builds with the YoWASP tools: a registered 16x16 MAC on iCE40 UP5K and ECP5-85F.

These run Yosys and nextpnr (a few seconds each once the WebAssembly is
cached) in the repository's git-ignored ``build/`` folder, never under /tmp.
They check that the result dict is complete and sane, not timing figures.
"""

import json
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from metafab.gen.synth import FAMILY_TOOLS, build, find_tool
from metafab.reference.errors import ToolNotFoundError, UserError

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "tests" / "synth"


class Mac16(wiring.Component):
    """A throwaway registered MAC: ``acc += a * b`` (16x16 -> 32 bits), product registered."""

    a: In(signed(16))
    b: In(signed(16))
    valid: In(1)
    acc: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        product = Signal(signed(32))
        product_valid = Signal()
        m.d.sync += [product.eq(self.a * self.b), product_valid.eq(self.valid)]
        with m.If(product_valid):
            m.d.sync += self.acc.eq(self.acc + product)
        return m


class ParallelMultipliers(wiring.Component):
    """``count`` independent registered 16x16 multipliers: one DSP block each."""

    def __init__(self, count):
        self._count = count
        super().__init__({
            "a": In(signed(16)).array(count),
            "b": In(signed(16)).array(count),
            "p": Out(signed(32)).array(count),
        })

    def elaborate(self, platform):
        m = Module()
        for k in range(self._count):
            m.d.sync += self.p[k].eq(self.a[k] * self.b[k])
        return m


def require_tools(family):
    try:
        for tool in FAMILY_TOOLS[family]:
            find_tool(tool)
    except ToolNotFoundError as exc:
        pytest.skip(f"synthesis tool missing: {exc}")


def check_result(result, *, board, family, device, bitstream_suffix):
    assert result["board"] == board
    assert result["family"] == family
    assert result["device"] == device
    assert result["fmax_mhz"] > 0
    assert result["constraint_mhz"] > 0
    assert result["clock"]
    assert result["dsp"] >= 1
    assert result["lut"] > 0
    # the harness alone registers every input and output bit twice
    assert result["ff"] >= 32
    assert result["harness"] == {"in_bits": 34, "out_bits": 32, "ff": 132}
    assert result["bram"] == 0
    for cell, entry in result["utilisation"].items():
        assert 0 < entry["used"] <= entry["available"], cell
    assert result["critical_path"], "no critical path for the harness clock"
    assert all(step["delay_ns"] >= 0 for step in result["critical_path"])
    assert result["critical_path_ns"] == pytest.approx(
        sum(step["delay_ns"] for step in result["critical_path"]), abs=1e-3
    )
    assert result["cells"]
    bitstream = Path(result["bitstream"])
    assert bitstream.suffix == bitstream_suffix
    assert bitstream.is_file() and bitstream.stat().st_size > 1000
    assert result["seconds"] >= result["tool_seconds"] > 0
    assert json.loads(json.dumps(result)) == result  # one JSON document for `--json`


@pytest.mark.slow
def test_mac16_on_icebreaker():
    require_tools("ice40")
    lines = []
    result = build(Mac16(), "icebreaker", name="mac16", build_dir=BUILD_ROOT / "mac16-icebreaker",
                   progress=lines.append)
    check_result(result, board="icebreaker", family="ice40", device="iCE40UP5K",
                 bitstream_suffix=".bin")
    assert result["utilisation"]["ICESTORM_DSP"] == {"used": 1, "available": 8, "percent": 12.5}
    assert result["timing"] == ("PASS" if result["fmax_mhz"] >= 100.0 else "FAIL")
    assert result["constraint_mhz"] == 100.0
    assert any("Fmax" in line for line in lines)


@pytest.mark.slow
def test_mac16_on_ulx3s_85f():
    require_tools("ecp5")
    result = build(Mac16(), "ulx3s-85f", name="mac16", build_dir=BUILD_ROOT / "mac16-ulx3s-85f",
                   target_mhz=200, progress=None)
    check_result(result, board="ulx3s-85f", family="ecp5", device="LFE5U-85F",
                 bitstream_suffix=".bit")
    assert result["utilisation"]["MULT18X18D"]["used"] == 1
    assert result["constraint_mhz"] == 200.0


@pytest.mark.slow
def test_design_that_does_not_fit_names_the_overflowing_resource():
    require_tools("ice40")
    # UP5K has 8 SB_MAC16 DSP blocks: 9 independent multipliers cannot fit.
    with pytest.raises(UserError, match=r"does not fit iCE40UP5K.*9 ICESTORM_DSP.*has 8"):
        build(ParallelMultipliers(9), "icebreaker", name="dsp9",
              build_dir=BUILD_ROOT / "dsp9-icebreaker", progress=None)
