"""``metafab demo``: the main job on the built-in default designs, end to end, with one summary table.

For each engine: generate the default design (Verilog, manifest, wrappers),
verify it in Verilator against the bit-exact reference (0 mismatching
words) and the float64 model, and build the board top for the ULX3S-85F
with the open toolchain. Both board builds start first, in processes of
their own (the longer similarity build first); the simulations run beside
them, each in a process of its own, at idle scheduling priority, so that
the builds, which set the demo's length, keep the two cores.
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


def register(sub):
    p = sub.add_parser("demo", help=HELP, description=HELP + " (generate, verify in Verilator, build for the "
                       f"{BOARD}).")
    p.add_argument("--tasks", type=int, default=100, help="MAML tasks to verify (default 100)")
    p.add_argument("--queries", type=int, default=200, help="similarity-engine queries to verify (default 200)")
    p.add_argument("--board", default=BOARD, help=f"board to build for (default {BOARD})")
    p.add_argument("--skip-build", action="store_true", help="skip synthesis and place and route")
    p.add_argument("--target-mhz", type=float, default=100.0,
                   help="clock constraint of the board builds (default 100, the project's Fmax target)")
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


def run(args) -> int:
    from metafab.gen import maml_flow, match_flow
    from metafab.reference.config import MamlConfig, MatchConfig
    from metafab.reference.errors import UserError
    from metafab.sim.runner import build_root

    if args.tasks < 1:
        raise UserError(f"--tasks must be at least 1, got {args.tasks}")
    if args.queries < 1:
        raise UserError(f"--queries must be at least 1, got {args.queries}")
    if not 0 < args.target_mhz <= 1000:
        raise UserError(f"--target-mhz must be in (0, 1000], got {args.target_mhz}")
    t0 = time.perf_counter()
    root = build_root() / "demo"
    cfg, mcfg = MamlConfig(), MatchConfig()
    doc: dict = {"board": args.board, "maml": {}, "match": {}}
    builds = {}

    if not args.skip_build:
        # the similarity build is the longer one: it starts first; each build elaborates its own board top
        for engine in ("match", "maml"):
            _say(f"{engine} engine: building the board top for {args.board} in the background "
                 f"(log: {root / f'{engine}_build.log'})")
            builds[engine] = _Background(["build", engine, "--board", args.board, "--target-mhz", str(args.target_mhz)],
                                         root / f"{engine}_build.log")
        # the board builds set the demo's length: the simulations take a core only when one is idle
        _lower_priority()
    try:
        verilog = {}
        for engine, c, flow in (("maml", cfg, maml_flow), ("match", mcfg, match_flow)):
            _say(f"{engine} engine {c.name}: generating Verilog")
            (root / engine).mkdir(parents=True, exist_ok=True)
            verilog[engine] = flow.engine_verilog(c)
            (root / engine / f"{flow.TOPLEVEL}.v").write_text(verilog[engine])
        # the two simulations in two processes of their own (each sets its simulator's environment)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            maml_job = pool.submit(maml_flow.verify, cfg, tasks=args.tasks, sim="verilator", seed=0,
                                   verilog=verilog["maml"], progress=_say)
            match_job = pool.submit(match_flow.verify, mcfg, queries=args.queries, sim="verilator", seed=0,
                                    features="auto", verilog=verilog["match"], progress=_say)
            doc["maml"]["verify"], doc["match"]["verify"] = maml_job.result(), match_job.result()
        deadline = t0 + 60 * args.build_minutes
        for engine, b in builds.items():
            _say(f"{engine} engine: waiting for the board build")
            doc[engine]["build"] = b.result(deadline)
    except BaseException:  # an error or Ctrl-C: no build keeps running behind the user's back
        for b in builds.values():
            b.stop()
        raise
    doc["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        print(table(doc))
    v, m = doc["maml"]["verify"], doc["match"]["verify"]
    ok = v["mismatches"] == 0 and v["cycles_match_model"]
    ok = ok and m["mismatches"] == 0 and m["rtl_equals_fixed"] and m["cycles_match_model"]
    return 0 if ok else 1


def _build_rows(b: dict, latency) -> list[tuple[str, str]]:
    if not b:
        return []
    if "error" in b:
        return [("board build", f"failed: {b['error']} (log {b.get('log')})")]
    return [
        (f"{b['board']} ({b['device']})", f"Fmax {b['fmax_mhz']:.1f} MHz; LUT {b['lut']}, FF {b['ff']}, "
                                           f"DSP {b['dsp']}, BRAM {b['bram']}"),
        *latency(b),
    ]


def table(doc: dict) -> str:
    from metafab.gen.anchors import ANCHOR_SOURCE, MAML_SINUSOID_US, MATCHING_D64_US

    v = doc["maml"]["verify"]
    rows = [
        ("design", v["design"]),
        ("initial weights", v["weights"]),
        ("tasks verified (Verilator)", f"{v['tasks']} ({v['output_words']} output words)"),
        ("mismatching output words", str(v["mismatches"])),
        ("cycles per task", f"{v['cycles_model']} modelled, {', '.join(map(str, v['cycles_measured']))} measured"),
        ("MAC-lane utilisation", f"{100 * v['utilisation']:.1f} % of {v['lanes']} lanes"),
    ]
    if "mse_ratio" in v:
        rows.append(("query MSE fixed / float64", f"{v['mse_fixed']:.4f} / {v['mse_float64']:.4f} "
                                                   f"= {v['mse_ratio']:.4f}"))
    rows += _build_rows(doc["maml"].get("build") or {},
                        lambda b: [("batch-1 latency at Fmax", f"{b['latency_us']:.2f} us per task")])
    anchor = MAML_SINUSOID_US[1]
    rows.append(("H100, PyTorch CUDA graph", f"{anchor['h100_cuda_graph']} us"))
    rows.append(("numpy float64 on a host CPU", f"{anchor['numpy_f64_host_cpu']} us"))
    lines = _section("metafab demo: MAML adaptation engine", rows)

    m = doc["match"].get("verify")
    if m:
        a = m["accuracy"]
        rows = [
            ("design", m["design"]),
            ("features", m["features"]),
            ("queries verified (Verilator)", f"{m['queries']} in {m['episodes']} episodes "
                                             f"({m['output_words']} output words)"),
            ("mismatching output words", str(m["mismatches"])),
            ("accuracy RTL / fixed / float64", f"{100 * a['rtl']:.2f} / {100 * a['fixed']:.2f} / "
                                               f"{100 * a['float64']:.2f} %"),
            ("latency per query", f"{m['latency_model']} cycles modelled, "
                                  f"{', '.join(map(str, m['latency_measured']))} measured"),
            ("initiation interval", f"{m['ii_model']} cycles modelled, {m['ii_measured']} measured"),
        ]

        def match_latency(b):
            us = b.get("latency_us") or {}
            return [("latency per query at Fmax", f"{us.get('compute', 0):.3f} us; one query every "
                                                  f"{us.get('ii', 0):.3f} us")]

        rows += _build_rows(doc["match"].get("build") or {}, match_latency)
        anchor = MATCHING_D64_US.get((5, 5))
        if anchor:
            rows.append(("H100, PyTorch CUDA graph", f"{anchor['h100_cuda_graph']} us"))
        lines += _section("metafab demo: similarity engine (Matching Networks)", rows)
    lines.append(f"(GPU and CPU figures: {ANCHOR_SOURCE})")
    lines.append(f"total {doc['seconds']:.0f} s")
    return "\n".join(lines)


def _section(title: str, rows) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return ["", title, "=" * 78] + [f"{k:<{width}}  {val}" for k, val in rows]
