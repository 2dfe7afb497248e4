"""The MAC lane's Verilog under cocotb (Verilator and Icarus) against the reference."""

from __future__ import annotations

import pytest

from metafab.gen.export import layout_fields, to_verilog
from metafab.hw.fixed import MacLane
from metafab.reference.config import MacLaneConfig
from metafab.reference.errors import ToolNotFoundError, UserError
from metafab.sim.runner import SimulationFailed, run_bench

from .conftest import requires_icarus

CONFIGS = {
    "default": MacLaneConfig(),
    "odd-truncate-wrap": MacLaneConfig(a_fmt="Q3.8", b_fmt="Q1.12", acc_fmt="Q6.20", out_fmt="Q3.5",
                                       rounding="truncate", overflow="wrap"),
    "stochastic": MacLaneConfig(a_fmt="Q2.16", b_fmt="Q2.16", acc_fmt="Q10.32", out_fmt="Q4.12",
                                rounding="stochastic", seed=77),
}


@pytest.fixture(scope="session")
def mac_designs():
    """Verilog and input layout of each MAC-lane config, converted once per session."""
    out = {}
    for name, cfg in CONFIGS.items():
        dut = MacLane(config=cfg)
        out[name] = (cfg, to_verilog(dut, "mac_lane"), layout_fields(dut.in_layout))
    return out


def _run(mac_designs, name, sim, **over):
    cfg, verilog, fields = mac_designs[name]
    params = dict(config=cfg.to_dict(), in_fields=fields, packets=400, max_len=9, seed=11,
                  idle=0.25, backpressure=0.35)
    params.update(over)
    return run_bench(verilog=verilog, toplevel="mac_lane", bench="metafab.sim.benches.mac_lane",
                     params=params, sim=sim, run_name=f"test-{name}")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mac_lane_verilator_bit_exact_with_backpressure(mac_designs, name):
    r = _run(mac_designs, name, "verilator")
    assert r.data["outputs"] == 400 and r.data["mismatches"] == 0
    # back-pressure and idle cycles were really applied: more cycles than beats
    assert r.data["cycles"] > r.data["beats"]


@requires_icarus
@pytest.mark.parametrize("name", list(CONFIGS))
def test_mac_lane_icarus_bit_exact_with_backpressure(mac_designs, name):
    r = _run(mac_designs, name, "icarus")
    assert r.data["outputs"] == 400 and r.data["mismatches"] == 0


def test_a_wrong_design_fails_the_bench(mac_designs):
    """The scoreboard catches a lane whose rounding differs from the reference's."""
    cfg = mac_designs["default"][0]
    wrong = MacLaneConfig.from_dict({**cfg.to_dict(), "rounding": "truncate"})
    dut = MacLane(config=wrong)
    params = dict(config=cfg.to_dict(), in_fields=layout_fields(dut.in_layout), packets=100,
                  max_len=5, seed=3, idle=0.0, backpressure=0.0)
    with pytest.raises(SimulationFailed, match="mismatching outputs"):
        run_bench(verilog=to_verilog(dut, "mac_lane"), toplevel="mac_lane",
                  bench="metafab.sim.benches.mac_lane", params=params, run_name="test-wrong")


def test_second_run_reuses_the_build(mac_designs):
    a = _run(mac_designs, "default", "verilator", packets=20)
    b = _run(mac_designs, "default", "verilator", packets=20)
    assert b.cached and a.build_dir == b.build_dir


def test_unknown_simulator_is_a_user_error(mac_designs):
    with pytest.raises(UserError, match="unknown simulator 'modelsim'; valid: verilator, icarus"):
        _run(mac_designs, "default", "modelsim")


def test_missing_simulator_names_the_install_command(mac_designs, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolNotFoundError, match="apt-get install -y iverilog"):
        _run(mac_designs, "default", "icarus")
