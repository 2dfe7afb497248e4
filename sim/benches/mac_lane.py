"""cocotb bench: the MAC lane against the reference, with random idle and back-pressure.

Parameters (a JSON file named by ``METAFAB_BENCH``): ``config`` (a MacLaneConfig dict),
``in_fields`` (the input payload layout), ``packets``, ``max_len``, ``seed``,
``idle``, ``backpressure``. Writes ``{packets, beats, outputs, mismatches,
cycles, seconds, cycles_per_second, first_mismatch}`` to ``METAFAB_BENCH_OUT``.
"""

from __future__ import annotations

import random
import time

import cocotb
import numpy as np

from metafab.reference.config import MacLaneConfig
from metafab.reference.mac_lane import dot_products, random_packets
from metafab.sim.params import bench_params, write_result
from metafab.sim.stream import PayloadCodec, StreamBench, StreamSink, StreamSource


def _params() -> dict:
    return bench_params()



@cocotb.test()
async def mac_lane_matches_reference(dut):
    p = _params()
    cfg = MacLaneConfig.from_dict(p["config"])
    rng = np.random.default_rng(p["seed"])
    prng = random.Random(p["seed"])
    packets = random_packets(cfg, rng, p["packets"], p.get("max_len", 9))
    want = dot_products(cfg, packets)
    codec = PayloadCodec(p["in_fields"])
    assert len(dut.i__payload) == codec.width, "payload layout does not match the design"

    tb = StreamBench(dut)
    src = StreamSource(dut, "i", tb.clock, idle=p["idle"], rng=prng)
    sink = StreamSink(dut, "o", tb.clock, backpressure=p["backpressure"], rng=prng,
                      signed=cfg.out_fmt.signed)
    await tb.reset()
    t0 = time.perf_counter()
    c0 = tb.cycles
    beats = []
    for a, b in packets:
        for k in range(len(a)):
            beats.append(codec.pack({"a": int(a[k]), "b": int(b[k]), "last": int(k == len(a) - 1)}))
    src.send_nowait(beats)
    got = await sink.recv(len(want), timeout_cycles=20 * len(beats) + 1000)
    cycles = tb.cycles - c0
    seconds = time.perf_counter() - t0
    mismatches = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    result = {
        "packets": len(packets),
        "beats": len(beats),
        "outputs": len(got),
        "mismatches": len(mismatches),
        "cycles": cycles,
        "seconds": seconds,
        "cycles_per_second": cycles / seconds if seconds > 0 else 0.0,
        "first_mismatch": mismatches[0] if mismatches else None,
    }
    if mismatches:
        i, g, w = mismatches[0]
        result["failure"] = f"{len(mismatches)} mismatching outputs; first: output {i} got {g}, want {w}"
    write_result(result)
    assert not mismatches, result["failure"]
