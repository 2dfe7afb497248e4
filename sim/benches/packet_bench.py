"""What every engine's cocotb bench shares: the bench's parameters, the packet link with random gaps,
STATUS, the scenario dispatch and the verdict written back to the runner.

An engine's bench subclasses :class:`PacketEngineBench` (its scoreboard and its scenarios) and ends its
cocotb test with :func:`run_scenarios`.
"""

from __future__ import annotations

import random

from metafab.reference.protocol import STATUS_FIELDS, Opcode, Packet, Status
from metafab.sim.packets import PacketLink
from metafab.sim.params import bench_params, write_result
from metafab.sim.stream import StreamBench

__all__ = ["PacketEngineBench", "run_scenarios", "mismatch_problems", "bench_params"]


class PacketEngineBench(StreamBench):
    """Clock, reset and the request/response link of an engine, with the bench parameters ``p``
    (``idle``, ``backpressure`` and ``seed`` set the link's random gaps)."""

    def __init__(self, dut, p: dict):
        super().__init__(dut)
        self.p = p
        self.link = PacketLink(dut, self.clock, idle=p.get("idle", 0.0), backpressure=p.get("backpressure", 0.0),
                               rng=random.Random(p.get("seed", 0)))

    async def request(self, opcode, payload=()) -> Packet:
        return await self.link.request(opcode, payload)

    async def checked(self, opcode, payload=(), what: str = "") -> Packet:
        """A request that must be answered OK."""
        resp = await self.request(opcode, payload)
        assert resp.status == Status.OK, f"{what or Opcode(opcode).name} answered {resp.status!r}"
        return resp

    async def status(self) -> dict:
        return dict(zip(STATUS_FIELDS, (await self.checked(Opcode.STATUS)).payload, strict=True))


def mismatch_problems(result: dict) -> list[str]:
    """The scoreboard's verdict on the output words."""
    if result["mismatches"]:
        return [f"{result['mismatches']} mismatching output words; first {result['first_mismatch']}"]
    return []


async def run_scenarios(tb: PacketEngineBench, result: dict, scenarios: dict, default: str, problems) -> None:
    """Reset, run the scenario the parameters name (``scenario``, else ``default``), write the result for
    the runner and fail the cocotb test on any problem ``problems(result)`` lists."""
    name = tb.p.get("scenario", default)
    if name not in scenarios:
        raise ValueError(f"unknown scenario {name!r}; valid: {', '.join(scenarios)}")
    await tb.reset()
    await scenarios[name](tb, tb.p, result)
    found = problems(result)
    if found:
        result["failure"] = "; ".join(found)
    write_result(result)
    assert not found, result["failure"]
