"""The Engine protocol: one object per engine owns everything engine-specific.

A command (``metafab generate / sim / verify / build / run / demo``) and the
generic flow (:mod:`metafab.gen.flow`) never ask which engine they run: they
call the methods below. An engine owns

- its **config** class and CLI flags (:attr:`config_class`,
  :attr:`design_flags`, :meth:`add_arguments`, :meth:`config`);
- its **hardware** (:meth:`component`, :attr:`toplevel`) and **cycle model**
  (:meth:`cycles`);
- its **workloads** (tasks or episodes: :meth:`verify_workload`) and its
  **payload encoding** (in :mod:`metafab.reference.payloads`, called from
  :meth:`packet_words`, :meth:`preload` and the benches);
- its **bench** (:attr:`bench`, a cocotb module in :mod:`metafab.sim.benches`),
  the figures of a run (:meth:`verify_chunk`, :meth:`verify_report`) and the
  verdict (:meth:`passed`);
- its **example session** (:meth:`example_session`: requests and the responses its reference gives
  them), from which ``generate`` writes the self-checking testbench's files;
- its **report rows** (:meth:`verify_rows`, :meth:`build_rows`,
  :meth:`demo_rows`, :meth:`format_sim`), the sections of its report page
  (:meth:`report_sections`) and its **board-top preload**.

A new engine subclasses :class:`Engine`, fills these in and is registered
once (:func:`metafab.gen.engines.register_engine`); ``docs/architecture.md``
has the recipe.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metafab.gen.designs import parse_sets, read_toml
from metafab.reference.errors import UserError
from metafab.reference.protocol import Opcode, Packet, Status, status_payload

__all__ = ["Engine", "DesignFlag", "Workload", "Exchange", "Progress", "read_json_objects", "UNKNOWN_OPCODE",
           "unknown_opcode_exchange", "status_exchange"]

Progress = Callable[[str], object] | None


@dataclass(frozen=True)
class DesignFlag:
    """A CLI flag that sets one config field (``--k-support 5`` sets ``k_support``)."""

    flag: str
    field: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    help: str = ""
    choices: tuple | None = None

    @property
    def dest(self) -> str:
        return "design_" + self.flag.lstrip("-").replace("-", "_")


@dataclass
class Workload:
    """What a verification runs: ``items`` in bench form (code lists), in chunks; ``source`` says where
    they come from; ``data`` holds the engine's own extra (float tasks, expected predictions, ...)."""

    items: list
    source: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Exchange:
    """One request of an example session and the response the engine's bit-exact reference gives it.

    ``opcode`` and ``payload`` (32-bit words) are the request; ``response`` is
    the expected response packet (:class:`~metafab.reference.protocol.Packet`:
    status and payload words); ``what`` names the request for a reader
    ("LOAD", "RUN task 0", "unknown opcode 0x7e").
    """

    what: str
    opcode: int
    payload: tuple[int, ...]
    response: Packet


#: The malformed request of the example sessions: an opcode no engine has (with a payload, which the front
#: end consumes up to its ``last`` word).
UNKNOWN_OPCODE = 0x7E


def unknown_opcode_exchange() -> Exchange:
    """A request with :data:`UNKNOWN_OPCODE` and three payload words, answered UNKNOWN_OPCODE with no payload."""
    return Exchange(f"unknown opcode {UNKNOWN_OPCODE:#04x}", UNKNOWN_OPCODE, (1, 2, 3),
                    Packet(Status.UNKNOWN_OPCODE, ()))


def status_exchange(*, last_cycles: int, runs: int, errors: int, last_error: int, loaded: bool) -> Exchange:
    """A STATUS request and the answer of an engine with these counters (``last_cycles`` from its cycle
    model)."""
    return Exchange("STATUS", Opcode.STATUS, (), Packet(Status.OK, status_payload(
        last_cycles=last_cycles, runs=runs, errors=errors, last_error=last_error, loaded=loaded)))


def read_json_objects(path: str, what: str, fields: str) -> list[dict]:
    """A user's JSON file that holds a list of objects (tasks, episodes): the list, or a UserError
    naming the file and what it must hold (``what``: "task", ``fields``: "xs, ys, xq")."""
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not all(isinstance(t, dict) for t in doc):
        raise UserError(f"{what} file {path!r} must hold a list of objects with {fields}")
    return doc


class Engine:
    """Base class of the engines (see the module docstring). Subclasses set the class attributes and
    implement the methods that raise :class:`NotImplementedError`."""

    #: registry key and CLI name (``metafab verify NAME``)
    name: str = ""
    #: one line for ``--help``
    summary: str = ""
    #: the demo's section title
    title: str = ""
    #: Verilog top-level module name of the engine
    toplevel: str = ""
    #: the cocotb bench module
    bench: str = ""
    #: the frozen config dataclass
    config_class: type = object
    #: the config fields settable by flags
    design_flags: tuple[DesignFlag, ...] = ()
    #: what one verification item is (``task``, ``episode``)
    item: str = "task"
    #: what one RUN request carries (``task``, ``query``): the unit of the link's time per request
    run_item: str = "task"
    #: the flag that sets how much ``verify`` (and the demo) runs, its dest and defaults
    count_flag: str = "--tasks"
    count_default: int = 100
    demo_count: int = 100
    #: RUN requests in the example session of ``metafab generate`` (its ``--tasks``)
    session_default: int = 3
    #: items per simulator run in ``verify``
    chunk: int = 250
    #: runs in ``metafab demo`` (with its board build; larger ``build_order`` builds start first)
    in_demo: bool = False
    build_order: int = 0
    #: ``metafab demo`` builds its board top too (False: the demo verifies it only; its build takes longer
    #: than the demo's bound)
    demo_builds: bool = True
    #: the opcode of the board top's preload packet (:meth:`preload`)
    preload_opcode: int = Opcode.LOAD
    #: the option of ``generate / sim / verify / build / run`` that names the engine's weights (``--weights``
    #: for the MAML engines, ``--encoder`` for fewshot), or None (the similarity engine has none)
    weights_flag: str | None = None

    # --- config -----------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """The engine's flags on ``command``'s parser: the design group, then :meth:`add_command_arguments`."""
        g = parser.add_argument_group(f"{self.name} design")
        g.add_argument("--config", metavar="FILE",
                       help=f"TOML file with the config fields (top level or a [{self.name}] table)")
        g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       help="override one config field (repeatable), e.g. --set lanes=64")
        for f in self.design_flags:
            metavar = f.metavar or (None if f.choices else f.flag.lstrip("-").upper())
            g.add_argument(f.flag, dest=f.dest, type=f.type, metavar=metavar, help=f.help, choices=f.choices)
        self.add_command_arguments(parser, command)

    def add_command_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """Engine-specific options of one command (workload, weights, ...); none by default."""

    def config(self, args) -> Any:
        """The config the command line describes: the built-in default, then ``--config``, flags, ``--set``."""
        fields: dict = {}
        if getattr(args, "config", None):
            fields.update(read_toml(args.config, self.name))
        for f in self.design_flags:
            value = getattr(args, f.dest, None)
            if value is not None:
                fields[f.field] = value
        fields.update(parse_sets(getattr(args, "set", None)))
        return self.config_from_dict(fields)

    def config_from_dict(self, fields: dict) -> Any:
        try:
            return self.config_class.from_dict(fields)
        except TypeError as exc:
            raise UserError(f"invalid {self.name} config: {exc}") from None

    # --- hardware ---------------------------------------------------------
    def component(self, cfg):
        """The engine's Amaranth component (request / response word streams)."""
        raise NotImplementedError

    def cycles(self, cfg):
        """The cycle model of ``cfg`` (an object with ``to_dict()``)."""
        raise NotImplementedError

    def packet_words(self, cfg) -> tuple[int, int, int]:
        """Payload words of a LOAD request, a RUN request and a RUN response."""
        return cfg.load_words, cfg.run_words, cfg.result_words

    def extra_packets(self, cfg) -> dict[str, tuple[int, int]]:
        """Opcodes beyond LOAD, RUN and STATUS: name -> (request payload words, response payload words)."""
        return {}

    def manifest_fields(self, cfg) -> dict:
        """The engine's own entries of ``manifest.json`` (formats, payload descriptions, ...)."""
        return {}

    def example_files(self, cfg, args) -> tuple[dict[str, str], dict]:
        """Files ``generate`` writes beside the Verilog (payload examples) and manifest entries about them."""
        return {}, {}

    def example_session(self, cfg, args, count: int) -> tuple[list[Exchange], str]:
        """The example session of the self-checking testbench ``generate`` writes: the requests (LOAD of the
        example weights or support set, ``count`` RUNs, a malformed request, STATUS) each with the response
        packet the bit-exact reference gives it, in order; and where the data come from."""
        raise NotImplementedError

    # --- simulation -------------------------------------------------------
    def simulate(self, cfg, args, progress: Progress) -> dict:
        """``metafab sim``: a few items cycle by cycle; a JSON-able document with ``mismatches``."""
        raise NotImplementedError

    def format_sim(self, doc: dict) -> str:
        raise NotImplementedError

    def verify_options(self, args) -> dict:
        """Keyword options of :meth:`verify_workload` taken from the command line."""
        return {}

    def verify_workload(self, cfg, *, count: int, seed: int, **options) -> Workload:
        raise NotImplementedError

    def verify_chunk(self, cfg, work: Workload, items: list, *, first: bool, sim: str, seed: int,
                     verilog: str | None, verilator_opt: str | None, progress: Progress) -> dict:
        """Run one chunk of a verification through the bench; a dict with at least ``mismatches``,
        ``words`` and ``first_mismatch``."""
        raise NotImplementedError

    def verify_report(self, cfg, work: Workload, runs: list[dict]) -> dict:
        """The engine's figures of a verification from its chunks' results."""
        raise NotImplementedError

    def passed(self, report: dict) -> bool:
        """Whether a verification passed (0 mismatches, cycles as modelled, ...)."""
        return report["mismatches"] == 0 and bool(report.get("cycles_match_model", True))

    def verify_rows(self, report: dict) -> list[tuple[str, str]]:
        raise NotImplementedError

    # --- board ------------------------------------------------------------
    def preload(self, cfg, args) -> tuple[list[int], str]:
        """The LOAD payload the board top holds in ROM, and where it comes from (``None`` and a reason: a board
        top without a preload, whose host sends LOAD first)."""
        raise NotImplementedError

    #: the engine clock a board build asks for by default, per FPGA family (MHz): one the default design's
    #: board top meets (measured: docs/synthesis.md); ``--clock-mhz auto`` searches from it
    default_clock: dict = {"ecp5": 75.0, "ice40": 24.0}

    def default_clock_mhz(self, family: str) -> float:
        return self.default_clock[family]

    def item_cycles(self, cfg) -> int:
        """Cycles of one item (task, query) from its request's last word to its result (for the link's
        end-to-end time)."""
        raise NotImplementedError

    def build_figures(self, cfg, result: dict, preload_source: str | None) -> dict:
        """The engine's entries of a build report: cycles, latency at the clock the bitstream runs at
        (``result["clock_mhz"]``) and, labelled, at Fmax; anchors."""
        raise NotImplementedError

    def build_rows(self, report: dict) -> list[tuple[str, str]]:
        raise NotImplementedError

    def run_on_board(self, cfg, args, host, say: Callable[[str], object], progress: Callable[[str], object]) -> dict:
        """``metafab run``: drive the engine on a board through ``host``; a document with ``mismatches``.
        ``say`` prints a result line (not with ``--json``), ``progress`` a progress line (stderr)."""
        raise NotImplementedError

    def demo_heading(self, cfg) -> str:
        """The title of the engine's section of the demo's summary."""
        return self.title

    def demo_rows(self, verify: dict) -> list[tuple[str, str]]:
        """The demo's rows of a verification report."""
        raise NotImplementedError

    def demo_build_note(self, cfg) -> list[tuple[str, str]]:
        """The demo's rows about the board build of an engine the demo does not build (``demo_builds``)."""
        return []

    def demo_build_rows(self, build: dict) -> list[tuple[str, str]]:
        """The demo's latency rows of a build report (after the board's own row)."""
        return []

    def demo_anchor_rows(self) -> list[tuple[str, str]]:
        """The demo's comparison rows (GPU and CPU anchors)."""
        return []

    def cpu_kernel(self, cfg):
        """The engine's computation for ``cfg`` as plain C for the CPU baseline
        (:class:`metafab.gen.cpu_baseline.CpuKernel`), or None when the engine has none."""
        return None

    def bench_model(self) -> tuple[str, list[dict]] | None:
        """``metafab bench``: a title and the cycle model's rows over a sweep of designs (None: no table)."""
        return None

    # --- report page ------------------------------------------------------
    def report_sections(self, cfg, reports) -> list:
        """The sections of the design's page in ``metafab report`` (:class:`metafab.gen.report_page.Section`
        objects) from ``reports`` (a :class:`~metafab.gen.report_page.DesignReports`: the design's manifest,
        verification, board builds and the studies under the build folder). The default
        (:func:`~metafab.gen.report_page.generic_sections`): the config and number formats, verification,
        utilisation, timing and latency; an engine adds its schedule and its numerics."""
        from metafab.gen.report_page import generic_sections

        return generic_sections(self, cfg, reports)

    # --- names ------------------------------------------------------------
    def build_name(self, cfg, top: str) -> str:
        """The name of a board build: the design and its config digest, so two designs never share a folder."""
        from metafab.reference.config import config_digest

        return f"{cfg.name.replace('-', '_').replace('.', '_')}_{config_digest(cfg)[:8]}_{top}"

    def __repr__(self) -> str:
        return f"<engine {self.name}>"
