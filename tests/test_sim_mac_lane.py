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


def test_models_reuse_the_shared_simulator_run_time(mac_designs, tmp_path):
    """A new model copies Verilator's run-time objects through the make hook, compiles its own code
    with the bounded -O1 options, and still matches the reference."""
    import secrets

    from metafab.sim.runner import prepare_verilator

    runtime = prepare_verilator()
    cfg, verilog, fields = mac_designs["default"]
    fresh = f"// build {secrets.token_hex(8)}\n{verilog}"  # a new digest: a build of its own
    params = dict(config=cfg.to_dict(), in_fields=fields, packets=60, max_len=5, seed=5,
                  idle=0.2, backpressure=0.2)
    r = run_bench(verilog=fresh, toplevel="mac_lane", bench="metafab.sim.benches.mac_lane",
                  params=params, run_name="test-runtime")
    try:
        assert not r.cached and r.data["mismatches"] == 0 and r.data["outputs"] == 60
        log = (r.build_dir / "build.log").read_text()
        hook = str(runtime / "objcache.sh")
        compiles = [line for line in log.splitlines() if " -c " in line or "-x c++-header" in line]
        runtime_lines = [line for line in compiles if "verilated_vpi.cpp" in line or "verilated.cpp" in line]
        assert runtime_lines and all(line.startswith(hook) for line in runtime_lines)
        assert any("-fno-tree-dse" in line and " Vtop" in line for line in compiles)
        for name in ("verilated.o", "verilated_vpi.o"):
            assert (r.build_dir / name).read_bytes() == (runtime / name).read_bytes()
    finally:
        import shutil

        shutil.rmtree(r.build_dir, ignore_errors=True)


def test_the_make_hook_hands_out_run_time_objects_and_runs_other_compiles(tmp_path):
    """The OBJCACHE hook: a run-time object is copied (the compiler is not run); anything else runs."""
    import subprocess

    from metafab.sim.runner import _OBJCACHE_SCRIPT

    shared, work = tmp_path / "shared", tmp_path / "work"
    shared.mkdir()
    work.mkdir()
    hook = shared / "objcache.sh"
    hook.write_text(_OBJCACHE_SCRIPT)
    (shared / "verilated.o").write_bytes(b"object")
    (shared / "verilated.d").write_text("verilated.o: verilated.cpp\n")

    def run(*cmd):
        return subprocess.run(["sh", str(hook), *cmd], cwd=work, capture_output=True, text=True).returncode

    assert run("false", "-O1", "-c", "-o", "verilated.o", "verilated.cpp") == 0
    assert (work / "verilated.o").read_bytes() == b"object" and (work / "verilated.d").exists()
    assert run("false", "-c", "-o", "verilated_vpi.o", "verilated_vpi.cpp") == 1  # not shared: compiled
    assert run("false", "-c", "Vtop.cpp") == 1
    assert run("sh", "-c", "echo made > out.txt") == 0 and (work / "out.txt").read_text() == "made\n"
