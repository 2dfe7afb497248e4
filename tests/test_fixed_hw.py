"""hw/fixed.py in the Amaranth simulator against reference/fixed.py, every bit."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from metafab.hw import fixed as hfx
from metafab.reference import fixed as fx
from metafab.reference.config import MacLaneConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, QFormat, Rounding, Xorshift32
from metafab.reference.mac_lane import dot_products, random_packets

# (src, dst) pairs: odd widths, unsigned, widening, narrowing, saturating and wrapping cases
FORMAT_PAIRS = [
    (QFormat(14, 26), QFormat(6, 10)),
    (QFormat(9, 14), QFormat(3, 5)),  # 23 -> 8 bits
    (QFormat(5, 2), QFormat(2, 6)),  # adds fraction bits, drops integer bits
    (QFormat(7, 0), QFormat(3, 0)),  # integers, pure overflow
    (QFormat(3, 10, False), QFormat(2, 3, False)),  # unsigned -> unsigned
    (QFormat(6, 9), QFormat(4, 3, False)),  # signed -> unsigned: negatives clamp to 0
    (QFormat(2, 45), QFormat(2, 7)),  # drop more than 32 bits (stochastic shifts bits up)
    (QFormat(1, 17), QFormat(1, 0)),
]


def _resize_rig(src, dst, rounding, overflow):
    m = Module()
    x = Signal(hfx.shape_of(src))
    rnd = Signal(32)
    y = Signal(hfx.shape_of(dst))
    m.d.comb += y.eq(hfx.resize(x, src, dst, rounding, overflow, rnd))
    return m, x, rnd, y


@pytest.mark.parametrize("src, dst", FORMAT_PAIRS, ids=lambda f: str(f))
@pytest.mark.parametrize("rounding", list(Rounding), ids=lambda r: r.value)
@pytest.mark.parametrize("overflow", [Overflow.SATURATE, Overflow.WRAP], ids=lambda o: o.value)
def test_resize_hw_equals_reference(src, dst, rounding, overflow):
    rng = np.random.default_rng(abs(hash((str(src), str(dst), rounding.value, overflow.value))) % 2**32)
    n = 60
    codes = rng.integers(src.min_code, src.max_code + 1, size=n, dtype=np.int64)
    codes[:6] = [src.min_code, src.max_code, 0, 1, -1 if src.signed else 2, src.max_code - 1]
    seed = 12345
    want = fx.resize(codes, src, dst, rounding, overflow, Xorshift32(seed))
    # the hardware takes the stepped generator state as an input, one per value
    gen = Xorshift32(seed)
    states = [gen.step() for _ in range(n)]
    m, x, rnd, y = _resize_rig(src, dst, rounding, overflow)
    got = []

    async def bench(ctx):
        for c, s in zip(codes.tolist(), states, strict=True):
            ctx.set(x, c)
            ctx.set(rnd, s)
            got.append(ctx.get(y))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == want.tolist()


def test_xorshift32_hw_sequence():
    dut = hfx.Xorshift32(seed=2463534242)
    ref = Xorshift32(2463534242)
    seen = []

    async def bench(ctx):
        for i in range(50):
            en = i % 3 != 0
            ctx.set(dut.en, en)
            nxt = ctx.get(dut.next)
            await ctx.tick()
            if en:
                seen.append((nxt, ctx.get(dut.state)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [ref.step() for _ in seen]
    assert [s for s, _ in seen] == want
    assert [s for _, s in seen] == want
    assert want[0] == 723471715


MAC_CONFIGS = [
    MacLaneConfig(),
    # odd widths, truncation, wrapping output
    MacLaneConfig(a_fmt="Q3.8", b_fmt="Q1.12", acc_fmt="Q6.20", out_fmt="Q3.5", rounding="truncate",
                  overflow="wrap"),
    # narrow output: most results saturate
    MacLaneConfig(a_fmt="Q8.8", b_fmt="Q8.8", acc_fmt="Q24.16", out_fmt="Q2.6"),
    # stochastic rounding with the lane's xorshift32
    MacLaneConfig(a_fmt="Q2.16", b_fmt="Q2.16", acc_fmt="Q10.32", out_fmt="Q4.12", rounding="stochastic",
                  seed=77),
    # unsigned operand
    MacLaneConfig(a_fmt="UQ4.12", b_fmt="Q2.14", acc_fmt="Q14.26", out_fmt="Q6.10"),
]


@pytest.mark.parametrize(
    "cfg", MAC_CONFIGS, ids=lambda c: f"{c.a_fmt}x{c.b_fmt}->{c.out_fmt}-{c.rounding.value}"
)
def test_mac_lane_amaranth_sim_with_backpressure(cfg):
    rng = np.random.default_rng(3)
    packets = random_packets(cfg, rng, 40)
    want = dot_products(cfg, packets)
    dut = hfx.MacLane(config=cfg)
    got = []
    beats = [
        (int(a), int(b), int(k == len(pa) - 1))
        for pa, pb in packets
        for k, (a, b) in enumerate(zip(pa, pb, strict=True))
    ]
    layout = dut.in_layout

    async def source(ctx):
        for a, b, last in beats:
            while rng.random() < 0.3:  # idle cycles
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, layout.const({"a": a, "b": b, "last": last}))
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(want):
            ready = rng.random() < 0.6  # backpressure
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * 20000)
    assert got == want


def test_mac_lane_config_errors():
    with pytest.raises(UserError, match="needs at least 26"):
        MacLaneConfig(acc_fmt="Q20.20")
    with pytest.raises(UserError, match="cannot read fixed-point format 'Q16'"):
        MacLaneConfig(a_fmt="Q16")
    with pytest.raises(TypeError, match="MacLaneConfig"):
        hfx.MacLane(config={"a_fmt": "Q4.12"})
    with pytest.raises(UserError, match="unknown MacLaneConfig key.*'lanes'"):
        MacLaneConfig.from_dict({"lanes": 4})


# value shapes x destination formats, every value of the shape: the hardware clamp against
# numpy's clip of the integer code
SATURATE_CASES = [
    (signed(7), QFormat(2, 2)),  # signed -> narrower signed
    (signed(7), QFormat(3, 0, False)),  # signed -> unsigned: negatives to 0
    (signed(4), QFormat(3, 3)),  # already fits
    (signed(5), QFormat(2, 2, False)),  # sign bit just above the unsigned range
    (unsigned(7), QFormat(3, 1)),  # unsigned -> signed
    (unsigned(7), QFormat(2, 2, False)),  # unsigned -> unsigned
    (unsigned(3), QFormat(2, 2, False)),  # already fits
]


@pytest.mark.parametrize("shape, dst", SATURATE_CASES, ids=lambda c: str(c))
def test_saturate_every_value(shape, dst):
    m = Module()
    x = Signal(shape)
    y = Signal(hfx.shape_of(dst))
    m.d.comb += y.eq(hfx.saturate(x, dst))
    lo_v = -(1 << (shape.width - 1)) if shape.signed else 0
    values = list(range(lo_v, lo_v + (1 << shape.width)))
    got = []

    async def bench(ctx):
        for v in values:
            ctx.set(x, v)
            got.append(ctx.get(y))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == np.clip(values, dst.min_code, dst.max_code).tolist()


# the one constant-shift rounding of the engines (hw.fixed.round_shift / round_shift_parts)
# against reference round_shift, every value of the shape
ROUND_CASES = [(signed(7), shift, r) for shift in (0, 1, 2, 3, 6) for r in ("truncate", "half_even")]
ROUND_CASES += [(unsigned(6), shift, "half_even") for shift in (1, 4)]


@pytest.mark.parametrize("shape, shift, rounding", ROUND_CASES, ids=lambda c: str(c))
def test_round_shift_every_value(shape, shift, rounding):
    m = Module()
    x = Signal(shape)
    y = Signal(signed(shape.width + 2))
    q_up = Signal(signed(shape.width + 2))
    m.d.comb += y.eq(hfx.round_shift(x, shift, rounding))
    q, up = hfx.round_shift_parts(x, shift, rounding)
    m.d.comb += q_up.eq(q + up)
    lo_v = -(1 << (shape.width - 1)) if shape.signed else 0
    values = list(range(lo_v, lo_v + (1 << shape.width)))
    got, got_parts = [], []

    async def bench(ctx):
        for v in values:
            ctx.set(x, v)
            got.append(ctx.get(y))
            got_parts.append(ctx.get(q_up))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = fx.round_shift(np.array(values), shift, rounding).tolist()
    assert got == want
    assert got_parts == want


def test_round_shift_refuses_stochastic():
    with pytest.raises(UserError, match="truncate or half_even.*'stochastic'"):
        hfx.round_shift_parts(Signal(signed(8)), 3, "stochastic")
