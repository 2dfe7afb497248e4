"""The ``match`` engine on the metafab command line: generate, sim, verify, study, and user mistakes."""

from __future__ import annotations

import json

import pytest

from metafab.gen.cli import main

from .conftest import requires_icarus

SMALL = ["--ways", "3", "--shots", "2", "--dim", "10", "--lanes", "4"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_match_is_deterministic(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        code, _, err = run_cli(capsys, "generate", "match", "--mode", "proto", *SMALL, "-o", str(d))
        assert code == 0, err
    files = sorted(p.name for p in a.iterdir())
    assert files == ["expected.hex", "load.hex", "manifest.json", "match-proto-3w2s-d10-p4.core", "match_engine.v",
                     "match_engine_axis.v", "match_engine_axis_tb.v", "query.hex", "request.hex"]
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    man = json.loads((a / "manifest.json").read_text())
    assert man["engine"] == "match" and man["config"]["mode"] == "proto" and man["config"]["lanes"] == 4
    assert man["protocol"]["request_words"] == {"LOAD": 6 * 11, "RUN": 5, "STATUS": 0}  # two codes a word
    assert man["query_pack"] == 2
    assert man["protocol"]["response_words"]["RUN"] == 4
    assert len((a / "load.hex").read_text().split()) == 6 * 11
    assert len((a / "query.hex").read_text().split()) == 5
    assert man["cycles"]["latency"] > man["cycles"]["issue_cycles"]
    assert "module match_engine" in (a / "match_engine.v").read_text()
    wrapper = (a / "match_engine_axis.v").read_text()
    assert "module match_engine_axis" in wrapper and "match_engine engine (" in wrapper
    core = (a / "match-proto-3w2s-d10-p4.core").read_text()
    assert "match_engine.v" in core and "match_engine_axis.v" in core and "toplevel: match_engine_axis" in core


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["generate", "match", "--layers", "1-8-1"], "--layers does not apply to the match engine; it is an "
                                                     "option of the maml"),
        (["generate", "match", "--ways", "0"], "n_way must be in 1..64, got 0"),
        (["generate", "match", "--lanes", "12"], "lanes must be a power of two"),
        (["generate", "match", "--set", "exp_range=3"], "exp_range must be a power of two"),
        (["generate", "match", "--set", "colour=3"], "unknown MatchConfig key(s) 'colour'"),
        (["verify", "match", "--ways", "20", "--features", "embedding"], "embedding features need dim 64"),
        (["verify", "match", *SMALL, "--queries", "0"], "--queries must be at least 1, got 0"),
        (["build", "match", "--board", "de0-nano"], "unknown board 'de0-nano'"),
    ],
)
def test_match_user_mistakes_get_one_line_and_status_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_match_config_from_toml(capsys, tmp_path):
    f = tmp_path / "d.toml"
    f.write_text('[maml]\nlanes = 2\n[match]\nmode = "proto"\nn_way = 3\nk_shot = 2\ndim = 10\nlanes = 8\n'
                 'exp_table_bits = 10\n')
    code, _, err = run_cli(capsys, "generate", "match", "--config", str(f), "-o", str(tmp_path / "o"))
    assert code == 0, err
    cfg = json.loads((tmp_path / "o" / "manifest.json").read_text())["config"]
    assert (cfg["mode"], cfg["lanes"], cfg["exp_table_bits"]) == ("proto", 8, 10)


@requires_icarus
def test_verify_match_small_design_json(capsys):
    code, out, err = run_cli(capsys, "verify", "match", *SMALL, "--queries", "20", "--features", "random",
                             "--sim", "icarus", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mismatches"] == 0 and doc["rtl_equals_fixed"] and doc["cycles_match_model"]
    assert doc["queries"] == 45 and doc["episodes"] == 1  # 3 ways x 15 queries
    assert doc["ii_measured"] == doc["ii_model"] and doc["latency_measured"] == [doc["latency_model"]]
    acc = doc["accuracy"]
    assert acc["rtl"] == acc["fixed"] and abs(acc["fixed"] - acc["float64"]) <= 0.05
    code, out, _ = run_cli(capsys, "sim", "match", *SMALL, "--episodes", "1", "--features", "random", "--sim",
                           "icarus")
    assert code == 0 and "mismatches against the reference: 0" in out


def test_study_match_precision_runs(capsys):
    code, out, err = run_cli(capsys, "study", "match-precision", "--episodes", "3", "--features", "pixels")
    assert code == 0, err
    assert "| pixels | matching | 1 |" in out and "| W=16 |" in out.splitlines()[0] + " |"
    code, out, _ = run_cli(capsys, "study", "match-precision", "--episodes", "2", "--features", "pixels",
                           "--json")
    doc = json.loads(out)
    assert {r["variant"] for r in doc["rows"]} >= {"W=8", "W=16", "table 1/x"}
