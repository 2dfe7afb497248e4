"""A serial I/O harness: any component on three pins, for resource and Fmax runs.

A bare datapath with wide ports does not fit a small FPGA package (the iCE40
UP5K SG48 has 39 I/Os), and a datapath whose ports are left unconnected is
optimised away by synthesis. :class:`SerialHarness` solves both: it wraps a
device under test (DUT) so that

* every DUT input bit comes from a register (``hold``) loaded from a long shift
  register (``shift_in``) fed by one serial input pin ``sin``;
* every DUT output bit is registered on every cycle (``capture``) and can be
  copied into a shift register (``shift_out``) that leaves through one serial
  output pin ``sout``;
* one strobe pin ``strobe`` moves ``shift_in -> hold`` and ``capture -> shift_out``.

Since the DUT is fed by registers and drives registers, the timing of the built
design is measured register to register through the DUT, and nothing in it can
be optimised away (each output bit reaches ``sout``; no input is constant).

Protocol at the harness ports, one bit per clock cycle:

* on every cycle ``sin`` is shifted into ``shift_in`` from the top, so the
  bit sent first ends at bit 0: send the input word LSB first, in the
  ``in_width`` cycles just before the strobe (the bit on ``sin`` during the
  strobe cycle is shifted in too and is simply pushed out by the next word);
* ``strobe == 0``: ``shift_out`` shifts right; ``sout`` is ``shift_out[0]``,
  so the output word leaves LSB first, starting with the cycle after a strobe;
* ``strobe == 1`` (one cycle): ``hold <= shift_in`` (the DUT sees the new
  inputs from the next cycle on, and keeps seeing them until the next strobe)
  and ``shift_out <= capture`` (the DUT outputs of the previous cycle).

The DUT runs on every clock cycle with its inputs held between strobes; so a
stream ``valid`` loaded as 1 stays 1 (one transfer per cycle) until the next
strobe. This is a measurement harness, not a transaction driver.

The input word is the concatenation, LSB first, of the DUT's input ports in
the order of :meth:`amaranth.lib.wiring.Signature.flatten` (stream members
included: an input stream gives ``payload`` and ``valid``, an output stream
gives ``ready``), followed by one more bit, the DUT's synchronous reset. The
output word is the concatenation of the DUT's output ports, in the same order.
:attr:`SerialHarness.inputs` and :attr:`SerialHarness.outputs` list the fields
with their bit offsets; :meth:`SerialHarness.pack_inputs` and
:meth:`SerialHarness.unpack_outputs` convert words.

On a platform (a board build) the harness

* requests the resource :data:`RESOURCE_NAME` (sub-signals ``sin``, ``sout``,
  ``strobe``; the board registry :mod:`metafab.gen.boards` adds it) and puts
  each of the three pins through an I/O flip-flop (one cycle of latency each
  way; the protocol is unchanged, ``sout`` follows two cycles later at the pins);
* makes its own reset-less ``sync`` domain, clocked from the platform's
  default clock pin, instead of the platform's default domain: the DUT's
  reset is the register bit above, so no power-on-reset counter shares the
  clock with the DUT and the reported Fmax is that of the harness and the DUT.
  The clock net is :attr:`SerialHarness.clock`, a named, kept signal on which
  the synthesis flow puts its timing constraint. The DUT's reset bit is 0
  after configuration: shift in a word with ``reset=True`` first.

The DUT must use only the ``sync`` clock domain (combinational logic aside).
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Module, ResetInserter, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import global_net

__all__ = ["SerialHarness", "HarnessField", "RESOURCE_NAME"]

#: Name of the platform resource (sub-signals ``sin``, ``sout``, ``strobe``)
#: that :class:`SerialHarness` requests when elaborated for a platform.
RESOURCE_NAME = "serial_harness"


@dataclass(frozen=True)
class HarnessField:
    """One DUT port inside a serial word of the harness.

    Attributes
    ----------
    path : tuple
        The port's path in the DUT signature, e.g. ``("i", "payload")``.
    offset : int
        Its lowest bit in the serial word (bit 0 travels first).
    width : int
        Its width in bits.
    """

    path: tuple
    offset: int
    width: int

    @property
    def name(self) -> str:
        """The path joined with ``__``, as Amaranth names the port's signal (``i__payload``)."""
        return "__".join(str(part) for part in self.path)


def _fields(ports):
    fields, offset = [], 0
    for path, value in ports:
        fields.append(HarnessField(path=tuple(path), offset=offset, width=len(value)))
        offset += len(value)
    return tuple(fields), offset


class SerialHarness(wiring.Component):
    """Wrap ``dut`` so that all its ports travel over one serial input and one serial output.

    Parameters
    ----------
    dut : wiring.Component
        The device under test, clocked by the ``sync`` domain. It must have at
        least one output port (otherwise synthesis would remove all of it).

    Attributes
    ----------
    sin : In(1)
        Serial input, shifted into the input word on every cycle.
    strobe : In(1)
        Loads the input word into the DUT input registers and the captured DUT
        outputs into the output shift register.
    sout : Out(1)
        Serial output: bit 0 of the output shift register.
    dut : wiring.Component
        The wrapped component.
    inputs, outputs : tuple of HarnessField
        Where each DUT input / output port sits in the serial words.
    reset_bit : int
        Position of the DUT reset bit in the input word (the last bit).
    in_width, out_width : int
        Lengths of the serial input / output words in bits.
    clock : Signal
        The harness's clock (a copy of ``ClockSignal("sync")``, kept through
        synthesis), for a clock constraint.

    Raises
    ------
    TypeError
        If ``dut`` is not a :class:`wiring.Component`.
    ValueError
        If ``dut`` has no output port.
    """

    sin: In(1)
    strobe: In(1)
    sout: Out(1)

    def __init__(self, dut):
        if not isinstance(dut, wiring.Component):
            raise TypeError(f"SerialHarness needs a wiring.Component as DUT, not {dut!r}")
        ins, outs = [], []
        for path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append((path, Value.cast(value)))
        if not outs:
            raise ValueError(
                f"DUT {type(dut).__name__} has no output port: synthesis would remove all of it"
            )
        self._dut = dut
        self._in_values = [value for _, value in ins]
        self._out_values = [value for _, value in outs]
        self._inputs, self._reset_bit = _fields(ins)
        self._outputs, self._out_width = _fields(outs)
        self.clock = Signal(name="harness_clk", attrs={"keep": 1})
        super().__init__()

    @property
    def dut(self) -> wiring.Component:
        return self._dut

    @property
    def inputs(self) -> tuple[HarnessField, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[HarnessField, ...]:
        return self._outputs

    @property
    def reset_bit(self) -> int:
        return self._reset_bit

    @property
    def in_width(self) -> int:
        return self._reset_bit + 1

    @property
    def out_width(self) -> int:
        return self._out_width

    def pack_inputs(self, values=None, *, reset=False) -> int:
        """The serial input word that sets the DUT inputs to ``values``.

        Parameters
        ----------
        values : dict, optional
            Integer value per input field name (:attr:`HarnessField.name`, e.g.
            ``"a"`` or ``"i__payload"``); missing fields are 0. A value is taken
            modulo 2**width, so negative numbers give their two's complement.
        reset : bool
            Hold the DUT in reset while this word is loaded.

        Raises
        ------
        ValueError
            If a name is not a DUT input.
        """
        known = {field.name: field for field in self._inputs}
        word = int(bool(reset)) << self._reset_bit
        for name, value in (values or {}).items():
            if name not in known:
                raise ValueError(f"no DUT input {name!r}; the inputs are {sorted(known)}")
            field = known[name]
            word |= (int(value) & ((1 << field.width) - 1)) << field.offset
        return word

    def unpack_outputs(self, word: int) -> dict[str, int]:
        """The DUT output values (unsigned integers) in a serial output word, by field name."""
        return {
            field.name: (word >> field.offset) & ((1 << field.width) - 1)
            for field in self._outputs
        }

    def elaborate(self, platform):
        m = Module()
        dut_reset = Signal()
        m.submodules.dut = ResetInserter({"sync": dut_reset})(self._dut)

        # The harness's own registers need no reset: their contents only matter
        # after a full word has been shifted through them.
        shift_in = Signal(self.in_width, reset_less=True)
        hold = Signal(self.in_width, reset_less=True)
        capture = Signal(self._out_width, reset_less=True)
        shift_out = Signal(self._out_width, reset_less=True)

        offset = 0
        for value in self._in_values:
            m.d.comb += value.eq(hold[offset : offset + len(value)])
            offset += len(value)
        # the reset reaches every DUT register: on a global network where the device has one
        m.d.comb += dut_reset.eq(global_net(m, platform, hold[self._reset_bit], name="dut_reset_global"))

        offset = 0
        for value in self._out_values:
            m.d.sync += capture[offset : offset + len(value)].eq(value)
            offset += len(value)

        # ``shift_in`` shifts on every cycle (no enable, so it costs no logic): a strobe
        # loads what was shifted in before it. Right shifts: ``sin`` enters at the top, so
        # the first bit sent ends at bit 0.
        m.d.sync += shift_in.eq(Cat(shift_in[1:], self.sin))
        with m.If(self.strobe):
            m.d.sync += [
                hold.eq(shift_in),
                shift_out.eq(capture),
            ]
        with m.Else():
            m.d.sync += shift_out.eq(shift_out[1:])
        m.d.comb += self.sout.eq(shift_out[0])

        if platform is not None:
            m.domains.sync = ClockDomain("sync", reset_less=True)
            clk_pin = platform.request(platform.default_clk, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.d.comb += [
                self.clock.eq(clk_buf.i),
                ClockSignal("sync").eq(self.clock),
            ]

            pins = platform.request(RESOURCE_NAME, 0, dir="-")
            m.submodules.sin_buf = sin_buf = io.FFBuffer("i", pins.sin)
            m.submodules.strobe_buf = strobe_buf = io.FFBuffer("i", pins.strobe)
            m.submodules.sout_buf = sout_buf = io.FFBuffer("o", pins.sout)
            m.d.comb += [
                self.sin.eq(sin_buf.i),
                self.strobe.eq(strobe_buf.i),
                sout_buf.o.eq(self.sout),
            ]
        else:
            m.d.comb += self.clock.eq(ClockSignal("sync"))
        return m
