"""cocotb bench of the test-only ``echo`` engine: RUN requests against :func:`tests.echo_engine.reference`,
with random idle and back-pressure; a request of the wrong length must get BAD_LENGTH."""

from __future__ import annotations

import cocotb

from metafab.reference.protocol import Opcode, Status
from metafab.sim.benches.packet_bench import PacketEngineBench, bench_params, mismatch_problems, run_scenarios
from tests.echo_engine import EchoConfig, reference


async def requests_scenario(tb: PacketEngineBench, p: dict, result: dict):
    cfg = EchoConfig.from_dict(p["config"])
    for n, words in enumerate(p["requests"]):
        got = [int(w) for w in (await tb.checked(Opcode.RUN, words, f"request {n}")).payload]
        want = reference(words, cfg)
        result["responses"].append(got)
        result["words"] += len(want)
        bad = [k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
        result["mismatches"] += len(bad)
        if bad and result["first_mismatch"] is None:
            result["first_mismatch"] = {"request": n, "word": bad[0], "got": got[bad[0]], "want": want[bad[0]]}
    resp = await tb.request(Opcode.RUN, [0] * (cfg.words + 1))
    assert resp.status == Status.BAD_LENGTH, f"a long request answered {resp.status!r}"


@cocotb.test()
async def echo_engine(dut):
    p = {"idle": 0.3, "backpressure": 0.3, **bench_params()}
    result = {"words": 0, "mismatches": 0, "first_mismatch": None, "responses": []}
    await run_scenarios(PacketEngineBench(dut, p), result, {"requests": requests_scenario}, "requests",
                        mismatch_problems)
