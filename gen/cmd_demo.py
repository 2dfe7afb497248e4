"""``metafab demo``: the main job on the built-in default designs, end to end, with one summary table.

For each engine of the registry that is in the demo (``Engine.in_demo``):
generate the default design's Verilog, verify it in Verilator against the
bit-exact reference (0 mismatching words) and the float64 model, and build
the board top for the ULX3S-85F with the open toolchain. The board builds
start first, in processes of their own (the longer one first,
``Engine.build_order``); the simulations run beside them, each in a process
of its own, at idle scheduling priority, so that the builds, which set the
demo's length, keep the two cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HELP = "run the main job on the built-in default designs and print a summary table"
BOARD = "ulx3s-85f"


def _demo_engines():
    from metafab.gen.engines import engines

    return [e for e in engines() if e.in_demo]


def _count_dest(engine) -> str:
    return engine.count_flag.lstrip("-").replace("-", "_")


def register(sub):
    from metafab.gen.cmd_build import clock

    p = sub.add_parser("demo", help=HELP, description=HELP + " (generate, verify in Verilator, build for the "
                       f"{BOARD}).")
    seen = set()
    for engine in _demo_engines():  # each engine's verification size, e.g. --tasks (maml), --queries (match)
        if engine.count_flag not in seen:
            seen.add(engine.count_flag)
            p.add_argument(engine.count_flag, type=int, default=engine.demo_count,
                           help=f"{engine.name}: {engine.item}s' worth to verify, as in metafab verify "
                           f"{engine.name} {engine.count_flag} (default {engine.demo_count})")
    p.add_argument("--board", default=BOARD, help=f"board to build for (default {BOARD})")
    p.add_argument("--skip-build", action="store_true", help="skip synthesis and place and route")
    p.add_argument("--clock-mhz", type=clock, default=None, metavar="F|auto",
                   help="the engines' clock on the board, as metafab build --clock-mhz (default: each engine's "
                   "default clock for the board's family)")
    p.add_argument("--build-minutes", type=float, default=30.0,
                   help="stop a board build still running this many minutes after the demo started (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def _say(msg: str):
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


class _Background:
    """A ``metafab`` command in a second process, its JSON result collected at the end."""

    def __init__(self, argv: list[str], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.out = log.with_suffix(".json")
        self._f = open(log, "w")  # noqa: SIM115 - closed in stop()
        self._out = open(self.out, "w")  # noqa: SIM115 - closed in stop()
        # A process group of its own, so that stop() also ends the tools it runs. Not a session of its
        # own: with the kernel's autogroup scheduling each session shares the CPU as one group, and the
        # idle-priority simulations in the demo's session would take a third of it from the builds.
        self.proc = subprocess.Popen([sys.executable, "-m", "metafab.gen.cli", *argv, "--json"],
                                     stdout=self._out, stderr=self._f, process_group=0)
        self.started = time.perf_counter()

    def stop(self):
        """End the command and every tool it started."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        self.proc.wait()
        self._f.close()
        self._out.close()

    def result(self, deadline: float | None = None) -> dict:
        try:
            code = self.proc.wait(None if deadline is None else max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            self.stop()
            return {"error": "not finished within the demo's build time limit (--build-minutes); "
                             "metafab build runs it to the end", "log": str(self.log)}
        self.stop()  # (it has ended: this closes its files)
        if code != 0:
            tail = self.log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            return {"error": f"exit status {code}: {tail[0]}", "log": str(self.log)}
        doc = json.loads(self.out.read_text())
        doc["wall_seconds"] = time.perf_counter() - self.started
        return doc


def _lower_priority():
    """Run this process (the simulations, and the compilers they start) only on otherwise idle cores."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _verify(name: str, count: int, verilog: str) -> dict:
    """One engine's default design verified in Verilator (runs in a worker process)."""
    from metafab.gen import flow
    from metafab.gen.engines import get_engine

    engine = get_engine(name)
    cfg = engine.config_from_dict({})
    return flow.verify(engine, cfg, count=count, sim="verilator", seed=0, verilog=verilog, progress=_say)


def run(args) -> int:
    from metafab.gen import flow
    from metafab.gen.boards import get_board
    from metafab.gen.engines import get_engine
    from metafab.reference.errors import UserError
    from metafab.sim.runner import build_root

    engines = _demo_engines()
    for engine in engines:
        n = getattr(args, _count_dest(engine))
        if n < 1:
            raise UserError(f"{engine.count_flag} must be at least 1, got {n}")
    get_board(args.board)
    t0 = time.perf_counter()
    root = build_root() / "demo"
    cfgs = {e.name: e.config_from_dict({}) for e in engines}
    doc: dict = {"board": args.board, **{e.name: {} for e in engines}}
    builds = {}

    if not args.skip_build:
        # the longest build starts first; each build elaborates its own board top
        for engine in sorted((e for e in engines if e.demo_builds), key=lambda e: -e.build_order):
            log = root / f"{engine.name}_build.log"
            _say(f"{engine.name} engine: building the board top for {args.board} in the background (log: {log})")
            clock_args = ["--clock-mhz", str(args.clock_mhz)] if args.clock_mhz is not None else []
            builds[engine.name] = _Background(["build", engine.name, "--board", args.board, *clock_args,
                                               "--allow-timing-fail"], log)
        # the board builds set the demo's length: the simulations take a core only when one is idle
        _lower_priority()
    try:
        verilog = {}
        for engine in engines:
            cfg = cfgs[engine.name]
            _say(f"{engine.name} engine {cfg.name}: generating Verilog")
            (root / engine.name).mkdir(parents=True, exist_ok=True)
            verilog[engine.name] = flow.engine_verilog(engine, cfg)
            (root / engine.name / f"{engine.toplevel}.v").write_text(verilog[engine.name])
        # the simulations in processes of their own (each sets its simulator's environment)
        with ProcessPoolExecutor(len(engines), mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = {e.name: pool.submit(_verify, e.name, getattr(args, _count_dest(e)), verilog[e.name])
                    for e in engines}
            for name, job in jobs.items():
                doc[name]["verify"] = job.result()
                flow.write_verify_report(get_engine(name), cfgs[name], doc[name]["verify"])  # for metafab report
        deadline = t0 + 60 * args.build_minutes
        for name, b in builds.items():
            _say(f"{name} engine: waiting for the board build")
            doc[name]["build"] = b.result(deadline)
    except BaseException:  # an error or Ctrl-C: no build keeps running behind the user's back
        for b in builds.values():
            b.stop()
        raise
    doc["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        print(table(doc))
    return 0 if all(e.passed(doc[e.name]["verify"]) for e in engines) else 1


def _build_rows(engine, b: dict) -> list[tuple[str, str]]:
    if not b:
        return []
    if "error" in b:
        return [("board build", f"failed: {b['error']} (log {b.get('log')})")]
    util = {k: e for k, e in b["utilisation"].items()}
    share = ", ".join(f"{label} {util[cell]['percent']:g} %" for label, cell in _DEVICE_SHARES[b["family"]]
                      if cell in util)
    return [
        (f"{b['board']} ({b['device']})", f"clock {b['clock_mhz']:.4g} MHz (PLL), Fmax {b['fmax_mhz']:.1f} MHz: "
                                           f"timing {b['timing']}"),
        ("device", f"LUT {b['lut']}, FF {b['ff']}, DSP {b['dsp']}, BRAM {b['bram']}; {share}"),
        *engine.demo_build_rows(b),
        *_cpu_rows(b),
    ]


def _cpu_rows(b: dict) -> list[tuple[str, str]]:
    cpu = b.get("cpu_baseline") or {}
    if not cpu.get("min_us"):
        return [("plain C on this CPU", cpu["error"])] if cpu.get("error") else []
    ratio = b.get("cpu_ratio")
    return [("plain C float32, 1 host core", f"{cpu['min_us']:.2f} us per {cpu['per']} (-O3 -march=native, "
                                              f"min of {cpu['runs']})"
             + (f"; engine / CPU speed {ratio:.2f}x" if ratio else ""))]


#: The device resources the demo shows in percent, per family: (label, nextpnr cell type).
_DEVICE_SHARES = {
    "ecp5": (("logic", "TRELLIS_COMB"), ("DSP", "MULT18X18D"), ("BRAM", "DP16KD")),
    "ice40": (("logic", "ICESTORM_LC"), ("DSP", "ICESTORM_DSP"), ("BRAM", "ICESTORM_RAM")),
}


def table(doc: dict) -> str:
    """The demo's summary: a section per engine that ran."""
    from metafab.gen.anchors import ANCHOR_SOURCE
    from metafab.gen.engines import engines

    lines = []
    for engine in engines():
        part = doc.get(engine.name) or {}
        if not part.get("verify"):
            continue
        cfg = engine.config_from_dict(part["verify"]["config"])
        rows = engine.demo_rows(part["verify"]) + _build_rows(engine, part.get("build") or {})
        if not engine.demo_builds:
            rows += engine.demo_build_note(cfg)
        rows += engine.demo_anchor_rows()
        lines += _section(f"metafab demo: {engine.demo_heading(cfg)}", rows)
    lines.append(f"(GPU and CPU figures: {ANCHOR_SOURCE})")
    lines.append(f"total {doc['seconds']:.0f} s")
    return "\n".join(lines)


def _section(title: str, rows) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return ["", title, "=" * 78] + [f"{k:<{width}}  {val}" for k, val in rows]
