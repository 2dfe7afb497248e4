"""Board tops: an engine behind the board's USB-UART, optionally with its parameters preloaded.

:class:`Preloader` plays one request packet (e.g. LOAD with the shipped
weights) from a ROM into the engine after reset and swallows its response,
then passes the host's stream through: a board answers RUN requests as soon
as it is configured. :class:`BoardTop` puts :class:`~metafab.hw.uart.UartBridge`,
an optional preloader and the engine on a board's ``uart`` resource, clocked
by a PLL (:mod:`metafab.hw.pll`) from the board's oscillator, with the reset
held until the PLL locks: the engine runs at the PLL's frequency, and the
UART divisor is computed from it.
"""

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Mux, ResetSignal, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import global_net, reject
from metafab.hw.frontend import WORD_LAYOUT, StreamRegister
from metafab.hw.pll import Pll, PllSetting, lock_reset
from metafab.hw.uart import UartBridge
from metafab.reference.errors import UserError

__all__ = ["Preloader", "BoardTop", "uart_divisor"]


def uart_divisor(clock_hz: float, baud: int) -> int:
    """Clock cycles per UART bit; UserError when the clock is too slow for the baud rate."""
    if baud <= 0:
        raise UserError(f"baud rate must be positive, got {baud}")
    div = round(clock_hz / baud)
    if div < 4:
        raise UserError(f"a {clock_hz / 1e6:g} MHz clock is too slow for {baud} baud (needs >= 4 cycles per bit)")
    if abs(clock_hz / div - baud) / baud > 0.02:
        raise UserError(f"{baud} baud is more than 2 % off what a {clock_hz / 1e6:g} MHz clock can divide to")
    return div


class Preloader(wiring.Component):
    """Sends ``packet`` (``[(word, last), ...]``) to ``o`` after reset, drops its one response, then passes through.

    Ports: ``host_i`` (requests from the host) -> ``o`` (to the engine);
    ``i`` (responses from the engine) -> ``host_o``. ``done`` is high once the
    preload's response has gone by.
    """

    def __init__(self, *, packet):
        if not packet or not packet[-1][1]:
            reject(self, UserError("the preload packet must be non-empty and end with last"))
        self._packet = [(int(w), bool(last)) for w, last in packet]
        sig = stream.Signature(WORD_LAYOUT)
        super().__init__({"host_i": In(sig), "o": Out(sig), "i": In(sig), "host_o": Out(sig), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        n = len(self._packet)
        m.submodules.rom = rom = Memory(shape=33, depth=n,
                                        init=[w | (int(last) << 32) for w, last in self._packet])
        # a synchronous read (block RAM), one word ahead: the address is the next word's index
        # whenever the current one is taken, so ``rd.data`` always holds word ``idx``
        rd = rom.read_port()
        idx = Signal(range(n + 1))
        primed = Signal()  # the first read has completed
        m.d.sync += primed.eq(1)
        take = Signal()
        m.d.comb += rd.addr.eq(Mux(take, idx + 1, idx))
        with m.FSM():
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(primed), self.o.payload.eq(rd.data), take.eq(primed & self.o.ready)]
                with m.If(take):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n - 1):
                        m.next = "DROP"
            with m.State("DROP"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & self.i.payload.last):
                    m.next = "PASS"
            with m.State("PASS"):
                m.d.comb += self.done.eq(1)
                wiring.connect(m, wiring.flipped(self.host_i), wiring.flipped(self.o))
                wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.host_o))
        return m


class BoardTop(Elaboratable):
    """An engine on a board: a PLL from the board's oscillator, a reset held until it locks, the USB-UART.

    Parameters
    ----------
    engine : wiring.Component
        With word streams ``i`` (requests) and ``o`` (responses) in the ``sync`` domain.
    baud : int
        UART baud rate (the host driver uses the same).
    preload : list of (word, last) or None
        A request packet played into the engine after reset (see :class:`Preloader`).
    pll : PllSetting or None
        The PLL that makes the engine's clock from the board's oscillator
        (:func:`metafab.hw.pll.pll_setting`); required on a platform.
    clock_hz : float or None
        The clock frequency when elaborated without a platform (simulation).
    """

    def __init__(self, engine, *, baud: int = 115200, preload=None, pll: PllSetting | None = None,
                 clock_hz: float | None = None):
        self.engine = engine
        self.baud = baud
        self.preload = preload
        self.pll = pll
        self.clock_hz = pll.out_hz if pll is not None and clock_hz is None else clock_hz
        if self.clock_hz is not None:
            uart_divisor(self.clock_hz, baud)  # a baud rate the clock cannot make is refused at once
        self.clock = Signal(name="board_clk", attrs={"keep": 1})
        # pins, for simulation without a platform
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        if platform is not None:
            if self.pll is None:
                raise UserError("BoardTop on a board needs its PLL setting (metafab.hw.pll.pll_setting)")
            if abs(self.pll.in_mhz * 1e6 - platform.default_clk_frequency) > 1:
                raise UserError(f"the PLL setting is for a {self.pll.in_mhz:g} MHz oscillator; the board has "
                                f"{platform.default_clk_frequency / 1e6:g} MHz")
            clock_hz = self.pll.out_hz
            m.domains.sync = ClockDomain("sync")
            m.submodules.pll = pll = Pll(self.pll, platform.request(platform.default_clk, dir="-"))
            m.d.comb += [self.clock.eq(pll.clk_out), ClockSignal("sync").eq(self.clock)]
            # reset until the PLL locks and a few cycles after, from a register, on a global network
            # where the device has one (it reaches every register)
            m.d.comb += ResetSignal("sync").eq(global_net(m, platform, lock_reset(m, pll.locked), name="por_global"))
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.FFBuffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.FFBuffer("o", uart.tx)
            m.d.comb += [self.rx.eq(rx_buf.i), tx_buf.o.eq(self.tx)]
        else:
            if self.clock_hz is None:
                raise UserError("BoardTop without a platform needs clock_hz")
            clock_hz = self.clock_hz
            m.d.comb += self.clock.eq(ClockSignal("sync"))
        m.submodules.bridge = bridge = UartBridge(divisor=uart_divisor(clock_hz, self.baud))
        m.submodules.engine = engine = self.engine
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx)]
        # the engine's response words are registered once before the bridge: the front end's
        # response multiplexer (status words, core results) does not share a cycle with the bridge's
        # byte selection
        m.submodules.response_reg = out = StreamRegister()
        wiring.connect(m, engine.o, out.i)
        if self.preload:
            m.submodules.preload = pre = Preloader(packet=self.preload)
            # the ROM's block-RAM output (about 6 ns clock-to-out on ECP5) is registered once before the engine
            m.submodules.preload_reg = reg = StreamRegister()
            wiring.connect(m, bridge.o, pre.host_i)
            wiring.connect(m, pre.o, reg.i)
            wiring.connect(m, reg.o, engine.i)
            wiring.connect(m, out.o, pre.i)
            wiring.connect(m, pre.host_o, bridge.i)
        else:
            wiring.connect(m, bridge.o, engine.i)
            wiring.connect(m, out.o, bridge.i)
        return m


class UartEngineTop(wiring.Component):
    """:class:`BoardTop` without a platform, with the UART pins as ports (for simulation).

    Ports ``rx`` (into the FPGA) and ``tx`` (out of it); ``clock_hz`` and
    ``baud`` set the UART divisor exactly as on the board.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, engine, *, clock_hz: float, baud: int, preload=None):
        try:
            uart_divisor(clock_hz, baud)
        except UserError as exc:
            reject(self, exc)
        self._top = BoardTop(engine, baud=baud, preload=preload, clock_hz=clock_hz)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self._top
        m.d.comb += [top.rx.eq(self.rx), self.tx.eq(top.tx)]
        return m
