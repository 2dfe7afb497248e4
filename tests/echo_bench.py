"""cocotb bench of the test-only ``echo`` engine: RUN requests against :func:`tests.echo_engine.reference`,
with random idle and back-pressure; a bad header must get its error status."""

from __future__ import annotations

import random

import cocotb

from metafab.reference.protocol import Opcode, Status
from metafab.sim.packets import PacketLink
from metafab.sim.params import bench_params, write_result
from metafab.sim.stream import StreamBench
from tests.echo_engine import EchoConfig, reference


@cocotb.test()
async def echo_engine(dut):
    p = bench_params()
    cfg = EchoConfig.from_dict(p["config"])
    tb = StreamBench(dut)
    link = PacketLink(dut, tb.clock, idle=0.3, backpressure=0.3, rng=random.Random(p["seed"]))
    await tb.reset()
    result = {"words": 0, "mismatches": 0, "first_mismatch": None, "responses": []}
    for n, words in enumerate(p["requests"]):
        resp = await link.request(Opcode.RUN, words)
        assert resp.status == Status.OK, f"request {n} answered {resp.status!r}"
        want = reference(words, cfg)
        got = [int(w) for w in resp.payload]
        result["responses"].append(got)
        result["words"] += len(want)
        bad = [k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
        result["mismatches"] += len(bad)
        if bad and result["first_mismatch"] is None:
            result["first_mismatch"] = {"request": n, "word": bad[0], "got": got[bad[0]], "want": want[bad[0]]}
    resp = await link.request(Opcode.RUN, [0] * (cfg.words + 1))
    assert resp.status == Status.BAD_LENGTH, f"a long request answered {resp.status!r}"
    write_result(result)
