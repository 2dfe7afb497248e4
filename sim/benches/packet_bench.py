"""What every engine's cocotb bench shares: the bench's parameters, the packet link with random gaps,
STATUS, the scenario dispatch and the verdict written back to the runner.

An engine's bench subclasses :class:`PacketEngineBench` (its scoreboard and its scenarios) and ends its
cocotb test with :func:`run_scenarios`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cocotb.triggers import ReadOnly, RisingEdge

from metafab.reference.protocol import (
    MAGIC,
    PROTOCOL_VERSION,
    STATUS_FIELDS,
    Opcode,
    Packet,
    Status,
    decode_response,
)
from metafab.sim.packets import PacketLink
from metafab.sim.params import bench_params, write_result
from metafab.sim.stream import StreamBench

__all__ = ["PacketEngineBench", "ProtocolPayloads", "protocol_scenario", "run_scenarios", "mismatch_problems",
           "bench_params"]


@dataclass(frozen=True)
class ProtocolPayloads:
    """An engine's requests for :func:`protocol_scenario`: a good LOAD and RUN payload, the RUN's answer
    (from the bit-exact reference), and a LOAD / RUN payload with a value out of its format (None when the
    engine's encoding has no such value)."""

    load: list[int]
    run: list[int]
    run_answer: list[int]
    bad_load: list[int] | None = None
    bad_run: list[int] | None = None


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

    async def reset_in_flight(self) -> None:
        """Reset the design with requests in flight: drop what the link still had to send and what came back,
        reset, and check that the engine is in its power-up state (nothing loaded, no runs)."""
        self.link.source.flush()
        self.link.sink.queue.clear()
        await self.reset()
        self.link.sink.queue.clear()
        st = await self.status()
        assert st["loaded"] == 0 and st["runs"] == 0, st

    async def after_reset(self) -> None:
        """What the engine needs after a reset before its LOAD (nothing; the fewshot engine: its encoder)."""

    def protocol_payloads(self) -> ProtocolPayloads:
        """The engine's payloads for the ``protocol`` scenario."""
        raise NotImplementedError


def request_beats(opcode: int, words=(), *, length: int | None = None, last_at: int | None = None,
                  magic: int = MAGIC) -> list[tuple[int, bool]]:
    """``(word, last)`` beats of a request, well formed or not: a header with ``length`` (default: the
    number of ``words``) and ``magic``, then ``words``; the packet ends with ``last`` on beat ``last_at``
    (0 = the header; default the final word), and the beats after it are not sent."""
    beats = [(magic << 24) | (int(opcode) << 16) | (len(words) if length is None else length), *words]
    end = len(beats) - 1 if last_at is None else last_at
    return [(int(w) & 0xFFFFFFFF, k == end) for k, w in enumerate(beats[:end + 1])]


async def protocol_scenario(tb: PacketEngineBench, p: dict, result: dict) -> None:
    """Every rule of ``docs/protocol.md`` ("Errors: which status wins", "The loaded flag", "STATUS",
    "Reset"), each request's answer and every STATUS compared with a model of those rules kept here."""
    pl = tb.protocol_payloads()
    n_load, n_run = len(pl.load), len(pl.run)
    model = {"last_cycles": 0, "runs": 0, "errors": 0, "last_error": 0, "loaded": 0, "version": PROTOCOL_VERSION}
    checks = result.setdefault("checks", [])

    async def answer(what, beats, want):
        tb.link.send_raw(beats)
        resp = decode_response(await tb.link.recv_packet())
        checks.append([what, resp.status.name])
        assert resp.status == want, f"{what}: answered {resp.status!r}, want {want!r}"
        if want != Status.OK:
            assert not resp.payload, f"{what}: an error answer with {len(resp.payload)} payload words"
            model["errors"] += 1
            model["last_error"] = int(want)
        return resp

    async def status_agrees(what):
        st = await tb.status()
        assert st == model, f"after {what}: STATUS {st}, the rules say {model}"

    async def load_ok():
        await answer("LOAD", request_beats(Opcode.LOAD, pl.load), Status.OK)
        model["loaded"] = 1

    async def run_ok(what):
        resp = await answer(what, request_beats(Opcode.RUN, pl.run), Status.OK)
        assert [int(w) for w in resp.payload] == pl.run_answer, f"{what}: the answer differs from the reference"
        model["runs"] += 1
        st = await tb.status()
        assert st["last_cycles"] > 0, st
        model["last_cycles"] = st["last_cycles"]
        await status_agrees(what)

    await status_agrees("reset")
    # before any LOAD: which error wins over NOT_LOADED (rules 3, 4, 5)
    run = Opcode.RUN
    await answer("RUN before LOAD", request_beats(run, pl.run), Status.NOT_LOADED)
    await answer("RUN before LOAD, length +1", request_beats(run, [*pl.run, 0]), Status.BAD_LENGTH)
    await answer("RUN before LOAD, last on the header", request_beats(run, pl.run, last_at=0), Status.BAD_LENGTH)
    await answer("RUN before LOAD, last on payload word 1", request_beats(run, pl.run, last_at=1), Status.NOT_LOADED)
    await status_agrees("RUNs before LOAD")

    # every way a LOAD fails clears the loaded flag; the next RUN is NOT_LOADED
    load = Opcode.LOAD
    failing_loads = [
        ("LOAD of length 0", request_beats(load, []), Status.BAD_LENGTH),
        ("LOAD of length n-1", request_beats(load, pl.load[:-1]), Status.BAD_LENGTH),
        ("LOAD of length n+1", request_beats(load, [*pl.load, 0]), Status.BAD_LENGTH),
        ("LOAD, last on the header", request_beats(load, pl.load, last_at=0), Status.BAD_LENGTH),
        ("LOAD, last on payload word 1", request_beats(load, pl.load, last_at=1), Status.BAD_LENGTH),
        ("LOAD, last on payload word n-1", request_beats(load, pl.load, last_at=n_load - 1), Status.BAD_LENGTH),
        ("LOAD, one payload word too many", request_beats(load, [*pl.load, 0], length=n_load), Status.BAD_LENGTH),
    ]
    if n_load > 2:
        failing_loads.append(("LOAD, last on payload word 2", request_beats(load, pl.load, last_at=2),
                              Status.BAD_LENGTH))
    if pl.bad_load is not None:
        failing_loads += [
            ("LOAD with a bad value", request_beats(load, pl.bad_load), Status.BAD_VALUE),
            ("LOAD with a bad value and last early", request_beats(load, pl.bad_load, last_at=n_load - 1),
             Status.BAD_LENGTH),
        ]
    for what, beats, want in failing_loads:
        await load_ok()
        await answer(what, beats, want)
        model["loaded"] = 0
        await status_agrees(what)
        await answer(f"RUN after {what}", request_beats(run, pl.run), Status.NOT_LOADED)

    # requests that are not LOADs leave the flag as it was; precedence among the header errors (rules 1-4)
    await load_ok()
    others = [
        ("bad magic with the LOAD opcode", request_beats(load, pl.load, magic=0x5A), Status.BAD_MAGIC),
        ("bad magic, unknown opcode, wrong length", request_beats(0x7E, [1], length=9, magic=0x11),
         Status.BAD_MAGIC),
        ("unknown opcode", request_beats(0x7E, [1, 2, 3]), Status.UNKNOWN_OPCODE),
        ("unknown opcode, length 5, last on the header", request_beats(0x7E, [], length=5), Status.UNKNOWN_OPCODE),
        ("STATUS of length 1", request_beats(Opcode.STATUS, [7]), Status.BAD_LENGTH),
        ("STATUS without last on its header", request_beats(Opcode.STATUS, [7], length=0), Status.BAD_LENGTH),
        ("RUN of length n+1", request_beats(run, [*pl.run, 0]), Status.BAD_LENGTH),
        ("RUN, last on the header", request_beats(run, pl.run, last_at=0), Status.BAD_LENGTH),
        ("RUN, one payload word too many", request_beats(run, [*pl.run, 0], length=n_run), Status.BAD_LENGTH),
    ]
    if n_run > 1:
        others.append(("RUN, last on payload word 1", request_beats(run, pl.run, last_at=1), Status.BAD_LENGTH))
    if pl.bad_run is not None:
        others += [
            ("RUN with a bad value", request_beats(run, pl.bad_run), Status.BAD_VALUE),
            ("RUN with a bad value and one word too many", request_beats(run, [*pl.bad_run, 0], length=n_run),
             Status.BAD_LENGTH),
        ]
    for what, beats, want in others:
        await answer(what, beats, want)
    await status_agrees("malformed requests that are not LOADs")

    # runs and last_cycles follow the RUNs answered OK only
    await run_ok("RUN")
    for what, beats, want in others:
        if what.startswith("RUN"):
            await answer(f"{what}, after a good RUN", beats, want)
    await answer("LOAD of length 0, after a good RUN", request_beats(load, []), Status.BAD_LENGTH)
    model["loaded"] = 0
    await status_agrees("failed requests after a good RUN")
    await load_ok()
    await run_ok("RUN after a new LOAD")

    # reset for one cycle while an answer is being sent: nothing moves while it is held, the state is the
    # power-up one after it, and the engine works again once loaded
    dut = tb.dut
    tb.link.send_raw(request_beats(run, pl.run))
    for _ in range(1_000_000):
        await RisingEdge(tb.clock)
        if tb.link.sink.queue:  # the answer's header is in; its payload is still to come
            break
    dut.rst.value = 1
    await ReadOnly()
    held = {"i.ready": int(dut.i__ready.value), "o.valid": int(dut.o__valid.value)}
    await RisingEdge(tb.clock)
    dut.rst.value = 0
    tb.link.source.flush()
    await RisingEdge(tb.clock)
    tb.link.sink.queue.clear()
    assert held == {"i.ready": 0, "o.valid": 0}, f"while reset is held: {held}"
    model.update(last_cycles=0, runs=0, errors=0, last_error=0, loaded=0)
    await status_agrees("a one-cycle reset during an answer")
    await answer("RUN after reset", request_beats(run, pl.run), Status.NOT_LOADED)
    await tb.after_reset()
    await load_ok()
    await run_ok("RUN after reset and LOAD")
    result["protocol_checks"] = len(checks)


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
