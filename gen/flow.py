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

__all__ = ["engine_verilog", "simulate", "verify", "verify_sharded", "verify_chunk_task",
           "build", "generate", "testbench", "manifest", "format_verify",
           "format_build", "write_build_report", "write_verify_report", "output_folder", "TOPS", "AUTO_TRIES"]

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
                  waves=waves, run_name=name, verilator_opt=verilator_opt, progress=progress)
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
    report = _verify_report(engine, cfg, work, runs, sim)
    report["seconds"] = time.perf_counter() - t0
    return report


def _verify_report(engine: Engine, cfg, work, runs: list[dict], sim: str) -> dict:
    """The report of a verification from its chunks' results, in the workload's order."""
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
    return report


def verify_chunk_task(engine_name: str, config: dict, work, start: int, stop: int, *, sim: str, seed: int,
                      verilator_opt: str | None = None) -> dict:
    """One chunk of a sharded verification, on a worker: items ``start`` to ``stop`` of ``work``.

    The config comes as a dict (:meth:`to_dict`); the engine's Verilog and
    simulator model come from the build cache under the worker's build
    folder (built by the first chunk that needs them, under the runner's
    locks). The run folder carries the worker's tag so that workers run side
    by side. Returns the chunk's result, the item ids it ran, the worker and
    its time.
    """
    from metafab.gen.cluster import worker_tag
    from metafab.gen.engines import get_engine
    from metafab.sim.runner import run_folder_tag

    engine = get_engine(engine_name)
    cfg = engine.config_from_dict(config)
    t0 = time.perf_counter()
    tag = worker_tag()
    with run_folder_tag(tag):
        r = engine.verify_chunk(cfg, work, work.items[start:stop], first=start == 0, sim=sim, seed=seed + start,
                                verilog=None, verilator_opt=verilator_opt, progress=None)
    return {"run": r, "ids": list(range(start, start + len(work.items[start:stop]))), "worker": tag,
            "seconds": time.perf_counter() - t0}


def verify_sharded(engine: Engine, cfg, client, *, count: int | None = None, sim: str = "verilator", seed: int = 0,
                   options: dict | None = None, chunk: int | None = None, verilator_opt: str | None = None,
                   progress: Progress = None) -> dict:
    """:func:`verify` with its chunks spread over the workers of a Dask ``client``; the same report.

    The workload is made here (as :func:`verify` makes it) and sent to the
    workers once; each chunk of ``chunk`` items (default: the engine's chunk,
    smaller when that would leave a worker idle) is one task. The chunks'
    results are merged in the workload's order, so the report equals an
    unsharded run of the same seed, plus ``sharding``: the scheduler, the
    chunks with the item ids each ran and the worker that ran it.
    """
    count = engine.count_default if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"{engine.count_flag} must be at least 1, got {count}")
    if seed < 0:
        raise UserError(f"--seed must be 0 or more, got {seed}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise UserError(f"--chunk must be at least 1, got {chunk!r}")
    from distributed import as_completed

    t0 = time.perf_counter()
    work = engine.verify_workload(cfg, count=count, seed=seed, **(options or {}))
    n = len(work.items)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    size = chunk or min(engine.chunk, -(-n // workers))
    spans = [(at, min(at + size, n)) for at in range(0, n, size)]
    shared = client.scatter(work, broadcast=True)
    futures = {client.submit(verify_chunk_task, engine.name, cfg.to_dict(), shared, a, b, sim=sim, seed=seed,
                             verilator_opt=verilator_opt, pure=False): i for i, (a, b) in enumerate(spans)}
    done: dict[int, dict] = {}
    for future in as_completed(futures):
        done[futures[future]] = future.result()
        if progress:
            bad = sum(x["run"]["mismatches"] for x in done.values())
            progress(f"  chunk {len(done)}/{len(spans)} done ({sum(len(x['ids']) for x in done.values())}/{n} "
                     f"{engine.item}s, {bad} mismatching words), {time.perf_counter() - t0:.1f} s")
    chunks = [done[i] for i in range(len(spans))]
    report = _verify_report(engine, cfg, work, [c["run"] for c in chunks], sim)
    report["seconds"] = time.perf_counter() - t0
    report["sharding"] = {
        "scheduler": client.scheduler.address,
        "workers": workers,
        "chunk": size,
        "chunks": [{"ids": c["ids"], "worker": c["worker"], "seconds": round(c["seconds"], 3)} for c in chunks],
    }
    return report


#: ``--clock-mhz auto``: builds at most, each at the highest PLL clock at or below the last one's Fmax.
AUTO_TRIES = 3


def build(engine: Engine, cfg, board: str, *, top: str = "uart", baud: int = 115200, clock_mhz=None,
          seed: int = 1, timing_ripup: bool = False, preload_args=None, progress: Progress = None) -> dict:
    """Synthesis, place and route of the engine for ``board``; the honest report (see :func:`_report`).

    ``top="uart"``: the board top: the board oscillator into a PLL that makes
    the engine's clock, the USB-UART bridge at ``baud``, the engine and its
    preload (:meth:`Engine.preload`) in a ROM, so the board answers RUN at
    once; its bitstream is the one to program, and it runs at the PLL's
    frequency. ``clock_mhz``: the clock wanted (the highest PLL frequency at or
    below it is used; default :meth:`Engine.default_clock_mhz`), or ``"auto"``:
    build at the default and, while timing fails, again at the highest PLL
    frequency at or below the achieved Fmax (at most :data:`AUTO_TRIES`
    builds, each logged). ``top="harness"``: the engine alone behind the
    serial measurement harness, with ``clock_mhz`` as a constraint only (no
    PLL: a measurement of the engine's own resources and Fmax).
    """
    from metafab.gen.boards import get_board
    from metafab.gen.synth import build as build_harnessed
    from metafab.gen.synth import build_board_top, check_options
    from metafab.hw.board_top import BoardTop, uart_divisor
    from metafab.hw.pll import pll_setting
    from metafab.reference.protocol import encode_request

    if top not in TOPS:
        raise UserError(f"unknown top {top!r}; valid: {', '.join(TOPS)}")
    b = get_board(board)
    auto = clock_mhz == "auto"
    want = engine.default_clock_mhz(b.family) if clock_mhz is None or auto else clock_mhz
    name = engine.build_name(cfg, top)
    say = progress or (lambda line: None)
    if top == "harness":
        # before any component exists (an unused one warns when it is collected)
        check_options(b, name=name, target_mhz=want, seed=seed, timing_ripup=timing_ripup)
        r = build_harnessed(engine.component(cfg), b, name=name, target_mhz=want, seed=seed,
                            timing_ripup=timing_ripup, progress=progress)
        return _report(engine, cfg, b, r, top=top, baud=None, pll=None, tries=[], source=None)
    b.check_baud(baud)
    setting = pll_setting(b.family, b.oscillator_mhz, want)
    uart_divisor(setting.out_hz, baud)
    check_options(b, name=name, target_mhz=setting.out_mhz, seed=seed, timing_ripup=timing_ripup)
    words, source = engine.preload(cfg, preload_args)
    preload = encode_request(engine.preload_opcode, words) if words is not None else None  # None: the host LOADs
    tries = []
    while True:
        say(f"{b.name}: engine clock {setting.out_mhz:.4g} MHz from the {b.oscillator_mhz:g} MHz oscillator "
            f"(asked {setting.requested_mhz:g} MHz; PLL {setting.dividers})")
        board_top = BoardTop(engine.component(cfg), baud=baud, preload=preload, pll=setting)
        r = build_board_top(board_top, b, clock=board_top.clock, name=name, target_mhz=setting.out_mhz,
                            seed=seed, timing_ripup=timing_ripup, progress=progress)
        tries.append({"clock_mhz": round(setting.out_mhz, 4), "fmax_mhz": r["fmax_mhz"], "timing": r["timing"]})
        if not auto or r["timing"] != "FAIL" or len(tries) >= AUTO_TRIES:  # None: nextpnr reported no Fmax
            break
        lower = min(r["fmax_mhz"], setting.out_mhz * 0.99)
        say(f"{b.name}: timing fails at {setting.out_mhz:.4g} MHz (Fmax {r['fmax_mhz']} MHz); "
            f"build {len(tries) + 1} of at most {AUTO_TRIES} at the highest PLL clock at or below {lower:.4g} MHz")
        setting = pll_setting(b.family, b.oscillator_mhz, lower)
        uart_divisor(setting.out_hz, baud)
    return _report(engine, cfg, b, r, top=top, baud=baud, pll=setting, tries=tries, source=source)


def _link(engine: Engine, cfg, clock_mhz: float, baud: int) -> dict:
    """One request and its response over the UART at ``baud`` (10 bits a byte) plus the engine's latency."""
    _, run, result = engine.packet_words(cfg)
    up, down = 4 * (1 + run), 4 * (1 + result)
    wire_us = (up + down) * 10 / baud * 1e6
    engine_us = engine.item_cycles(cfg) / clock_mhz
    return {"baud": baud, "request_bytes": up, "response_bytes": down, "wire_us": round(wire_us, 3),
            "engine_us": round(engine_us, 3), "total_us": round(wire_us + engine_us, 3),
            "bound": "link" if wire_us > engine_us else "engine"}


def _report(engine: Engine, cfg, board, r: dict, *, top, baud, pll, tries, source) -> dict:
    """The build report: the clock the bitstream runs at, Fmax, timing PASS/FAIL, device utilisation in
    percent, the critical path, latencies at the clock (and, labelled, at Fmax), the link, the tools."""
    r.update(engine=engine.name, design=cfg.name, config=cfg.to_dict(), top=top, baud=baud)
    if pll is not None:
        r.update(clock_mhz=round(pll.out_mhz, 4), requested_mhz=pll.requested_mhz, pll=pll.to_dict(),
                 clock_source="pll", oscillator_mhz=pll.in_mhz, tries=tries)
        r["link"] = {str(b): _link(engine, cfg, pll.out_mhz, b) for b in sorted({baud, board.max_baud})}
    else:  # the harness: a measurement of the engine alone; its constraint is no clock of a bitstream
        r.update(clock_mhz=None, requested_mhz=r["constraint_mhz"], pll=None, clock_source="harness (no PLL)",
                 tries=[])
    r.update(engine.build_figures(cfg, r, source))
    r["cpu_baseline"] = cpu_baseline(engine, cfg)
    cpu = r["cpu_baseline"] or {}
    if pll is not None and cpu.get("min_us"):
        engine_us = engine.item_cycles(cfg) / pll.out_mhz
        r["cpu_ratio"] = round(cpu["min_us"] / engine_us, 3)  # > 1: the engine is faster than one host core
    return r


def cpu_baseline(engine: Engine, cfg, reps: int | None = None) -> dict | None:
    """The engine's computation for ``cfg`` as plain C on one core of this machine, timed
    (:mod:`metafab.gen.cpu_baseline`); None when the engine has no C kernel."""
    from metafab.gen.cpu_baseline import measure

    kernel = engine.cpu_kernel(cfg)
    if kernel is None:
        return None
    return measure(kernel, reps=reps or {"query": 200000, "task": 20000}.get(kernel.per, 500))


def write_build_report(engine: Engine, r: dict) -> list[Path]:
    """``report.json`` and ``report.md`` beside the bitstream; returns their paths."""
    folder = Path(r["build_dir"])
    (folder / "report.json").write_text(dumps(r))
    (folder / "report.md").write_text("# metafab build report\n\n```\n" + format_build(engine, r) + "\n```\n")
    return [folder / "report.json", folder / "report.md"]


def write_verify_report(engine: Engine, cfg, report: dict) -> Path:
    """The verification report as ``<build>/verify/<design>-<digest>/report.json`` (``metafab report`` reads
    it); returns its path."""
    folder = build_root() / "verify" / f"{cfg.name}-{config_digest(cfg)[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(dumps(report))
    return folder / "report.json"


def manifest(engine: Engine, cfg) -> dict:
    """Everything a user or a host program needs to know about a generated engine."""
    from metafab.reference.protocol import STATUS_FIELDS

    load, run, result = engine.packet_words(cfg)
    req, resp = {"LOAD": load, "RUN": run, "STATUS": 0}, {"LOAD": 0, "RUN": result, "STATUS": len(STATUS_FIELDS)}
    for name, (n_req, n_resp) in engine.extra_packets(cfg).items():
        req[name], resp[name] = n_req, n_resp
    doc = {
        "engine": engine.name,
        "toplevel": engine.toplevel,
        "design": cfg.name,
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "ports": ports(),
        "protocol": protocol(req, resp),
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


#: The self-checking testbench's data files (``generate``), in the layout of :func:`metafab.gen.wrappers.hex_beats`.
REQUEST_FILE, EXPECTED_FILE = "request.hex", "expected.hex"


def testbench(engine: Engine, cfg, args, count: int, wrapper: str) -> tuple[dict[str, str], dict]:
    """The self-checking testbench of ``wrapper`` on the engine's example session of ``count`` RUNs
    (:meth:`Engine.example_session`): ``{file name: text}`` (the Verilog, the request beats, the expected
    response beats) and its manifest entry.

    The requests are framed by :func:`~metafab.reference.protocol.encode_request`, the reference's
    responses by :func:`~metafab.reference.protocol.encode_response`. The watchdog allows eight cycles per
    word and per modelled cycle of the RUNs (:meth:`Engine.item_cycles`), plus 1000.
    """
    from metafab.gen.wrappers import hex_beats, selfcheck_testbench
    from metafab.reference.protocol import Status, encode_request, encode_response

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"--tasks must be at least 1, got {count!r}")
    session, source = engine.example_session(cfg, args, count)
    requests = [encode_request(x.opcode, x.payload) for x in session]
    responses = [encode_response(x.response.code, x.response.payload) for x in session]
    n_req, n_resp = sum(map(len, requests)), sum(map(len, responses))
    timeout = 8 * (n_req + n_resp + count * engine.item_cycles(cfg)) + 1000
    lines = [f"{x.what}: {len(q)} word{'s' if len(q) > 1 else ''} -> {Status(x.response.code).name}, "
             f"{len(r)} word{'s' if len(r) > 1 else ''}" for x, q, r in zip(session, requests, responses, strict=True)]
    tb, text = selfcheck_testbench(wrapper=wrapper, engine=engine.name, design=cfg.name, request_words=n_req,
                                   response_words=n_resp, timeout=timeout, request_file=REQUEST_FILE,
                                   expected_file=EXPECTED_FILE, source=source, session=lines)
    files = {f"{tb}.v": text, REQUEST_FILE: hex_beats(b for r in requests for b in r),
             EXPECTED_FILE: hex_beats(b for r in responses for b in r)}
    note = {
        "module": tb,
        "files": list(files),
        "source": source,
        "runs": count,
        "request_words": n_req,
        "response_words": n_resp,
        "timeout_cycles": timeout,
        "session": lines,
        "layout": "one word a line, 9 hex digits {last, data[31:0]} ($readmemh)",
        "prints": f"PASS: {n_resp} words",
    }
    return files, note


def generate(engine: Engine, cfg, out, args, progress: Progress = None) -> list[Path]:
    """Verilog, AXI-Stream wrapper, FuseSoC core, manifest, the engine's example files and the wrapper's
    self-checking testbench (:func:`testbench`, ``args.tasks`` RUNs) into ``out`` (byte-identical for the same
    inputs); returns the paths written."""
    from metafab.gen.wrappers import axis_wrapper, fusesoc_core

    wrapper, wrapper_text = axis_wrapper(engine=engine.name, toplevel=engine.toplevel, design=cfg.name)
    # computed (and validated) before anything is written
    extra, notes = engine.example_files(cfg, args)
    tb_files, tb_note = testbench(engine, cfg, args, args.tasks, wrapper)
    text = engine_verilog(engine, cfg, progress)
    doc = manifest(engine, cfg)
    doc.update(notes)
    doc["testbench"] = tb_note
    core = fusesoc_core(design=cfg.name, verilog=f"{engine.toplevel}.v", wrapper_file=f"{wrapper}.v",
                        wrapper=wrapper, description=f"metafab {engine.title} {cfg.name} with an AXI-Stream wrapper",
                        testbench=tb_note["module"], testbench_files=tuple(tb_files))
    files = {f"{engine.toplevel}.v": text, f"{wrapper}.v": wrapper_text, f"{cfg.name}.core": core,
             "manifest.json": dumps(doc), **extra, **tb_files}
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
    """The text of a build report: the clock and timing, the board's figures, the engine's latencies, the
    link, the anchors."""
    pct = ", ".join(f"{cell} {e['used']}/{e['available']} ({e['percent']:g} %)"
                    for cell, e in r["utilisation"].items() if e.get("percent") is not None)
    if r.get("clock_mhz"):
        clock = (f"{r['clock_mhz']:.4g} MHz from the PLL ({r['oscillator_mhz']:g} MHz oscillator; asked "
                 f"{r['requested_mhz']:g} MHz)")
    else:
        clock = f"{r['clock_source']}: constraint {r['constraint_mhz']:g} MHz"
    lines = [
        f"design            {r['design']}",
        f"board             {r['board']} ({r['device']})",
        f"clock             {clock}",
        f"Fmax              {r['fmax_mhz']:.2f} MHz: timing {r['timing']}",
        f"place and route   nextpnr seed {r['seed']}" + (", timing-driven rip-up" if r["timing_ripup"] else ""),
        f"LUT / FF / DSP / BRAM   {r['lut']} / {r['ff']} / {r['dsp']} / {r['bram']}",
        f"device            {pct}",
        f"critical path     {r['critical_path_ns']} ns, {r['critical_path_from']} -> {r['critical_path_to']}",
    ]
    if len(r.get("tries") or []) > 1:
        lines.append("clock tries       " + "; ".join(f"{t['clock_mhz']:g} MHz: Fmax {t['fmax_mhz']} {t['timing']}"
                                                      for t in r["tries"]))
    lines += [f"{k:<18}{v}" for k, v in engine.build_rows(r)]
    for baud, link in (r.get("link") or {}).items():
        lines.append(f"over the UART      {int(baud):>8} baud: {link['total_us']:.1f} us per {engine.run_item} "
                     f"({link['request_bytes']} + {link['response_bytes']} bytes {link['wire_us']:.1f} us, "
                     f"engine {link['engine_us']:.2f} us; {link['bound']}-bound)")
    cpu = r.get("cpu_baseline") or {}
    if cpu.get("min_us"):
        ratio = r.get("cpu_ratio")
        lines.append(f"  vs plain C on this CPU  {cpu['min_us']:.2f} us per {cpu['per']} (min of {cpu['runs']}, "
                     f"{cpu['flags']}, 1 core{'' if cpu['matches_float64'] else ', NOT matching float64'})"
                     + (f": the engine at its clock is {ratio:.2f}x that speed" if ratio else ""))
    elif cpu.get("error"):
        lines.append(f"  vs plain C on this CPU  {cpu['error']}")
    for k, v in (r.get("anchor") or {}).items():
        lines.append(f"  vs {k:<22} {v:.1f} us")
    lines.append(f"tools             {r['yosys']}; {r.get('nextpnr', '')}")
    lines.append(f"bitstream         {r['bitstream']}")
    return "\n".join(lines)
