"""cocotb bench: the generated AXI-Stream wrapper driven by cocotbext-axi's AXI-Stream source and sink.

Parameters (a JSON file named by ``METAFAB_BENCH``): ``requests`` (hex strings: each
request packet's bytes, words least significant byte first), ``seed``
(random pauses on both buses). Writes ``{responses: [hex, ...]}``.
"""

from __future__ import annotations

import itertools
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from metafab.sim.params import bench_params, write_result


def _pauses(rng: random.Random, p: float):
    return (rng.random() < p for _ in itertools.count())


@cocotb.test()
async def axis_wrapper(dut):
    p = bench_params()
    rng = random.Random(p.get("seed", 0))
    cocotb.start_soon(Clock(dut.aclk, 10, unit="ns").start())
    source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, dut.aresetn, reset_active_level=False)
    sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, dut.aresetn, reset_active_level=False)
    source.set_pause_generator(_pauses(rng, 0.2))
    sink.set_pause_generator(_pauses(rng, 0.3))
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 4)
    dut.aresetn.value = 1
    await ClockCycles(dut.aclk, 2)
    responses = []
    for req in p["requests"]:
        await source.send(AxiStreamFrame(bytes.fromhex(req)))
        frame = await sink.recv()
        responses.append(bytes(frame.tdata).hex())
    write_result({"responses": responses})
