"""The generic engine flow: Verilog, generated files, simulation, verification and board builds of any
registered engine (:mod:`metafab.gen.engines`).

Every function takes the :class:`~metafab.gen.engines.base.Engine` and its
config; nothing here knows which engine it runs. The commands in
``metafab.gen.cmd_*`` call these, the demo and the tests too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from metafab.gen.engines.base import Engine, Progress
from metafab.gen.manifest import dumps, ports, protocol
from metafab.reference.config import config_digest
from metafab.reference.errors import UserError
from metafab.sim.runner import build_root, run_bench

__all__ = ["engine_verilog", "simulate", "verify", "build", "generate", "manifest", "format_verify",
           "format_build", "output_folder", "TOPS"]

#: What ``metafab build --top`` builds: the board top to program, or the engine alone behind a harness.
TOPS = ("uart", "harness")


def engine_verilog(engine: Engine, cfg, progress: Progress = None) -> str:
    """The engine's Verilog for ``cfg``, cached under the build folder by config and generator source."""
    from metafab.gen.export import cached_verilog

    return cached_verilog(cfg, engine.toplevel, lambda: engine.component(cfg), progress)


def simulate(engine: Engine, cfg, params: dict, *, sim: str = "verilator", scenario: str = "tasks",
             waves: bool = False, run_name: str | None = None, verilator_opt: str | None = None,
             verilog: str | None = None, progress: Progress = None) -> dict:
    """One run of the engine's cocotb bench with ``params``; its result dict plus the run's facts.

    Raises :class:`~metafab.sim.runner.SimulationFailed` when the bench fails.
    """
    verilog = verilog or engine_verilog(engine, cfg, progress)
    name = run_name or f"{scenario}-{config_digest(cfg)}"
    r = run_bench(verilog=verilog, toplevel=engine.toplevel, bench=engine.bench, params=params, sim=sim,
                  waves=waves, run_name=name, verilator_opt=verilator_opt)
    out = dict(r.data)
    out.update(simulator=sim, build_seconds=r.build_seconds, run_seconds=r.run_seconds, build_cached=r.cached,
               test_dir=str(r.test_dir))
    return out


def verify(engine: Engine, cfg, *, count: int | None = None, sim: str = "verilator", seed: int = 0,
           options: dict | None = None, verilator_opt: str | None = None, verilog: str | None = None,
           progress: Progress = None) -> dict:
    """RTL against the bit-exact reference (and the float64 model) on ``count`` items of the engine's
    workload, in chunks of ``engine.chunk`` items; the report ``metafab verify`` prints.

    ``verilog``: the engine's Verilog if already generated (default: generated here).
    """
    count = engine.count_default if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"{engine.count_flag} must be at least 1, got {count}")
    if seed < 0:
        raise UserError(f"--seed must be 0 or more, got {seed}")
    t0 = time.perf_counter()
    work = engine.verify_workload(cfg, count=count, seed=seed, **(options or {}))
    runs: list[dict] = []
    n = len(work.items)
    for at in range(0, n, engine.chunk):
        r = engine.verify_chunk(cfg, work, work.items[at: at + engine.chunk], first=at == 0, sim=sim,
                                seed=seed + at, verilog=verilog, verilator_opt=verilator_opt,
                                progress=progress if at == 0 else None)
        runs.append(r)
        if progress:
            bad = sum(x["mismatches"] for x in runs)
            progress(f"  {min(at + engine.chunk, n)}/{n} {engine.item}s, {bad} mismatching words")
    report = {
        "engine": engine.name,
        "design": cfg.name,
        "config": cfg.to_dict(),
        "simulator": sim,
        "output_words": sum(r["words"] for r in runs),
        "mismatches": sum(r["mismatches"] for r in runs),
        "first_mismatch": next((r["first_mismatch"] for r in runs if r.get("first_mismatch")), None),
    }
    report.update(engine.verify_report(cfg, work, runs))
    report["seconds"] = time.perf_counter() - t0
    return report


def build(engine: Engine, cfg, board: str, *, top: str = "uart", baud: int = 115200, target_mhz=None,
          seed: int = 1, timing_ripup: bool = False, preload_args=None, progress: Progress = None) -> dict:
    """Synthesis, place and route of the engine for ``board``, with the engine's latencies at the achieved
    Fmax.

    ``top="uart"``: the board top (USB-UART bridge, the engine, and the
    engine's preload (:meth:`Engine.preload`) in a ROM, so the board answers
    RUN at once); its bitstream is the one to program. ``top="harness"``: the
    engine alone behind the serial measurement harness (every port
    registered), for the engine's own resources and Fmax.
    """
    from metafab.gen.synth import build as build_harnessed
    from metafab.gen.synth import build_board_top, check_options
    from metafab.hw.board_top import BoardTop
    from metafab.reference.protocol import Opcode, encode_request

    if top not in TOPS:
        raise UserError(f"unknown top {top!r}; valid: {', '.join(TOPS)}")
    name = engine.build_name(cfg, top)
    # before any component exists (an unused one warns when it is collected)
    check_options(board, name=name, target_mhz=target_mhz, seed=seed, timing_ripup=timing_ripup)
    source = None
    if top == "harness":
        r = build_harnessed(engine.component(cfg), board, name=name, target_mhz=target_mhz, seed=seed,
                            timing_ripup=timing_ripup, progress=progress)
    else:
        words, source = engine.preload(cfg, preload_args)
        board_top = BoardTop(engine.component(cfg), baud=baud, preload=encode_request(Opcode.LOAD, words))
        r = build_board_top(board_top, board, clock=board_top.clock, name=name, target_mhz=target_mhz,
                            seed=seed, timing_ripup=timing_ripup, progress=progress)
    r.update(engine=engine.name, design=cfg.name, config=cfg.to_dict(), top=top,
             baud=baud if top == "uart" else None)
    r.update(engine.build_figures(cfg, r, source))
    return r


def manifest(engine: Engine, cfg) -> dict:
    """Everything a user or a host program needs to know about a generated engine."""
    from metafab.reference.protocol import STATUS_FIELDS

    load, run, result = engine.packet_words(cfg)
    doc = {
        "engine": engine.name,
        "toplevel": engine.toplevel,
        "design": cfg.name,
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "ports": ports(),
        "protocol": protocol({"LOAD": load, "RUN": run, "STATUS": 0},
                             {"LOAD": 0, "RUN": result, "STATUS": len(STATUS_FIELDS)}),
        "cycles": engine.cycles(cfg).to_dict(),
    }
    doc.update(engine.manifest_fields(cfg))
    return doc


def output_folder(out, kind: str, cfg) -> Path:
    """``out`` or ``<build>/<kind>/<design>-<digest>``, checked to be (or to become) a folder; not created."""
    path = Path(out) if out else build_root() / kind / f"{cfg.name}-{config_digest(cfg)[:8]}"
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"output path {str(path)!r}: {str(p)!r} exists and is not a folder")
            if not os.access(p, os.W_OK):
                raise UserError(f"output path {str(path)!r}: the folder {str(p)!r} is not writable")
            break
    return path


def generate(engine: Engine, cfg, out, args, progress: Progress = None) -> list[Path]:
    """Verilog, AXI-Stream wrapper, FuseSoC core, manifest and the engine's example files into ``out``
    (byte-identical for the same inputs); returns the paths written."""
    from metafab.gen.wrappers import axis_wrapper, fusesoc_core

    extra, notes = engine.example_files(cfg, args)  # computed (and validated) before anything is written
    text = engine_verilog(engine, cfg, progress)
    doc = manifest(engine, cfg)
    doc.update(notes)
    wrapper, wrapper_text = axis_wrapper(engine=engine.name, toplevel=engine.toplevel, design=cfg.name)
    core = fusesoc_core(design=cfg.name, verilog=f"{engine.toplevel}.v", wrapper_file=f"{wrapper}.v",
                        wrapper=wrapper, description=f"metafab {engine.title} {cfg.name} with an AXI-Stream wrapper")
    files = {f"{engine.toplevel}.v": text, f"{wrapper}.v": wrapper_text, f"{cfg.name}.core": core,
             "manifest.json": dumps(doc), **extra}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_text(content)
    return [out / name for name in files]


def _table(rows) -> str:
    return "\n".join(f"{k:<20}{v}" for k, v in rows)


def format_verify(engine: Engine, report: dict) -> str:
    """The text of a verification report (the engine's rows, then the verdict)."""
    rows = engine.verify_rows(report)
    rows.append(("verdict", "PASS" if engine.passed(report) else "FAIL"))
    return _table(rows)


def format_build(engine: Engine, r: dict) -> str:
    """The text of a build report: the board's figures, the engine's latencies, the anchors."""
    lines = [
        f"design            {r['design']}",
        f"board             {r['board']} ({r['device']})",
        f"Fmax              {r['fmax_mhz']:.1f} MHz (constraint {r['constraint_mhz']:.0f} MHz)",
        f"place and route   nextpnr seed {r['seed']}" + (", timing-driven rip-up" if r["timing_ripup"] else ""),
        f"LUT / FF / DSP / BRAM   {r['lut']} / {r['ff']} / {r['dsp']} / {r['bram']}",
    ]
    lines += [f"{k:<18}{v}" for k, v in engine.build_rows(r)]
    for k, v in (r.get("anchor") or {}).items():
        lines.append(f"  vs {k:<22} {v:.1f} us")
    lines.append(f"bitstream         {r['bitstream']}")
    return "\n".join(lines)
