"""The Engine registry: a third engine, registered by the test suite alone, runs through the real CLI."""

from __future__ import annotations

import json

import pytest

from metafab.gen import flow
from metafab.gen.cli import main
from metafab.gen.engines import engine_names, get_engine, register_engine
from metafab.reference.errors import UserError

from .conftest import icarus_available
from .echo_engine import ENGINE, EchoConfig, reference

SIM = "icarus" if icarus_available() else "verilator"


def test_the_builtin_engines_are_registered():
    assert engine_names()[:4] == ("maml", "maml-cls", "match", "fewshot")
    assert get_engine("maml").toplevel == "maml_engine" and get_engine("maml-cls").toplevel == "maml_cls_engine"
    with pytest.raises(UserError, match="unknown engine 'nope'; valid: maml, maml-cls, match, fewshot"):
        get_engine("nope")


def test_a_second_engine_of_the_same_name_is_refused(echo):
    class Other(type(echo)):
        pass

    with pytest.raises(ValueError, match="registered already"):
        register_engine(Other())


def test_help_lists_the_registered_engines(echo, capsys):
    assert main(["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "maml" in out and "match" in out and "echo" in out and "test-only engine" in out


def test_echo_engine_generate_sim_verify_through_the_cli(echo, capsys, tmp_path):
    out = tmp_path / "echo"
    assert main(["generate", "echo", "--words", "3", "--offset", "5", "-o", str(out)]) == 0
    capsys.readouterr()
    man = json.loads((out / "manifest.json").read_text())
    assert man["engine"] == "echo" and man["config"] == {"words": 3, "offset": 5}
    assert man["protocol"]["request_words"]["RUN"] == 3 and man["protocol"]["response_words"]["RUN"] == 3
    assert "module echo_engine" in (out / "echo_engine.v").read_text()
    assert (out / "echo_engine_axis.v").exists() and (out / "echo-w3-o5.core").exists()

    assert main(["sim", "echo", "--words", "3", "--offset", "5", "--requests", "2", "--sim", SIM, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    requests = ENGINE._requests(EchoConfig(words=3, offset=5), 2, 0)
    # the independent expectation: each word plus the offset, mod 2**32
    assert doc["responses"] == [[(w + 5) % 2**32 for w in r] for r in requests]

    assert main(["verify", "echo", "--words", "3", "--requests", "20", "--sim", SIM, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["engine"] == "echo" and rep["requests"] == 20 and rep["mismatches"] == 0
    assert rep["output_words"] == 60


def test_the_echo_bench_catches_a_wrong_engine(echo):
    """The scoreboard is not blind: an engine that adds the wrong offset fails verification."""
    from metafab.sim.runner import SimulationFailed

    cfg = EchoConfig(words=2, offset=1)
    wrong = flow.engine_verilog(echo, cfg.replace(offset=2))
    with pytest.raises(SimulationFailed, match="6 mismatching output words"):
        flow.verify(echo, cfg, count=3, sim=SIM, verilog=wrong)
    assert reference([1, 2], cfg) == [2, 3]


def test_flags_of_the_echo_engine_do_not_apply_to_others(echo, capsys):
    assert main(["verify", "maml", "--words", "3"]) == 2
    err = capsys.readouterr().err
    assert "--words does not apply to the maml engine; it is an option of the echo engine" in err


@pytest.mark.parametrize("name", ["maml", "maml-cls", "match", "fewshot"])
def test_item_i_of_a_seed_is_the_same_whatever_the_count(name):
    engine = get_engine(name)
    cfg = engine.config_from_dict({})
    few = engine.verify_workload(cfg, count=engine.count_default // 50, seed=3).items
    many = engine.verify_workload(cfg, count=engine.count_default // 10, seed=3).items
    assert len(many) > len(few) >= 1
    assert many[: len(few)] == few
