# amaranth: UnusedElaboratable=no
"""SerialHarness in the Amaranth simulator: words shifted in reach the DUT, outputs come back."""

import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from metafab.hw.harness import HarnessField, SerialHarness


class Adder(wiring.Component):
    """``s = a + b``, combinational: the harness registers supply the timing."""

    a: In(8)
    b: In(8)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.s.eq(self.a + self.b)
        return m


class Accumulator(wiring.Component):
    """``acc += a * b`` on each cycle with ``valid``, one pipeline register in between."""

    a: In(signed(8))
    b: In(signed(8))
    valid: In(1)
    acc: Out(signed(24))

    def elaborate(self, platform):
        m = Module()
        prod = Signal(signed(16))
        prod_valid = Signal()
        m.d.sync += [prod.eq(self.a * self.b), prod_valid.eq(self.valid)]
        with m.If(prod_valid):
            m.d.sync += self.acc.eq(self.acc + prod)
        return m


class StreamIncrement(wiring.Component):
    """A registered stream stage that adds 1 to each payload (no backpressure handling needed)."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += [self.o.payload.eq(self.i.payload + 1), self.o.valid.eq(self.i.valid)]
        return m


async def exchange(ctx, harness, word):
    """Shift ``word`` in (LSB first) while shifting the last captured output word out, then strobe.

    Returns the output word captured at the previous strobe: the DUT's response to
    the word loaded two calls earlier (each word is held for one whole call, i.e.
    ``max(in_width, out_width) + 1`` cycles, and captured at the strobe that ends it).
    """
    cycles = max(harness.in_width, harness.out_width)
    pad = cycles - harness.in_width
    out = 0
    for k in range(cycles):
        bit = (word >> (k - pad)) & 1 if k >= pad else 0
        ctx.set(harness.sin, bit)
        if k < harness.out_width:
            out |= ctx.get(harness.sout) << k
        await ctx.tick()
    ctx.set(harness.strobe, 1)
    await ctx.tick()
    ctx.set(harness.strobe, 0)
    return out


def run(harness, bench):
    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_adder_results_come_back_in_order():
    harness = SerialHarness(Adder())
    assert harness.in_width == 8 + 8 + 1  # a, b, reset bit
    assert harness.out_width == 9
    rng = random.Random(1)
    pairs = [(rng.randrange(256), rng.randrange(256)) for _ in range(12)] + [(255, 255), (0, 0)]
    got = []

    async def bench(ctx):
        for a, b in pairs:
            got.append(await exchange(ctx, harness, harness.pack_inputs({"a": a, "b": b})))
        for _ in range(2):
            got.append(await exchange(ctx, harness, 0))

    run(harness, bench)
    sums = [harness.unpack_outputs(word)["s"] for word in got[2:]]
    assert sums == [a + b for a, b in pairs]


def test_reset_bit_and_held_inputs():
    harness = SerialHarness(Accumulator())
    cycles_per_word = max(harness.in_width, harness.out_width) + 1
    got = []

    async def bench(ctx):
        words = [
            harness.pack_inputs({"a": 3, "b": -4, "valid": 1}, reset=True),  # reset wins
            harness.pack_inputs({"a": 3, "b": -4, "valid": 0}),
            harness.pack_inputs({"a": 3, "b": -4, "valid": 1}),  # held: one product per cycle
            harness.pack_inputs({}),
            harness.pack_inputs({}),
            harness.pack_inputs({}, reset=True),
            harness.pack_inputs({}),
            harness.pack_inputs({}),
        ]
        for word in words:
            got.append(harness.unpack_outputs(await exchange(ctx, harness, word))["acc"])

    run(harness, bench)
    width = 24
    signed_acc = [v - (1 << width) if v >> (width - 1) else v for v in got]
    # got[k] is ``acc`` as captured at strobe k-1, the end of word k-2's hold time. Word 2
    # holds valid for ``cycles_per_word`` cycles; products reach ``acc`` 2 cycles later and
    # ``capture`` one more: 3 of them arrive after the strobe that ends word 2.
    total = -12 * cycles_per_word
    assert signed_acc[2:] == [0, 0, -12 * (cycles_per_word - 3), total, total, 0]


def test_stream_members_are_flattened_in_signature_order():
    harness = SerialHarness(StreamIncrement())
    assert harness.inputs == (
        HarnessField(("i", "payload"), 0, 8),
        HarnessField(("i", "valid"), 8, 1),
        HarnessField(("o", "ready"), 9, 1),
    )
    assert harness.outputs == (
        HarnessField(("i", "ready"), 0, 1),
        HarnessField(("o", "payload"), 1, 8),
        HarnessField(("o", "valid"), 9, 1),
    )
    assert harness.reset_bit == 10
    got = []

    async def bench(ctx):
        for value in (41, 254, 7):
            word = harness.pack_inputs({"i__payload": value, "i__valid": 1, "o__ready": 1})
            got.append(harness.unpack_outputs(await exchange(ctx, harness, word)))
        for _ in range(2):
            got.append(harness.unpack_outputs(await exchange(ctx, harness, 0)))

    run(harness, bench)
    assert [(g["o__payload"], g["o__valid"], g["i__ready"]) for g in got[2:]] == [
        (42, 1, 1),
        (255, 1, 1),
        (8, 1, 1),
    ]


def test_pack_inputs_wraps_negative_values_and_rejects_unknown_names():
    harness = SerialHarness(Accumulator())
    assert harness.pack_inputs({"a": -1}) == 0xFF
    assert harness.pack_inputs({}, reset=True) == 1 << harness.reset_bit
    with pytest.raises(ValueError, match=r"no DUT input 'c'.*'a', 'b', 'valid'"):
        harness.pack_inputs({"c": 1})


def test_rejects_non_component_and_output_less_dut():
    with pytest.raises(TypeError, match="wiring.Component"):
        SerialHarness(Module())

    class Sink(wiring.Component):
        x: In(4)

        def elaborate(self, platform):
            return Module()

    with pytest.raises(ValueError, match="no output port"):
        SerialHarness(Sink())


def test_struct_payload_is_one_field_of_its_full_width():
    layout = data.StructLayout({"x": signed(16), "w": signed(16), "first": 1, "last": 1})

    class Lane(wiring.Component):
        def __init__(self):
            super().__init__({
                "i": In(stream.Signature(layout)),
                "o": Out(stream.Signature(signed(32))),
            })

        def elaborate(self, platform):
            return Module()

    harness = SerialHarness(Lane())
    assert [(f.name, f.width) for f in harness.inputs] == [
        ("i__payload", 34), ("i__valid", 1), ("o__ready", 1),
    ]
    assert [(f.name, f.width) for f in harness.outputs] == [
        ("i__ready", 1), ("o__payload", 32), ("o__valid", 1),
    ]
