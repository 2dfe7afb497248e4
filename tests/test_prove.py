"""The front end's formal proof (``metafab prove``): it passes, it covers every status, and it can fail.

The full k-induction proofs take a few seconds each here, so the tests run
them as ``make prove`` does; the mutation tests give the machinery front
ends with a deliberate bug and expect FAIL with the broken rule named.
"""

from __future__ import annotations

import json

import pytest

from metafab.gen.formal import DEFAULT_DEPTH, ProofTask, find_tools, run_task
from metafab.hw.frontend_proof import MUTANTS
from metafab.reference.errors import ToolNotFoundError
from metafab.reference.protocol import Status


def _tools_missing() -> str:
    try:
        find_tools()
    except ToolNotFoundError as exc:
        return str(exc)
    return ""


pytestmark = pytest.mark.skipif(bool(_tools_missing()), reason=_tools_missing() or "tools found")


def _root(name):
    from metafab.sim.runner import build_root

    return build_root() / "test_prove" / name


@pytest.mark.parametrize("table", ["plain", "pipelined"])
def test_proof_by_induction_passes(table):
    doc = run_task(ProofTask(table, "prove"), depth=DEFAULT_DEPTH, root=_root("pass"))
    assert doc["result"] == "PASS", doc
    assert "failed" not in doc


@pytest.mark.parametrize("table", ["plain", "pipelined"])
def test_every_status_is_reachable(table):
    doc = run_task(ProofTask(table, "cover"), depth=DEFAULT_DEPTH, root=_root("cover"))
    assert doc["result"] == "PASS", doc
    assert {c["cover"] for c in doc["covers"] if c["reached"]} == {f"answer {s.name}" for s in Status}


@pytest.mark.parametrize(("mutant", "broken"), [
    ("loaded-only-when-delivered", "loaded"),
    ("valid-drops-early", "o.valid held until ready"),
])
def test_a_wrong_front_end_fails_the_proof(mutant, broken):
    doc = run_task(ProofTask("plain", "prove"), depth=12, root=_root(f"mutant-{mutant}"),
                   frontend_class=MUTANTS[mutant])
    assert doc["result"] == "FAIL", doc
    assert any(broken in f["assertion"] for f in doc["failed"]), doc["failed"]
    assert doc["trace"].endswith(".vcd")


def test_cli_json_and_exit_status(capsys, monkeypatch):
    from metafab.gen.cli import main
    from metafab.sim.runner import build_root

    monkeypatch.setenv("METAFAB_BUILD_DIR", str(build_root() / "test_prove" / "cli"))
    assert main(["prove", "--task", "plain-prove", "--depth", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [(t["task"], t["result"], t["depth"]) for t in doc["tasks"]] == [("plain-prove", "PASS", 4)]
    assert doc["tasks"][0]["seconds"] > 0

    assert main(["prove", "--task", "plain-prove", "--mutant", "valid-drops-early", "--depth", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "failed: o.valid held until ready" in out and "counterexample trace:" in out


def test_missing_solver_is_a_user_error(capsys, monkeypatch):
    import metafab.gen.formal as formal
    from metafab.gen.cli import main

    monkeypatch.setattr(formal, "TOOLS", {**formal.TOOLS, "no-such-solver-smt2": "no-such-solver"})
    assert main(["prove"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-solver-smt2 not found" in err[0], err
