"""Run a cocotb bench on generated Verilog, with Verilator or Icarus.

Builds go under ``<build root>/sim/<simulator>/<top>-<digest>/`` where the
digest hashes the Verilog text, the simulator's version and the wave option:
the same design is compiled once and reused by every later run (a marker
file records a finished build). Nothing is written into the source tree.
Verilator's run-time library is the same for every model: the first
finished build leaves its objects in ``<build root>/sim/verilator/runtime-<digest>/``
(:func:`prepare_verilator` makes them ahead of time), and later models copy
them through Verilator's ``OBJCACHE`` hook instead of compiling them again.

The Verilog is compiled exactly as given, the same text for both simulators and
the text ``metafab generate`` ships (:func:`metafab.gen.export.to_verilog`
prepares it for both): Icarus in cocotb's ``-g2012`` mode, Verilator with its
default warnings fatal.

A bench is a cocotb test module (``metafab.sim.benches.*``). It receives its
parameters as one JSON document in the environment variable
``METAFAB_BENCH`` and may write one JSON document of results to the path in
``METAFAB_BENCH_OUT``; :func:`run_bench` returns it. A failing cocotb test
raises :class:`SimulationFailed`.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from metafab.reference.errors import UserError
from metafab.sim.params import BENCH_ENV, BENCH_OUT_ENV
from metafab.sim.tools import find_simulator, verilator_env_path

__all__ = ["build_root", "SimulationFailed", "BenchResult", "run_bench", "prepare_verilator", "run_folder_tag",
           "BENCH_ENV", "BENCH_OUT_ENV"]

_BUILT_MARK = "metafab-built.ok"

#: Appended to every run folder's name while :func:`run_folder_tag` is active (a Dask worker's own tag).
_run_tag: ContextVar[str] = ContextVar("metafab_run_tag", default="")


@contextmanager
def run_folder_tag(tag: str):
    """Within this block every :func:`run_bench` call uses the run folder ``<run_name>-<tag>``.

    Equal run names take turns on their folder's lock; a worker of a cluster
    tags its runs with its own name, so that two workers running chunks of one
    design use two folders and run side by side (the model build is still shared).
    """
    token = _run_tag.set(tag)
    try:
        yield
    finally:
        _run_tag.reset(token)


def build_root() -> Path:
    """Where generated files go: ``$METAFAB_BUILD_DIR`` or ``./build`` (UserError if that is not a folder)."""
    from metafab.reference.errors import UserError

    path = Path(os.environ.get("METAFAB_BUILD_DIR") or "build").resolve()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"the build folder {str(path)!r} (METAFAB_BUILD_DIR or ./build) is not a folder: "
                                f"{str(p)!r} is a file")
            break
    return path


class SimulationFailed(RuntimeError):
    """A cocotb bench reported failing tests (the message says which and where the log is)."""


@dataclass
class BenchResult:
    """What one bench run gave back."""

    simulator: str
    ntests: int
    nfailed: int
    build_dir: Path
    test_dir: Path
    build_seconds: float
    run_seconds: float
    cached: bool
    data: dict = field(default_factory=dict)


#: g++ options for the model's per-cycle code at -O1 and above. Verilator's generated functions are long
#: enough that gcc's alias walks and full redundancy elimination take most of an -O1 compile; bounding
#: them keeps the compile within a few seconds of -O0 while the model still runs about three times faster.
_GCC_BOUNDS = "-fno-tree-dse -fno-tree-fre --param=sccvn-max-alias-queries-per-access=50"

#: Optimisation of Verilator's run-time library (the same for every model; compiled once, see _runtime_dir).
_RUNTIME_OPT = "-O1"


def _verilator_opt(opt: str | None = None) -> str:
    """The C++ optimisation of a Verilator model's per-cycle code: ``opt``, ``$METAFAB_VERILATOR_OPT`` or ``-O1``.

    At ``-O1`` and above the compile is bounded by :data:`_GCC_BOUNDS`; the
    model's one-off code (constructors, initial values) is always built at
    ``-O0``. ``-O0`` compiles a few seconds faster and runs about three
    times slower.
    """
    opt = opt or os.environ.get("METAFAB_VERILATOR_OPT", "-O1")
    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise UserError(f"METAFAB_VERILATOR_OPT={opt!r}; valid: -O0, -O1, -O2, -O3, -Os")
    return opt


@contextmanager
def _simulator_environment(sim: str, opt: str = "-O1", objcache: Path | None = None):
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")}
    try:
        if sim == "verilator":
            os.environ["PATH"] = verilator_env_path()
            os.environ.pop("VERILATOR_ROOT", None)
            # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ takes the
            # precompiled header's name for a linker input once a model has several C++ files.
            # Inside MAKEFLAGS a space within a value is escaped with a backslash.
            fast = opt if opt == "-O0" else f"{opt} {_GCC_BOUNDS}".replace(" ", "\\ ")
            flags = os.environ.get("MAKEFLAGS", "")
            hook = f" OBJCACHE={str(objcache).replace(' ', chr(92) + ' ')}" if objcache else ""
            os.environ["MAKEFLAGS"] = (
                f"{flags} CFG_CXXFLAGS_PCH_I=-include OPT_FAST={fast} OPT_SLOW=-O0 OPT_GLOBAL={_RUNTIME_OPT}{hook}"
            ).strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Verilator's run-time library objects in a model's build folder: the same for every model built with
#: the same Verilator, compiler and trace option (cocotb's own verilator.o includes the model's header
#: and is built per model).
_RUNTIME_FILES = ("verilated*.o", "verilated*.d")

#: Verilator's makefiles run each compile as ``$(OBJCACHE) c++ ... -o OUT``; this hook hands out the
#: shared run-time objects (OUT = verilated*.o) and runs every other compile as it is. (Seeding the
#: build folder with the objects is not enough: they depend on the makefile Verilator rewrites.)
_OBJCACHE_SCRIPT = """#!/bin/sh
# metafab: Verilator's OBJCACHE hook; copies the shared run-time objects of this folder.
here=$(dirname "$0")
out=
take=
for a in "$@"; do
  if [ -n "$take" ]; then out=$a; take=; fi
  if [ "$a" = "-o" ]; then take=1; fi
done
case "$out" in
  verilated*.o)
    if [ -f "$here/$out" ]; then
      cp "$here/$out" "$out" && cp "$here/${out%.o}.d" "${out%.o}.d" && exit 0
    fi ;;
esac
exec "$@"
"""


def _runtime_dir(root: Path, tool, waves: bool) -> Path:
    """The shared folder of Verilator run-time objects for this Verilator, compiler and trace option."""
    import subprocess

    import cocotb

    try:
        cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        cxx = ""
    key = _digest(tool.version, cocotb.__version__, cxx, _RUNTIME_OPT, str(waves))
    return root / "sim" / "verilator" / f"runtime-{key}"


def _objcache(runtime: Path | None) -> Path | None:
    """The OBJCACHE hook of a published run-time folder, or None."""
    hook = runtime / "objcache.sh" if runtime else None
    return hook if hook and hook.is_file() else None


def _publish_runtime(build_dir: Path, runtime: Path):
    """Keep a finished build's run-time objects for later models (first writer wins, atomically)."""
    import shutil
    import tempfile

    if runtime.is_dir():
        return
    files = [f for pattern in _RUNTIME_FILES for f in build_dir.glob(pattern)]
    if not files:
        return
    runtime.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=runtime.parent))
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    hook = tmp / "objcache.sh"
    hook.write_text(_OBJCACHE_SCRIPT)
    hook.chmod(0o755)
    try:
        tmp.rename(runtime)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _build_lock(build_dir: Path):
    """Serialise the users of one folder across processes (parallel test workers): a build, or a run folder."""
    import fcntl

    with open(build_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _digest(*parts: str) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def prepare_verilator(root: Path | None = None) -> Path:
    """Compile Verilator's run-time library once into the build folder; returns the folder of its objects.

    Every later Verilator model (without waves) copies these objects instead
    of compiling them, which saves about half a minute of CPU per model.

    Raises
    ------
    ToolNotFoundError
        Verilator is not installed (the message gives the install command).
    SimulationFailed
        The compile failed (the message names its log).
    """
    from cocotb_tools.runner import get_runner

    tool = find_simulator("verilator")
    root = build_root() if root is None else Path(root)
    runtime = _runtime_dir(root, tool, False)
    if runtime.is_dir():
        return runtime
    build_dir = root / "sim" / "verilator" / "runtime-prepare"
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / "metafab_runtime.v"
    log = build_dir / "build.log"
    with _build_lock(build_dir), _simulator_environment("verilator", _verilator_opt()):
        src.write_text("module metafab_runtime(input wire clk, output reg q);\n"
                       "  always @(posedge clk) q <= ~q;\nendmodule\n")
        try:
            get_runner("verilator").build(sources=[src], hdl_toplevel="metafab_runtime", build_dir=build_dir,
                                          timescale=("1ns", "1ps"), log_file=log)
        except RuntimeError as exc:
            raise SimulationFailed(f"verilator failed to compile its run-time library ({exc}); see {log}") from None
        _publish_runtime(build_dir, runtime)
    return runtime


def run_bench(
    *,
    verilog: str,
    toplevel: str,
    bench: str,
    params: dict,
    sim: str = "verilator",
    waves: bool = False,
    run_name: str = "run",
    root: Path | None = None,
    quiet: bool = True,
    verilator_opt: str | None = None,
    progress=None,
) -> BenchResult:
    """Build ``verilog`` (cached) and run the cocotb module ``bench`` on it.

    Parameters
    ----------
    verilog : str
        The design's Verilog text; ``toplevel`` is its top module.
    bench : str
        Importable cocotb test module, e.g. ``"metafab.sim.benches.mac_lane"``.
    params : dict
        JSON-serialisable parameters handed to the bench.
    sim : str
        ``"verilator"`` or ``"icarus"``.
    waves : bool
        Record a waveform (``dump.vcd`` / ``dump.fst``) in the test directory.
    run_name : str
        Sub-folder for this run's results and log (under the build folder).
    quiet : bool
        Send the simulator's and cocotb's log to ``sim.log`` instead of the terminal.
    verilator_opt : str, optional
        C++ optimisation of the Verilator model's per-cycle code (``-O1`` default; see :func:`_verilator_opt`).
    progress : callable, optional
        Told when a model is compiled (not when a cached build is reused) and how long it took.

    Raises
    ------
    UserError
        Unknown simulator name.
    ToolNotFoundError
        The simulator is not installed (the message gives the install command).
    SimulationFailed
        A cocotb test failed or the simulation ended abnormally.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    tool = find_simulator(sim)
    root = build_root() if root is None else Path(root)
    opt = _verilator_opt(verilator_opt)
    key = _digest(verilog, sim, tool.version, str(waves), opt if sim == "verilator" else "")
    build_dir = root / "sim" / sim / f"{toplevel}-{key}"
    test_dir = build_dir / (f"{run_name}-{_run_tag.get()}" if _run_tag.get() else run_name)
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{toplevel}.v"
    # a run folder belongs to one run at a time: equal run names from parallel workers take turns
    with _build_lock(test_dir):
        results_xml = test_dir / "results.xml"
        out_json = test_dir / "bench.json"
        for stale in (results_xml, out_json):
            stale.unlink(missing_ok=True)
        log_build = build_dir / "build.log"
        log_run = test_dir / "sim.log"

        runtime = _runtime_dir(root, tool, waves) if sim == "verilator" else None
        with _simulator_environment(sim, opt, _objcache(runtime)):
            runner = get_runner("icarus" if sim == "icarus" else "verilator")
            cached = (build_dir / _BUILT_MARK).exists()
            t0 = time.perf_counter()
            if progress and not cached:
                progress(f"{sim}: compiling {toplevel} in {build_dir} (once per design: "
                         + ("Verilator takes 10 s to a minute or two for an engine" if sim == "verilator"
                            else "Icarus takes a second") + "; later runs reuse it)")
            try:
                # a finished build in this folder makes this an incremental no-op
                with _build_lock(build_dir):
                    if not src.exists() or src.read_text() != verilog:
                        src.write_text(verilog)
                    runner.build(
                        sources=[src],
                        hdl_toplevel=toplevel,
                        build_dir=build_dir,
                        timescale=("1ns", "1ps"),
                        waves=waves,
                        log_file=log_build if quiet else None,
                    )
            except RuntimeError as exc:
                raise SimulationFailed(f"{sim} failed to build {toplevel} ({exc}); see {log_build}") from None
            (build_dir / _BUILT_MARK).write_text(key + "\n")
            if progress and not cached:
                progress(f"{sim}: compiled {toplevel} in {time.perf_counter() - t0:.0f} s")
            if runtime:
                _publish_runtime(build_dir, runtime)
            t1 = time.perf_counter()
            params_json = test_dir / "bench_params.json"
            params_json.parent.mkdir(parents=True, exist_ok=True)
            params_json.write_text(json.dumps(params, sort_keys=True))
            env = {
                BENCH_ENV: str(params_json),
                BENCH_OUT_ENV: str(out_json),
            }
            try:
                runner.test(
                    test_module=bench,
                    hdl_toplevel=toplevel,
                    build_dir=build_dir,
                    test_dir=test_dir,
                    results_xml=str(results_xml),
                    extra_env=env,
                    waves=waves,
                    timescale=("1ns", "1ps"),
                    log_file=log_run if quiet else None,
                )
            except SystemExit:
                pass  # under pytest the runner exits on failing tests; the results file tells
            t2 = time.perf_counter()
        try:
            ntests, nfailed = get_results(results_xml)
        except RuntimeError:
            raise SimulationFailed(
                f"{sim} simulation of {toplevel} ended abnormally (no results); see {log_run}"
            ) from None
        data = json.loads(out_json.read_text()) if out_json.exists() else {}
        if ntests == 0:
            raise SimulationFailed(f"bench {bench} ran no tests on {toplevel}; see {log_run}")
        if nfailed:
            detail = data.get("failure") or "see the log"
            raise SimulationFailed(
                f"{nfailed} of {ntests} cocotb test(s) failed in {bench} on {toplevel} with {sim}: "
                f"{detail}; log: {log_run}"
            )
        return BenchResult(sim, ntests, nfailed, build_dir, test_dir, t1 - t0, t2 - t1, cached, data)


def check_params_serialisable(params: dict) -> dict:
    try:
        json.dumps(params)
    except TypeError as exc:
        raise UserError(f"bench parameters must be JSON-serialisable: {exc}") from None
    return params
