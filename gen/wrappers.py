"""Files that let other flows use a generated engine: the AXI-Stream wrapper and a FuseSoC core (Jinja2)."""

from __future__ import annotations

from importlib import resources

import jinja2

import metafab.gen as gen_pkg
from metafab.reference.protocol import PROTOCOL_VERSION

__all__ = ["axis_wrapper", "fusesoc_core", "VERSION"]

VERSION = "0.1.0"


def _env() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(
        lambda name: (resources.files(gen_pkg).joinpath("templates", name).read_text(), None, lambda: True)
    )
    return jinja2.Environment(loader=loader, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                              autoescape=False)


def axis_wrapper(*, engine: str, toplevel: str, design: str) -> tuple[str, str]:
    """``(module name, Verilog text)`` of the AXI-Stream wrapper around ``toplevel``."""
    wrapper = f"{toplevel}_axis"
    text = _env().get_template("axis_wrapper.v.j2").render(
        wrapper=wrapper, engine=engine, toplevel=toplevel, design=design, version=VERSION,
        protocol_version=PROTOCOL_VERSION)
    return wrapper, text


def fusesoc_core(*, design: str, verilog: str, wrapper_file: str, wrapper: str, description: str) -> str:
    """A FuseSoC CAPI2 core file listing the engine and its wrapper."""
    core_name = design.replace(".", "_")
    return _env().get_template("fusesoc.core.j2").render(
        core_name=core_name, version=VERSION, description=description, verilog=verilog,
        wrapper_file=wrapper_file, wrapper=wrapper)
