"""cocotb 2.x models of Amaranth ``lib.stream`` ports: source, sink, monitor, and a bench base.

Amaranth's Verilog flattens a stream port ``i`` into ``i__valid``,
``i__ready`` and ``i__payload``. A transfer happens on a rising clock edge
where ``valid`` and ``ready`` are both high; the models sample exactly that
(values read at the edge are the ones the design saw before it). Payloads
are plain integers (two's complement packing is the caller's, see
:class:`PayloadCodec`). Every model takes a random generator and an idle or
back-pressure probability, so every bench runs with random gaps.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

__all__ = ["PayloadCodec", "StreamSource", "StreamSink", "StreamMonitor", "StreamBench"]


class PayloadCodec:
    """Packs named fields into one integer payload and back.

    Parameters
    ----------
    fields : list of (name, offset, width, signed)
        The layout, as :func:`metafab.gen.export.layout_fields` describes an
        Amaranth layout (LSB first).
    """

    def __init__(self, fields):
        self.fields = [(str(n), int(o), int(w), bool(s)) for n, o, w, s in fields]
        self.width = max((o + w for _, o, w, _ in self.fields), default=0)

    def pack(self, values: dict) -> int:
        word = 0
        for name, off, width, _signed in self.fields:
            v = int(values.get(name, 0))
            word |= (v & ((1 << width) - 1)) << off
        return word

    def unpack(self, word: int) -> dict:
        out = {}
        for name, off, width, signed in self.fields:
            v = (word >> off) & ((1 << width) - 1)
            if signed and v >> (width - 1):
                v -= 1 << width
            out[name] = v
        return out


def _high(handle) -> bool:
    """A 1-bit signal's value, with X/Z (before reset in Icarus) read as low."""
    v = handle.value
    return v.is_resolvable and bool(v)


def _port(dut, prefix: str, name: str):
    return getattr(dut, f"{prefix}__{name}")


class StreamSource:
    """Drives ``<prefix>__valid/payload`` from a queue, honouring ``ready``.

    ``idle`` is the probability of inserting an idle cycle before each beat.
    While the queue is empty the source sleeps (no per-cycle Python work).
    """

    def __init__(self, dut, prefix: str, clock, *, idle: float = 0.0, rng: random.Random | None = None):
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.clock = clock
        self.idle = idle
        self.rng = rng or random.Random(0)
        self.queue: deque[int] = deque()
        self.sent = 0
        self._wake = Event()
        self._drained = Event()
        self._drained.set()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send_nowait(self, payloads: int | Iterable[int]):
        """Queue one payload or several."""
        if isinstance(payloads, int):
            payloads = [payloads]
        self.queue.extend(int(p) for p in payloads)
        if self.queue:
            self._drained.clear()
            self._wake.set()

    async def send(self, payloads: int | Iterable[int]):
        """Queue payloads and wait until all of them were transferred."""
        self.send_nowait(payloads)
        await self.wait_idle()

    async def wait_idle(self):
        await self._drained.wait()

    def flush(self):
        """Drop every queued beat and the one being offered (e.g. around a reset)."""
        self.queue.clear()
        self._driving = False
        self.valid.value = 0

    async def _run(self):
        self._driving = False
        while True:
            if not self._driving and not self.queue:
                self.valid.value = 0
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                await RisingEdge(self.clock)
            else:
                await RisingEdge(self.clock)
                if self._driving and _high(self.ready):
                    self.queue.popleft()
                    self.sent += 1
                    self._driving = False
            if not self._driving and self.queue and not (self.idle and self.rng.random() < self.idle):
                self.payload.value = self.queue[0]
                self._driving = True
            self.valid.value = int(self._driving)


class StreamSink:
    """Accepts beats from ``<prefix>__valid/payload``, driving ``ready``.

    ``backpressure`` is the probability that ``ready`` is low in a cycle.
    While ``valid`` is low the sink sleeps until it rises (no per-cycle
    Python work during long computations).
    """

    def __init__(self, dut, prefix: str, clock, *, backpressure: float = 0.0,
                 rng: random.Random | None = None, signed: bool = False):
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.clock = clock
        self.backpressure = backpressure
        self.rng = rng or random.Random(0)
        self.signed = signed
        self.queue: deque[int] = deque()
        self._got = Event()
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def _read(self) -> int:
        v = self.payload.value
        return v.to_signed() if self.signed else v.to_unsigned()

    def _decide(self) -> bool:
        return not (self.backpressure and self.rng.random() < self.backpressure)

    async def _run(self):
        ready = False
        while True:
            await RisingEdge(self.clock)
            was_valid = _high(self.valid)
            if ready and was_valid:
                self.queue.append(self._read())
                self._got.set()
            ready = self._decide()
            self.ready.value = int(ready)
            if was_valid:
                continue
            await ReadOnly()
            if not _high(self.valid):
                await RisingEdge(self.valid)
                ready = self._decide()
                self.ready.value = int(ready)

    async def recv(self, n: int = 1, timeout_cycles: int = 100_000) -> list[int]:
        """Wait for ``n`` beats (or fail after ``timeout_cycles``) and return them."""
        deadline = get_sim_time(unit="ns") + timeout_cycles * _period_ns(self.clock)
        while len(self.queue) < n:
            self._got.clear()
            remaining = deadline - get_sim_time(unit="ns")
            if remaining <= 0:
                raise TimeoutError(f"received {len(self.queue)} of {n} beats within {timeout_cycles} cycles")
            await First(self._got.wait(), Timer(remaining, unit="ns"))
        return [self.queue.popleft() for _ in range(n)]


_PERIODS: dict = {}


def _period_ns(clock) -> float:
    return _PERIODS.get(id(clock), 10.0)


class StreamMonitor:
    """Records every transfer on a stream port without driving it."""

    def __init__(self, dut, prefix: str, clock):
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.clock = clock
        self.beats: list[int] = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            if _high(self.valid) and _high(self.ready):
                self.beats.append(self.payload.value.to_unsigned())


class StreamBench:
    """A bench base: clock, synchronous reset and a cycle counter for one DUT.

    Amaranth designs have ``clk`` and an active-high synchronous ``rst``.
    """

    def __init__(self, dut, *, period_ns: int = 10):
        self.dut = dut
        self.clock = dut.clk
        self.period_ns = period_ns
        _PERIODS[id(dut.clk)] = period_ns
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())

    @property
    def cycles(self) -> int:
        """Clock cycles since time zero (from simulation time, no per-cycle coroutine)."""
        return int(get_sim_time(unit="ns") // self.period_ns)

    async def reset(self, cycles: int = 3):
        self.dut.rst.value = 1
        await ClockCycles(self.clock, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.clock)
