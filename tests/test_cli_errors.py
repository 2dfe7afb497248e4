"""Every bad input through the real CLI: one line on stderr, exit status 2, no traceback, no folder left."""

from __future__ import annotations

import pytest

from metafab.gen.cli import main


def one_line(capsys, argv, fragment, code=2, progress=False):
    """The command fails with ``code`` and one error line (the last; before it only progress lines when
    ``progress``) that holds ``fragment``."""
    got = main(list(argv))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert got == code, err
    assert "Traceback" not in err and [x for x in lines if ": error: " in x] == lines[-1:], err
    assert fragment in lines[-1], err
    assert progress or len(lines) == 1, err
    return err


@pytest.fixture
def build(tmp_path, monkeypatch):
    """A fresh build folder: nothing may appear in it on a refused command."""
    root = tmp_path / "build"
    monkeypatch.setenv("METAFAB_BUILD_DIR", str(root))
    return root


def _nothing_under(path):
    return not path.exists() or not any(path.rglob("*"))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["generate", "maml", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["verify", "maml", "--seed", "-3"], "argument --seed: must be at least 0, got -3"),
        (["sim", "match", "--seed", "x"], "argument --seed: 'x' is not a whole number"),
        (["verify", "maml", "--ways", "3"], "--ways does not apply to the maml engine; it is an option of the "
                                            "maml-cls, match and fewshot engines"),
        (["sim", "maml", "--features", "pixels"], "--features does not apply to the maml engine"),
        (["verify", "match", "--tasks", "3"], "--tasks does not apply to the match engine; it is an option of "
                                              "the maml"),
        (["generate", "match", "--k-support", "3"], "--k-support does not apply to the match engine"),
        (["generate", "maml", "--layers", "1-400-400-1"],
         "a LOAD request would carry 161601 words (the 161601 weights and biases of layers 1-400-400-1); "
         "a packet holds at most 65535"),
        (["generate", "maml", "--layers", "16-4-16", "--queries", "4096"], "a RUN request would carry 65856 words"),
        (["generate", "maml", "--set", "forward_rounding=sideways"], "sideways"),
        (["generate", "match", "--set", "rounding=half_even"], "unknown MatchConfig key(s) 'rounding'"),
        (["verify", "nope"], "invalid choice: 'nope'"),
        (["generate", "maml", "stray"], "unrecognized arguments: stray"),
    ],
)
def test_bad_values_and_flags(capsys, build, argv, fragment):
    one_line(capsys, argv, fragment)
    assert _nothing_under(build)


def test_output_path_under_a_file(capsys, build, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    one_line(capsys, ["generate", "maml", "-o", str(f / "sub")], "exists and is not a folder")
    one_line(capsys, ["generate", "match", "-o", str(f)], "exists and is not a folder")
    assert f.read_text() == "x" and _nothing_under(build)


def test_output_path_that_cannot_be_made(capsys, build):
    one_line(capsys, ["generate", "maml", "--layers", "1-4-1", "--lanes", "2", "-o", "/proc/metafab-out"],
             "cannot use '/proc/metafab-out'", progress=True)


def test_build_folder_that_is_a_file(capsys, tmp_path, monkeypatch):
    f = tmp_path / "build-file"
    f.write_text("")
    monkeypatch.setenv("METAFAB_BUILD_DIR", str(f))
    one_line(capsys, ["generate", "maml", "--layers", "1-4-1", "--lanes", "2"], "is not a folder")
    assert f.read_text() == ""


def test_config_files(capsys, build, tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('lanes = 4\n# caf\xe9\n'.encode("latin-1"))
    one_line(capsys, ["generate", "maml", "--config", str(bad)], "is not UTF-8 text")
    typo = tmp_path / "typo.toml"
    typo.write_text("[mamll]\nlanes = 4\n")
    one_line(capsys, ["generate", "maml", "--config", str(typo)],
             "table [mamll] names no engine; valid tables: [maml], [maml-cls], [match]")
    beside = tmp_path / "beside.toml"
    beside.write_text("lanes = 4\n[maml]\nsteps = 2\n")
    one_line(capsys, ["generate", "maml", "--config", str(beside)], "top-level keys lanes beside the [maml] table")
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    one_line(capsys, ["generate", "maml", "--config", str(folder)], "cannot read config file")
    assert _nothing_under(build)


def test_weights_files_that_are_not_archives(capsys, build, tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    one_line(capsys, ["study", "sinusoid", "--maml", str(empty), "--tasks", "2"], "is not a metafab weights file")
    text = tmp_path / "text.npz"
    text.write_text("not an archive\n")
    one_line(capsys, ["study", "sinusoid", "--maml", str(text), "--tasks", "2"], "is not a metafab weights file")


def test_a_failed_simulation_is_one_line_with_its_log(capsys, build, monkeypatch):
    from metafab.gen import flow
    from metafab.sim.runner import SimulationFailed

    def broken(*args, **kwargs):
        raise SimulationFailed("1 of 1 cocotb test(s) failed in the bench; see /where/sim.log")

    monkeypatch.setattr(flow, "simulate", broken)
    one_line(capsys, ["sim", "maml", "--layers", "1-4-1", "--lanes", "2", "--tasks", "1"],
             "the simulation failed: 1 of 1 cocotb test(s) failed in the bench; see /where/sim.log", code=1,
             progress=True)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("metafab 0.")


def test_train_writes_under_the_build_folder(capsys, build):
    assert main(["train", "sinusoid", "--iterations", "2"]) == 0
    err = capsys.readouterr().err
    written = list((build / "weights").glob("*.npz"))
    assert len(written) == 1 and str(written[0]) in err
