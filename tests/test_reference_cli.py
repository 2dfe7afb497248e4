"""``metafab train`` and ``metafab study``: tiny runs, reproducible files, one-line errors."""

import json

import pytest

from metafab.gen.cli import main
from metafab.reference import weights


def test_train_sinusoid_writes_a_reproducible_file(tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["train", "sinusoid", "--iterations", "2", "--out", str(a)]) == 0
    assert main(["train", "sinusoid", "--iterations", "2", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    meta = weights.load(a).metadata
    assert meta["iterations"] == 2 and meta["seed"] == 0 and meta["inner_lr"] == 0.01
    assert meta["command"] == (
        "metafab train sinusoid --method maml --layers 1-40-40-1 --seed 0 --iterations 2 "
        "--meta-batch 25 --k-shot 10 --k-query 10 --inner-steps 1 --inner-lr 0.01 "
        "--meta-lr 0.001"
    )
    assert "wrote" in capsys.readouterr().err


def test_train_digits_writes_an_embedding(tmp_path):
    out = tmp_path / "e.npz"
    assert (
        main(["train", "digits", "--iterations", "2", "--layers", "64-16-8", "--out", str(out)])
        == 0
    )
    assert [w.shape for w, _ in weights.load(out).params] == [(16, 64), (8, 16)]


def test_train_glyphs_writes_a_reproducible_classifier(tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    argv = ["train", "glyphs", "--iterations", "3", "--meta-batch", "2", "--inner-steps", "1", "--layers",
            "256-12-5", "--anil"]
    assert main([*argv, "--out", str(a)]) == 0
    assert main([*argv, "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    w = weights.load(a)
    assert [p[0].shape for p in w.params] == [(12, 256), (5, 12)]
    meta = w.metadata
    assert meta["kind"] == "glyphs-classifier" and meta["anil"] is True and meta["adapted_layers"] == [1]
    assert meta["command"] == ("metafab train glyphs --method fomaml --layers 256-12-5 --seed 0 --iterations 3 "
                               "--meta-batch 2 --k-shot 1 --n-query 15 --inner-steps 1 --inner-lr 0.4 "
                               "--meta-lr 0.001 --anil")
    assert 0 <= meta["validation_accuracy"] <= 100 and "validation accuracy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "glyphs", "--layers", "256-16-1"], "--layers"),
        (["train", "glyphs", "--layers", "64-16-5"], "--layers"),
        (["train", "glyphs", "--method", "reptile", "--inner-steps", "0"], "--inner-steps"),
        (["train", "sinusoid", "--iterations", "-1"], "--iterations"),
        (["train", "sinusoid", "--inner-lr", "nan"], "--inner-lr"),
        (["train", "sinusoid", "--layers", "2-40-1"], "--layers"),
        (["train", "digits", "--k-shot", "0"], "--k-shot"),
        (["study", "sinusoid", "--tasks", "0"], "--tasks"),
        (["study", "digits", "--embedding", "/nonexistent.npz"], "/nonexistent.npz"),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, flag, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and err.startswith("metafab ")


def test_study_sinusoid_json_is_one_document(capsys):
    assert main(["study", "sinusoid", "--tasks", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "sinusoid" and len(doc["rows"]) == 3 * 2 * 3


def test_study_digits_prints_a_markdown_table(capsys):
    assert main(["study", "digits", "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| features | read-out |") and len(lines) == 6


def test_study_glyphs_cls_compares_float64_and_fixed_point(capsys):
    assert main(["study", "glyphs-cls", "--episodes", "3", "--methods", "anil", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["method"], r["k_shot"], r["steps"]): r for r in doc["rows"]}
    from metafab.reference import glyphs

    for k in (1, 5):
        # the raw-pixel row is the dataset's own baseline function on the same episodes
        mean, half = glyphs.prototype_baseline(n_way=5, k_shot=k, n_query=15, n_episodes=3, seed=2017)
        proto = rows[("ProtoNet, raw pixels", k, 0)]
        assert proto["fixed"] is None and proto["float64"] == pytest.approx(mean) and proto["float64_ci95"] == \
            pytest.approx(half)
        assert ("Matching, raw pixels", k, 0) in rows
        for steps in (1, 5):  # one step and the steps it was meta-trained with
            r = rows[("anil", k, steps)]
            assert 0 <= r["fixed"] <= 100 and 0 <= r["float64"] <= 100
            assert r["weights"].startswith("metafab train glyphs --method maml") and r["weights"].endswith("--anil")
    assert len(rows) == 8


def test_study_maml_cls_precision_table(capsys):
    assert main(["study", "maml-cls-precision", "--episodes", "2", "--widths", "12,16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| W (bits) | steps |") and len(lines) == 4
    assert main(["study", "maml-cls-precision", "--method", "nope"]) == 2
    assert "must be one of maml, fomaml, anil, reptile, pretrained" in capsys.readouterr().err
