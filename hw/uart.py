"""A UART link for the engines: 8N1 receiver and transmitter, and a bridge to the packet word streams.

The host sends each 32-bit protocol word as four bytes, least significant
first. :class:`UartBridge` reassembles words, recovers the packet framing
from the header's length field (it raises ``last`` on the header of an
empty packet and on the final payload word of the others) and sends the
engine's response words back as bytes. If the line stays idle for
``idle_timeout`` cycles in the middle of a word or packet, the bridge drops
the partial word and expects a new header (a host that lost sync waits a
moment and retries).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import reject
from metafab.hw.frontend import WORD_LAYOUT
from metafab.reference.errors import UserError

__all__ = ["UartRx", "UartTx", "UartBridge"]


def _check_divisor(component, divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 4:
        reject(component, UserError(f"UART divisor (clock cycles per bit) must be an integer >= 4, "
                                    f"got {divisor!r}"))


class UartRx(wiring.Component):
    """8N1 receiver: ``rx`` pin in, one byte per frame on stream ``o`` (a byte is lost if ``o`` is not ready).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``clock_hz // baud``).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))

    def __init__(self, *, divisor: int):
        _check_divisor(self, divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        sync_rx = Signal(2, init=0b11)
        m.d.sync += sync_rx.eq(Cat(self.rx, sync_rx[0]))
        rx = sync_rx[1]
        timer = Signal(range(d * 2))
        bits = Signal(8)
        count = Signal(range(9))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.sync += [timer.eq(d - 1), count.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [bits.eq(Cat(bits[1:], rx)), count.eq(count + 1), timer.eq(d - 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(bits), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: bytes from stream ``i`` out on the ``tx`` pin."""

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, *, divisor: int):
        _check_divisor(self, divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        shift = Signal(10)
        count = Signal(range(11))
        with m.If(count == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [shift.eq(Cat(0, self.i.payload, 1)), count.eq(10), timer.eq(d - 1),
                             self.tx.eq(0)]
        with m.Else():
            with m.If(timer == 0):
                m.d.sync += [timer.eq(d - 1), count.eq(count - 1), shift.eq(shift[1:]),
                             self.tx.eq(Cat(shift[1:], 1)[0])]
                with m.If(count == 1):
                    m.d.sync += self.tx.eq(1)
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UartBridge(wiring.Component):
    """UART pins to the engine's word streams (see the module docstring).

    Ports: ``rx``/``tx`` pins; ``o`` (request words to the engine), ``i``
    (response words from the engine).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.
    idle_timeout : int
        Idle cycles after which a partial word or packet is dropped.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    o: Out(stream.Signature(WORD_LAYOUT))
    i: In(stream.Signature(WORD_LAYOUT))

    def __init__(self, *, divisor: int, idle_timeout: int | None = None):
        _check_divisor(self, divisor)
        self._divisor = divisor
        self._idle = idle_timeout if idle_timeout is not None else divisor * 10 * 64
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UartRx(divisor=self._divisor)
        m.submodules.utx = utx = UartTx(divisor=self._divisor)
        m.submodules.words = words = fifo.SyncFIFOBuffered(width=33, depth=16)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.o.ready.eq(1)]

        # bytes -> words, framing from the header's length
        word = Signal(32)
        nbyte = Signal(2)
        in_packet = Signal()
        remaining = Signal(16)
        idle = Signal(range(self._idle + 1))
        partial = (nbyte != 0) | in_packet
        with m.If(urx.o.valid):
            m.d.sync += idle.eq(0)
        with m.Elif(partial & (idle != self._idle)):
            m.d.sync += idle.eq(idle + 1)
        with m.If(idle == self._idle):
            m.d.sync += [nbyte.eq(0), in_packet.eq(0), idle.eq(0)]
        full = Cat(word[8:32], urx.o.payload)  # the word once this byte is in
        with m.Elif(urx.o.valid):
            m.d.sync += [word.eq(full), nbyte.eq(nbyte + 1)]
            with m.If(nbyte == 3):
                last = Signal()
                with m.If(~in_packet):
                    length = full[0:16]
                    m.d.comb += last.eq(length == 0)
                    m.d.sync += [remaining.eq(length), in_packet.eq(length != 0)]
                with m.Else():
                    m.d.comb += last.eq(remaining == 1)
                    m.d.sync += [remaining.eq(remaining - 1), in_packet.eq(remaining != 1)]
                m.d.comb += [words.w_data.eq(Cat(full, last)), words.w_en.eq(1)]
        m.d.comb += [
            self.o.valid.eq(words.r_rdy),
            self.o.payload.eq(words.r_data),
            words.r_en.eq(self.o.ready),
        ]

        # response words -> bytes
        out = Signal(32)
        left = Signal(3)
        with m.If(left == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [out.eq(self.i.payload.data), left.eq(4)]
        with m.Else():
            m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(out[:8])]
            with m.If(utx.i.ready):
                m.d.sync += [out.eq(out >> 8), left.eq(left - 1)]
        return m
