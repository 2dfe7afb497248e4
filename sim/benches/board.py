"""cocotb bench: a board top (UART bridge + engine) driven with a host's bytes through a UART model.

Parameters (a JSON file named by ``METAFAB_BENCH``): ``divisor`` (clock cycles per bit),
``requests`` (hex strings: each one request's bytes, as the host driver
writes them), ``gap_bytes`` (optional idle bytes' time between requests).
Writes ``{responses: [hex, ...], framing_errors, cycles}``: the raw response
bytes, one string per response packet.
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import ClockCycles

from metafab.reference.protocol import ByteParser, words_to_bytes
from metafab.sim.params import bench_params, write_result
from metafab.sim.stream import StreamBench
from metafab.sim.uart import UartSink, UartSource


@cocotb.test()
async def board_top_over_uart(dut):
    p = bench_params()
    div = p["divisor"]
    tb = StreamBench(dut)
    src = UartSource(dut.rx, tb.clock, divisor=div)
    sink = UartSink(dut.tx, tb.clock, divisor=div)
    await tb.reset()
    await ClockCycles(tb.clock, 30)  # the board's power-on time and a preload
    parser = ByteParser()
    responses = []
    for req in p["requests"]:
        src.write(bytes.fromhex(req))
        got = []
        while not got:
            data = await sink.read(1, timeout_cycles=p.get("timeout_cycles", 5_000_000))
            got = parser.feed(data)
        responses.append(words_to_bytes(got[0]).hex())
        await ClockCycles(tb.clock, p.get("gap_cycles", 0) + 1)
    out = {"responses": responses, "framing_errors": sink.framing_errors, "cycles": tb.cycles}
    write_result(out)
    assert sink.framing_errors == 0
