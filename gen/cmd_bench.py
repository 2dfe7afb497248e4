"""``metafab bench``: the benchmark figures (never timed tests): cycles, utilisation, simulator speed, Fmax.

- each engine's cycle model across lane counts (:meth:`Engine.bench_model`):
  cycles, MAC-lane utilisation, latency at 100 MHz;
- simulator speed on the MAC lane (cycles per second of simulated time) in
  cocotb + Verilator, cocotb + Icarus and the Amaranth simulator, on the
  same random stimulus;
- with ``--synth``: the MAC lane's resources and Fmax on iCE40 UP5K and
  ECP5-85F.
"""

from __future__ import annotations

import json
import sys
import time

HELP = "print the benchmark figures: cycle model, utilisation, simulator speed (and Fmax with --synth)"


def register(sub):
    p = sub.add_parser("bench", help=HELP, description=HELP + ".")
    p.add_argument("--synth", action="store_true", help="also synthesise the MAC lane for both boards")
    p.add_argument("--cpu", action="store_true",
                   help="also time each engine's default design as plain C (float32, -O3 -march=native, one core), "
                   "its outputs checked against float64")
    p.add_argument("--packets", type=int, default=3000, help="MAC-lane packets per simulator (default 3000)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def cycle_models() -> dict:
    """Each engine's cycle-model table (:meth:`Engine.bench_model`): ``{engine: {"title", "rows"}}``."""
    from metafab.gen.engines import engines

    out = {}
    for engine in engines():
        table = engine.bench_model()
        if table:
            out[engine.name] = {"title": table[0], "rows": table[1]}
    return out


def board_builds(cpu: dict) -> list[dict]:
    """The latest report of every board build under the build folder (``report.json``), one row each: the
    clock, timing, cycles, latency at the clock, resources in percent, and the CPU baseline of this run
    (when measured for the same design) with the engine/CPU speed ratio."""
    import json as _json

    from metafab.gen.engines import get_engine
    from metafab.reference.errors import UserError
    from metafab.sim.runner import build_root

    rows = []
    for path in sorted((build_root() / "synth").glob("*/report.json")):
        try:
            r = _json.loads(path.read_text())
            engine = get_engine(r["engine"])
        except (ValueError, KeyError, UserError):
            continue  # a report of an engine not registered here, or of an older metafab
        if not r.get("clock_mhz"):
            continue
        cfg = engine.config_from_dict(r["config"])
        engine_us = engine.item_cycles(cfg) / r["clock_mhz"]
        base = (cpu.get(r["design"]) or {}).get("min_us")
        util = r.get("utilisation", {})
        rows.append({
            "design": r["design"], "board": r["board"], "clock_mhz": r["clock_mhz"], "fmax_mhz": r["fmax_mhz"],
            "timing": r["timing"], "cycles": engine.item_cycles(cfg), "us_per_item": round(engine_us, 3),
            "item": engine.run_item, "lane_utilisation": r.get("lane_utilisation"),
            "percent": {cell: e.get("percent") for cell, e in util.items()},
            "cpu_us": base, "cpu_ratio": round(base / engine_us, 3) if base else None, "report": str(path),
        })
    return rows


def cpu_baselines() -> dict:
    """Each engine's default design (and the MAML engine with 5 steps) as plain C, timed here."""
    from metafab.gen import flow
    from metafab.gen.engines import engines

    out = {}
    for engine in engines():
        cfgs = [engine.config_from_dict({})]
        if "steps" in cfgs[0].to_dict():
            cfgs.append(cfgs[0].replace(steps=5))
        for cfg in cfgs:
            r = flow.cpu_baseline(engine, cfg)
            if r is not None:
                out[cfg.name] = {"engine": engine.name, "design": cfg.name, **r}
    return out


def _print_table(title: str, rows: list[dict]) -> None:
    print(title)
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  " + "  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths, strict=True)))


def amaranth_mac_speed(packets: int) -> dict:
    import numpy as np
    from amaranth.sim import Simulator

    from metafab.hw.fixed import MacLane
    from metafab.reference.config import MacLaneConfig
    from metafab.reference.mac_lane import dot_products, random_packets

    cfg = MacLaneConfig()
    rng = np.random.default_rng(1)
    pk = random_packets(cfg, rng, packets)
    want = dot_products(cfg, pk)
    dut = MacLane(config=cfg)
    beats = [dut.in_layout.const({"a": int(a), "b": int(b), "last": int(k == len(pa) - 1)}).as_value().value
             for pa, pb in pk for k, (a, b) in enumerate(zip(pa, pb, strict=True))]
    got, cycles = [], [0]

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for word in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.as_value(), word)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles[0] += 1
            if valid:
                got.append(payload)
        ctx.set(dut.i.valid, 0)
        while len(got) < len(want):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles[0] += 1
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    t0 = time.perf_counter()
    sim.run()
    dt = time.perf_counter() - t0
    return {"outputs": len(got), "mismatches": sum(g != w for g, w in zip(got, want, strict=True)),
            "cycles": cycles[0], "seconds": dt, "cycles_per_second": cycles[0] / dt}


def cocotb_mac_speed(sim: str, packets: int) -> dict:
    from metafab.gen.export import layout_fields, to_verilog
    from metafab.hw.fixed import MacLane
    from metafab.reference.config import MacLaneConfig
    from metafab.sim.runner import run_bench

    cfg = MacLaneConfig()
    dut = MacLane(config=cfg)
    r = run_bench(verilog=to_verilog(dut, "mac_lane"), toplevel="mac_lane", bench="metafab.sim.benches.mac_lane",
                  params=dict(config=cfg.to_dict(), in_fields=layout_fields(dut.in_layout), packets=packets,
                              max_len=9, seed=1, idle=0.0, backpressure=0.0),
                  sim=sim, run_name="bench")
    return {k: r.data[k] for k in ("outputs", "mismatches", "cycles", "seconds", "cycles_per_second")} | {
        "build_seconds": r.build_seconds}


def run(args) -> int:
    from metafab.sim.tools import find_icarus

    def say(msg):
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    doc = {"cycle_models": cycle_models(), "simulator_speed_mac_lane": {}, "synth_mac_lane": {}}
    if args.cpu:
        say("CPU baseline: each engine's default design as plain C")
        doc["cpu_baseline"] = cpu_baselines()
    doc["board_builds"] = board_builds(doc.get("cpu_baseline") or {})
    say("MAC lane in the Amaranth simulator")
    doc["simulator_speed_mac_lane"]["amaranth"] = amaranth_mac_speed(args.packets)
    for sim in ["verilator"] + (["icarus"] if find_icarus().found else []):
        say(f"MAC lane in cocotb + {sim}")
        doc["simulator_speed_mac_lane"][sim] = cocotb_mac_speed(sim, args.packets)
    if args.synth:
        from metafab.gen.synth import build
        from metafab.hw.fixed import MacLane
        from metafab.reference.config import MacLaneConfig

        for board in ("icebreaker", "ulx3s-85f"):
            say(f"MAC lane: synthesis, place and route for {board}")
            r = build(MacLane(config=MacLaneConfig()), board, name="mac_lane_bench", progress=None)
            doc["synth_mac_lane"][board] = {k: r[k] for k in ("device", "fmax_mhz", "lut", "ff", "dsp", "bram",
                                                              "seconds")}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    for table in doc["cycle_models"].values():
        _print_table(table["title"], table["rows"])
    for name, r in (doc.get("cpu_baseline") or {}).items():
        if "error" in r:
            print(f"CPU baseline, {name}: {r['error']}")
            continue
        print(f"CPU baseline, {r['design']}: {r['min_us']:.3f} us per {r['per']} (median {r['median_us']:.3f}, "
              f"{r['runs']} runs; {r['compiler']} {r['flags']}, one core; max |C - float64| "
              f"{r['max_abs_error_vs_float64']:.2g}, {'within' if r['matches_float64'] else 'OUTSIDE'} "
              f"{r['tolerance']})")
    if doc["board_builds"]:
        print("Board builds (the latest report of each; CPU baseline of this run where measured)")
        for b in doc["board_builds"]:
            cpu = f"; CPU {b['cpu_us']:.2f} us, engine/CPU speed {b['cpu_ratio']:.2f}x" if b["cpu_us"] else ""
            print(f"  {b['design']} on {b['board']}: {b['clock_mhz']:g} MHz, Fmax {b['fmax_mhz']}, {b['timing']}; "
                  f"{b['cycles']} cycles = {b['us_per_item']:.3f} us per {b['item']}{cpu}")
    print("Simulator speed on the MAC lane (one beat per cycle, no back-pressure)")
    for sim, r in doc["simulator_speed_mac_lane"].items():
        print(f"  {sim:<10} {r['cycles_per_second']:>10,.0f} cycles/s  ({r['cycles']} cycles, "
              f"{r['mismatches']} mismatches)")
    for board, r in doc["synth_mac_lane"].items():
        print(f"  {board:<10} {r['device']}: Fmax {r['fmax_mhz']:.1f} MHz, LUT {r['lut']}, FF {r['ff']}, "
              f"DSP {r['dsp']}, BRAM {r['bram']}")
    return 0
