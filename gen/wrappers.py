"""Files that let other flows use a generated engine: the AXI-Stream wrapper, a FuseSoC core and the wrapper's
self-checking testbench (Jinja2)."""

from __future__ import annotations

from importlib import resources

import jinja2

import metafab.gen as gen_pkg
from metafab.reference.protocol import PROTOCOL_VERSION

__all__ = ["axis_wrapper", "fusesoc_core", "selfcheck_testbench", "hex_beats", "VERSION"]

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


def fusesoc_core(*, design: str, verilog: str, wrapper_file: str, wrapper: str, description: str,
                 testbench: str, testbench_files: tuple[str, ...]) -> str:
    """A FuseSoC CAPI2 core file listing the engine and its wrapper, with a ``sim_tb`` target that runs the
    self-checking testbench ``testbench`` (its Verilog file first in ``testbench_files``, then its data files)."""
    core_name = design.replace(".", "_")
    return _env().get_template("fusesoc.core.j2").render(
        core_name=core_name, version=VERSION, description=description, verilog=verilog,
        wrapper_file=wrapper_file, wrapper=wrapper, testbench=testbench, testbench_file=testbench_files[0],
        testbench_data=testbench_files[1:])


def hex_beats(beats) -> str:
    """Stream beats ``(word, last)`` as ``$readmemh`` lines: 9 hex digits ``{last, data[31:0]}`` a line."""
    return "".join(f"{int(bool(last))}{int(word) & 0xFFFFFFFF:08x}\n" for word, last in beats)


def selfcheck_testbench(*, wrapper: str, engine: str, design: str, request_words: int, response_words: int,
                        timeout: int, request_file: str, expected_file: str, source: str,
                        session: list[str]) -> tuple[str, str]:
    """``(module name, Verilog text)`` of the self-checking testbench of the AXI-Stream wrapper ``wrapper``.

    It sends the ``request_words`` beats of ``request_file`` and compares the
    ``response_words`` beats that come back with ``expected_file`` (both in the
    layout of :func:`hex_beats`); ``timeout`` is its watchdog in cycles;
    ``source`` and ``session`` (one line per request) go into its header.
    """
    if request_words < 1 or response_words < 1:
        raise ValueError(f"a session needs words both ways, got {request_words} and {response_words}")
    tb = f"{wrapper}_tb"
    text = _env().get_template("selfcheck_tb.v.j2").render(
        tb=tb, wrapper=wrapper, engine=engine, design=design, version=VERSION, protocol_version=PROTOCOL_VERSION,
        request_words=request_words, response_words=response_words, request_bits=request_words.bit_length(),
        response_bits=response_words.bit_length(), timeout=timeout, request_file=request_file,
        expected_file=expected_file, source=source, session=session)
    return tb, text
