"""Shared fixtures: designs are built once per session; simulator builds are cached by content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not be flaky); set
# HYPOTHESIS_PROFILE=explore for fresh random examples.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _build_dir_under_repo():
    """Keep every generated file in the repo's git-ignored build/ folder (YoWASP cannot see /tmp)."""
    os.environ.setdefault("METAFAB_BUILD_DIR", str(REPO / "build"))
    yield


def icarus_available() -> bool:
    from metafab.sim.tools import find_icarus

    return find_icarus().found


requires_icarus = pytest.mark.skipif(
    not icarus_available(), reason="Icarus Verilog not installed (apt-get install -y iverilog)"
)


class _Ecp5Elaboration:
    """Stands for an ECP5 platform while elaborating: the engines ask it for the device family only."""

    family = "ecp5"


def ecp5_verilog(component, name: str) -> tuple[str, list[str]]:
    """``component`` as elaborated for an ECP5 and exported as :func:`metafab.gen.export.to_verilog` does, with
    behavioural models of its ECP5 cells appended.

    Returns the Verilog text and the parameter lists of its MULT18X18D instances.
    """
    import re

    from amaranth.back import verilog

    from metafab.gen.export import finish_verilog

    text = finish_verilog(verilog.convert(component, name=name, platform=_Ecp5Elaboration(), emit_src=False))
    instances = re.findall(r"^\s*MULT18X18D\s*#\((.*?)\)\s*\w+\s*\(", text, flags=re.M | re.S)
    model = (Path(__file__).parent / "data" / "ecp5_cells_model.v").read_text()
    return text + model, instances


@pytest.fixture
def echo(monkeypatch):
    """The test-only ``echo`` engine (tests/echo_engine.py) registered for one test; its bench is importable
    in the simulator's Python."""
    from metafab.gen.engines import register_engine, unregister_engine

    from .echo_engine import ENGINE

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    register_engine(ENGINE)
    yield ENGINE
    unregister_engine(ENGINE.name)
