"""cocotb models of a UART line (8N1): a byte source driving the FPGA's rx pin, a sink on its tx pin."""

from __future__ import annotations

from collections import deque

import cocotb
from cocotb.triggers import ClockCycles, Event, FallingEdge

__all__ = ["UartSource", "UartSink"]


class UartSource:
    """Drives ``pin`` with 8N1 frames of ``divisor`` clock cycles per bit."""

    def __init__(self, pin, clock, *, divisor: int):
        self.pin, self.clock, self.divisor = pin, clock, divisor
        self.queue: deque[int] = deque()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        pin.value = 1
        cocotb.start_soon(self._run())

    def write(self, data: bytes):
        self.queue.extend(data)
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self):
        await self._idle.wait()

    async def _run(self):
        while True:
            if not self.queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            byte = self.queue.popleft()
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.pin.value = bit
                await ClockCycles(self.clock, self.divisor)


class UartSink:
    """Receives 8N1 frames from ``pin``; bytes collect in :attr:`data`."""

    def __init__(self, pin, clock, *, divisor: int):
        self.pin, self.clock, self.divisor = pin, clock, divisor
        self.data = bytearray()
        self.framing_errors = 0
        self._got = Event()
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self.pin)
            await ClockCycles(self.clock, self.divisor // 2)
            if self.pin.value != 0:
                continue  # a glitch
            byte = 0
            for i in range(8):
                await ClockCycles(self.clock, self.divisor)
                byte |= int(self.pin.value) << i
            await ClockCycles(self.clock, self.divisor)
            if self.pin.value != 1:
                self.framing_errors += 1
            self.data.append(byte)
            self._got.set()

    async def read(self, n: int, timeout_cycles: int = 10_000_000) -> bytes:
        """Wait for ``n`` bytes and return them."""
        waited = 0
        while len(self.data) < n:
            await ClockCycles(self.clock, 100)
            waited += 100
            if waited > timeout_cycles:
                raise TimeoutError(f"received {len(self.data)} of {n} bytes in {timeout_cycles} cycles")
        out = bytes(self.data[:n])
        del self.data[:n]
        return out
