"""The similarity engine's arithmetic blocks in the Amaranth simulator against the reference, every bit.

Exp table, reciprocal and inverse square root (table and Newton methods),
variable-shift rounding, argmax: each block gets a stream of inputs (one per
cycle, with random idle cycles) and its outputs are compared with
:mod:`metafab.reference.match_fixed`; the latency is checked too.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from metafab.hw.match_units import Argmax, ExpTable, RecipUnit, ScaleRound, round_shift_var
from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig
from metafab.reference.fixed import QFormat, Rounding


def run_pipeline(dut, beats, *, idle: float = 0.3, seed: int = 0, extra: int = 20):
    """Feed ``beats`` (payload dicts) to ``dut.i``; return ``(outputs, latencies)`` in order."""
    rng = np.random.default_rng(seed)
    sent_at, got, lat = [], [], []

    async def bench(ctx):
        cycle = 0
        queue = list(beats)
        while queue or len(got) < len(beats):
            if cycle > 10 * len(beats) + 200:
                raise AssertionError(f"only {len(got)} of {len(beats)} outputs")
            if queue and rng.random() >= idle:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, queue.pop(0))
                sent_at.append(cycle)
            else:
                ctx.set(dut.i.valid, 0)
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
                lat.append(cycle - sent_at[len(got) - 1])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, lat


CFG = MatchConfig()
METHOD_CFGS = {
    "newton8": CFG,
    "newton6-trunc": CFG.replace(recip_table_bits=6, rsqrt_table_bits=6, newton_rounding="truncate"),
    "table10": CFG.replace(recip_method="table", rsqrt_method="table", recip_table_bits=10,
                           rsqrt_table_bits=10),
    "h12": CFG.replace(mant_bits=12, unit_fmt="Q2.10", prob_fmt="UQ1.11", recip_table_bits=5,
                       rsqrt_table_bits=4),
}


def _recip_inputs(width: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = [0, 1, 2, 3, 4, 5, 7, 8, 255, 256, (1 << width) - 1, 1 << (width - 1), (1 << (width - 1)) + 1]
    for b in range(1, width + 1):  # every leading-one position, random low bits
        x.append(int(rng.integers(1 << (b - 1), 1 << b)))
    x += rng.integers(0, 1 << min(width, 62), size=n).tolist()
    return np.array(x, dtype=np.int64)


@pytest.mark.parametrize("kind", ["recip", "rsqrt"])
@pytest.mark.parametrize("name", list(METHOD_CFGS))
def test_recip_unit_equals_reference(kind, name):
    cfg = METHOD_CFGS[name]
    width = 40
    x = _recip_inputs(width, 60, seed=len(name))
    dut = RecipUnit(config=cfg, kind=kind, in_width=width, tag_width=8)
    got, lat = run_pipeline(dut, [{"x": int(v), "tag": i % 256} for i, v in enumerate(x)])
    want_y, want_e = (mx.reciprocal if kind == "recip" else mx.rsqrt)(x, cfg)
    assert [g.y for g in got] == want_y.tolist()
    assert [g.exp for g in got] == want_e.tolist()
    assert [g.tag for g in got] == [i % 256 for i in range(len(x))]
    assert set(lat) == {dut.LATENCY}


def test_recip_and_rsqrt_are_accurate():
    """Newton with an 8-bit table: relative error near the mantissa's 2**-17."""
    x = np.arange(1, 1 << 20, 97, dtype=np.int64)
    H = CFG.mant_bits
    y, e = mx.reciprocal(x, CFG)
    assert np.max(np.abs(y * 2.0 ** -(H + e) * x - 1)) < 4e-5
    y, k = mx.rsqrt(x, CFG)
    assert np.max(np.abs(y * 2.0 ** -(H + k) * np.sqrt(x) - 1)) < 4e-5
    t = METHOD_CFGS["table10"]
    y, e = mx.reciprocal(x, t)
    assert np.max(np.abs(y * 2.0 ** -(H + e) * x - 1)) < 1.1e-3


@pytest.mark.parametrize("name", ["default", "proto", "trunc-12bit"])
def test_exp_table_equals_reference(name):
    cfg = {"default": CFG, "proto": CFG.replace(mode="proto"),
           "trunc-12bit": CFG.replace(exp_table_bits=12, exp_index_rounding="truncate")}[name]
    lf = cfg.logit_fmt
    rng = np.random.default_rng(1)
    span = cfg.exp_span << lf.frac_bits
    z = np.concatenate([
        [0, -1, 1, 5, lf.min_code, lf.max_code, -span, -span - 1, -span + 1, 2 * lf.min_code,
         lf.min_code - lf.max_code, lf.max_code + 1],
        rng.integers(-span - 64, 1, size=80), rng.integers(lf.min_code, lf.max_code + 1, size=20),
        # around half steps of the index
        -(np.arange(1, 40) << (lf.frac_bits - cfg.exp_shift_bits - 1)),
    ]).astype(np.int64)
    dut = ExpTable(config=cfg, tag_width=4)
    got, lat = run_pipeline(dut, [{"z": int(v), "tag": 3} for v in z])
    assert [g.e for g in got] == mx.exp_lookup(z, cfg).tolist()
    assert set(lat) == {ExpTable.LATENCY}
    tab = mx.exp_table(cfg)
    assert tab[0] == 1 << cfg.exp_fmt.frac_bits and np.all(np.diff(tab) <= 0)


@pytest.mark.parametrize("rounding", [Rounding.HALF_EVEN, Rounding.TRUNCATE], ids=lambda r: r.value)
def test_scale_round_equals_reference(rounding):
    out = QFormat(2, 14)
    rng = np.random.default_rng(3)
    n = 120
    a = rng.integers(-(1 << 20), 1 << 20, size=n)
    a[:4] = [-(1 << 20), (1 << 20) - 1, 0, -1]
    b = rng.integers(0, 1 << 18, size=n)
    b[:4] = [(1 << 18) - 1, (1 << 18) - 1, 5, 1]
    s = rng.integers(0, 40, size=n)
    s[:8] = [0, 0, 0, 0, 1, 2, 39, 38]
    dut = ScaleRound(a_shape=signed(21), b_shape=unsigned(18), shift_width=6, out_fmt=out,
                     rounding=rounding, tag_width=2)
    got, lat = run_pipeline(dut, [{"a": int(x), "b": int(y), "shift": int(z), "tag": 1}
                                  for x, y, z in zip(a, b, s, strict=True)])
    want = np.clip(mx.round_shift_var(a * b, s, rounding), out.min_code, out.max_code)
    assert [g.value for g in got] == want.tolist()
    assert set(lat) == {ScaleRound.LATENCY}


def test_round_shift_var_combinational():
    m = Module()
    v = Signal(signed(12))
    sh = Signal(4)
    y = Signal(signed(13))
    m.d.comb += y.eq(round_shift_var(v, sh, Rounding.HALF_EVEN))
    vals = [(x, s) for x in range(-2048, 2048, 37) for s in range(12)] + [(-2048, 11), (2047, 11), (6, 2)]
    got = []

    async def bench(ctx):
        for x, s in vals:
            ctx.set(v, x)
            ctx.set(sh, s)
            got.append(ctx.get(y))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    xs = np.array([x for x, _ in vals])
    ss = np.array([s for _, s in vals])
    assert got == mx.round_shift_var(xs, ss, Rounding.HALF_EVEN).tolist()


def test_argmax_first_on_ties():
    seqs = [[3, 7, 7, 1], [5], [0, 0, 0], [1, 2, 3, 9], [9, 2, 9, 9, 1], [4, 4]]
    beats = [{"value": v, "first": i == 0, "last": i == len(s) - 1} for s in seqs for i, v in enumerate(s)]
    dut = Argmax(width=8, count=8)
    got = []

    async def bench(ctx):
        for b in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        if ctx.get(dut.o.valid):
            got.append(ctx.get(dut.o.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [int(np.argmax(s)) for s in seqs]


# --- the support-set builder (normaliser / prototype builder) ------------------------------------


def random_support(cfg: MatchConfig, seed: int, *, extreme: bool = False):
    """Support codes ``(M, D)`` and labels (every class at least once, in a shuffled order)."""
    rng = np.random.default_rng(seed)
    ef = cfg.emb_fmt
    if extreme:
        s = rng.choice([ef.min_code, ef.max_code, 0, ef.max_code - 1], size=(cfg.n_support, cfg.dim))
    else:
        s = mx.quantize(rng.normal(0, 1, (cfg.n_support, cfg.dim)), cfg)
    labels = np.repeat(np.arange(cfg.n_way), cfg.k_shot)
    rng.shuffle(labels)
    return s.astype(np.int64), labels.astype(np.int64)


def load_words(support, labels) -> list[int]:
    out = []
    for row, lab in zip(support, labels, strict=True):
        out.append(int(lab))
        out += [int(v) & 0xFFFFFFFF for v in row]
    return out


def run_builder(cfg: MatchConfig, words, *, gaps: bool = True):
    """Drive a SupportBuilder with LOAD words and a start; collect its writes and its status."""
    from metafab.hw.match_support import SupportBuilder

    dut = SupportBuilder(config=cfg)
    rng = np.random.default_rng(7)
    banks, labels, norms, status = {}, {}, {}, []

    async def bench(ctx):
        for i, w in enumerate(words):
            while gaps and rng.random() < 0.2:
                ctx.set(dut.load_valid, 0)
                await ctx.tick()
            ctx.set(dut.load_valid, 1)
            ctx.set(dut.load_first, i == 0)
            ctx.set(dut.load_data, w)
            if ctx.get(dut.lw_valid):
                labels[ctx.get(dut.lw_addr)] = ctx.get(dut.lw_data)
            await ctx.tick()
        ctx.set(dut.load_valid, 0)
        await ctx.tick()
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(cfg.n_vectors * cfg.dim + 200):
            if ctx.get(dut.bw_valid):
                banks[ctx.get(dut.bw_lane), ctx.get(dut.bw_addr)] = ctx.get(dut.bw_data)
            if ctx.get(dut.nw_valid):
                norms[ctx.get(dut.nw_addr)] = ctx.get(dut.nw_data)
            if ctx.get(dut.done):
                status.append(ctx.get(dut.status))
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return banks, labels, norms, status


BUILDER_CFGS = {
    "matching-5w2s-d10-p4": MatchConfig(n_way=5, k_shot=2, dim=10, lanes=4),
    "proto-3w3s-d12-p8": MatchConfig(mode="proto", n_way=3, k_shot=3, dim=12, lanes=8),
    "matching-2w3s-d7-p1-trunc": MatchConfig(n_way=2, k_shot=3, dim=7, lanes=1, unit_rounding="truncate",
                                             rsqrt_method="table", rsqrt_table_bits=9),
    "proto-4w1s-d16-p16": MatchConfig(mode="proto", n_way=4, k_shot=1, dim=16, lanes=16),
}


@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "extreme"])
@pytest.mark.parametrize("name", list(BUILDER_CFGS))
def test_support_builder_equals_reference(name, extreme):
    cfg = BUILDER_CFGS[name]
    support, labels = random_support(cfg, seed=len(name), extreme=extreme)
    if cfg.mode == "proto" and not extreme:
        labels = np.array([0, 1, 2, 0, 0, 2, 1, 2, 2][: cfg.n_support] if cfg.n_way == 3 else labels)
    ref = mx.prepare(support, labels, cfg)
    banks, got_labels, norms, status = run_builder(cfg, load_words(support, labels))
    assert status == [0]
    C, P = cfg.chunks, cfg.lanes
    got = np.zeros_like(ref.vectors)
    for (lane, addr), val in banks.items():
        v, c = divmod(addr, C)
        got[v, c * P + lane] = val
    assert len(banks) == cfg.n_vectors * cfg.dim
    assert got.tolist() == ref.vectors.tolist()
    if cfg.mode == "matching":
        assert [got_labels[j] for j in range(cfg.n_support)] == labels.tolist()
    else:
        assert [norms[n] for n in range(cfg.n_way)] == ref.norms.tolist()


@pytest.mark.parametrize("bad", ["label", "value", "empty-class"])
def test_support_builder_rejects_bad_loads(bad):
    cfg = BUILDER_CFGS["proto-3w3s-d12-p8"]
    support, labels = random_support(cfg, seed=1)
    words = load_words(support, labels)
    if bad == "label":
        words[(cfg.dim + 1) * 4] = cfg.n_way
    elif bad == "value":
        words[5] = cfg.emb_fmt.max_code + 1
    else:
        for j in range(cfg.n_support):
            words[j * (cfg.dim + 1)] = 0 if labels[j] == 1 else int(labels[j])
    _, _, _, status = run_builder(cfg, words, gaps=False)
    assert status == [5]  # BAD_VALUE
