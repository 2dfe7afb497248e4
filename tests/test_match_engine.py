"""The similarity engine against the bit-exact reference: Amaranth simulator, cocotb + Icarus and Verilator.

Every output word of every query is compared with
:func:`metafab.reference.match_fixed.readout`, the engine's latency counter
with the cycle model after every episode, and, in each bench's timing phase
(queries back to back, no gaps), the cycle of every request and response
header with :func:`metafab.hw.match_cycles.stream_timeline`. Streams run
with random idle cycles and back-pressure everywhere else.

Icarus (builds in a second) runs the whole matrix of the issue: 5-way 1-shot,
5-way 5-shot and 20-way 5-shot at D=64, both modes, P in {1, 16, 64}, and an
odd shape; Verilator (a minute per build) runs two designs with the error
and reset scenarios and the saturation/tie stimulus. Query counts follow a
cycle budget (Icarus simulates these designs at a few thousand cycles per
second); the >= 1000-query runs are benchmarks (``metafab verify match``,
docs/match_engine.md).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from metafab.gen import flow
from metafab.gen.engines import match as mf
from metafab.hw.match_cycles import match_cycles, stream_timeline
from metafab.hw.match_engine import MatchEngine
from metafab.hw.match_schedule import EXP_LATENCY, HEAD_DELAY, LOGIT_LATENCY, OUTPUT_DELAY, SCALE_LATENCY, timing
from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import QFormat
from metafab.reference.payloads import match_load_words as load_payload
from metafab.reference.protocol import (
    STATUS_FIELDS,
    Opcode,
    Status,
    decode_response,
    encode_request,
    from_words,
    pack_codes,
    unpack_codes,
)
from metafab.sim.runner import SimulationFailed

from .conftest import ecp5_verilog, requires_icarus

DEFAULT = MatchConfig()
MATRIX = [
    MatchConfig(mode=mode, n_way=n, k_shot=k, dim=64, lanes=p)
    for mode in ("matching", "proto")
    for n, k in ((5, 1), (5, 5), (20, 5))
    for p in (1, 16, 64)
] + [MatchConfig(mode=mode, n_way=3, k_shot=2, dim=10, lanes=4) for mode in ("matching", "proto")]  # odd


def _episodes(cfg: MatchConfig, seed: int, *, budget: int = 4_000, features: str = "auto",
              n_episodes: int = 1):
    """Episodes whose queries fit a cycle budget (at least one query per class in the first episode)."""
    ii = match_cycles(cfg).ii
    per_class = max(1, min(3, int(budget // (ii * cfg.n_way))))
    eps, _ = mf.make_episodes(cfg, n_episodes, seed, features, n_query=per_class)
    codes = mf.episode_codes(cfg, eps)
    if ii > 1000:  # keep the slow P=1 runs short: a few queries
        for c in codes:
            c["queries"] = c["queries"][:2]
    return codes


def _timing_queries(cfg: MatchConfig) -> int:
    return 3 if match_cycles(cfg).ii > 1000 else 4


# --- Amaranth simulator: the whole engine on a small shape -----------------------------------


def amaranth_run(cfg: MatchConfig, requests, cycles: int = 20_000):
    dut = MatchEngine(config=cfg)
    beats = [b for req in requests for b in req]
    responses, current = [], []

    async def source(ctx):
        for word, last in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"data": word, "last": int(last)})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        while len(responses) < len(requests):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                current.append(payload.data)
                if payload.last:
                    responses.append(decode_response(list(current)))
                    current.clear()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * cycles)
    assert len(responses) == len(requests), f"got {len(responses)} of {len(requests)} responses"
    return responses


@pytest.mark.parametrize("mode", ["matching", "proto"])
def test_engine_in_amaranth_simulator_matches_reference(mode):
    cfg = MatchConfig(mode=mode, n_way=3, k_shot=2, dim=10, lanes=4)
    (ep,) = _episodes(cfg, seed=3, features="random")
    queries = np.asarray(ep["queries"][:4])
    reqs = [encode_request(Opcode.LOAD, load_payload(ep["support"], ep["labels"]))]
    reqs += [encode_request(Opcode.RUN, pack_codes(q, cfg.query_pack)) for q in queries]
    reqs.append(encode_request(Opcode.STATUS))
    resp = amaranth_run(cfg, reqs)
    assert [r.status for r in resp] == [Status.OK] * len(reqs)
    r = mx.readout(queries, mx.prepare(np.asarray(ep["support"]), np.asarray(ep["labels"]), cfg), cfg)
    for i in range(len(queries)):
        assert from_words(resp[1 + i].payload).tolist() == mx.result_words(r.probs[i], r.pred[i])
    st = dict(zip(STATUS_FIELDS, resp[-1].payload, strict=True))
    assert st["last_cycles"] == timing(cfg).latency and st["runs"] == len(queries) and st["loaded"] == 1


def test_engine_rejects_bad_configs():
    with pytest.raises(UserError, match="lanes must be a power of two.*got 12"):
        DEFAULT.replace(lanes=12)
    with pytest.raises(UserError, match="mode 'cosine' is not one of"):
        DEFAULT.replace(mode="cosine")
    with pytest.raises(UserError, match="LOAD packet holds at most 65535"):
        DEFAULT.replace(n_way=64, k_shot=16)
    with pytest.raises(UserError, match="stochastic"):
        DEFAULT.replace(logit_rounding="stochastic")
    with pytest.raises(UserError, match="acc_fmt Q8.26 can overflow"):
        DEFAULT.replace(acc_fmt="Q8.26")
    with pytest.raises(TypeError, match="MatchConfig"):
        MatchEngine(config=DEFAULT.to_dict())


# --- the cycle model ---------------------------------------------------------------------------


def test_cycle_model_formulas():
    for cfg in MATRIX:
        tm = timing(cfg)
        N, VC = cfg.n_way, cfg.n_vectors * cfg.chunks
        if cfg.mode == "matching":
            tail = SCALE_LATENCY + EXP_LATENCY + 1
        else:
            tail = LOGIT_LATENCY + EXP_LATENCY + N + 3
        assert tm.latency == VC - 1 + tm.dot_latency + tail + tm.recip_latency + 1 + N + SCALE_LATENCY
        model = match_cycles(cfg)
        # N + 2 response beats and the one-cycle copy into the head registers
        assert model.ii >= max(tm.ii_core, cfg.query_words + 2, N + 3)
        # the slots are sized so that buffering never sets the pace
        assert model.ii == max(tm.ii_core, cfg.query_words + 2, N + 3), cfg.name
        tl = stream_timeline(cfg, 3)
        assert tl[0]["sent"] - tl[0]["start"] == tm.begin_delay + tm.latency + HEAD_DELAY == (
            tm.begin_delay + tm.latency + 1)
        assert tl[0]["response"] - tl[0]["sent"] == OUTPUT_DELAY == 1  # the output register
    head = match_cycles(DEFAULT)
    assert head.ii_core == 25 == -(-5 * 5 * 64 // 64)  # ceil(N*K*D/P)
    assert head.bound == "request stream"
    assert (DEFAULT.query_pack, DEFAULT.query_words, head.ii) == (2, 32, 34)  # two 16-bit codes a word
    assert MatchConfig(lanes=1).query_pack == 1  # one lane bank: one code a cycle
    assert match_cycles(DEFAULT.replace(lanes=16)).ii == 100  # compute-bound: ceil(N*K*D/P)


# --- cocotb + Icarus: the matrix ----------------------------------------------------------------


@requires_icarus
@pytest.mark.parametrize("cfg", MATRIX, ids=lambda c: c.name)
def test_engine_icarus_matrix(cfg):
    eps = _episodes(cfg, seed=cfg.lanes + cfg.n_way)
    r = mf.run_engine(cfg, eps, sim="icarus", timing_queries=_timing_queries(cfg), run_name="test-matrix")
    nq = sum(len(e["queries"]) for e in eps) + _timing_queries(cfg)
    assert r["queries"] == nq and r["words"] == nq * (cfg.n_way + 1)
    assert r["mismatches"] == 0
    assert r["cycles"] == [timing(cfg).latency]
    model = match_cycles(cfg)
    assert r["packet_latency_measured"] == model.packet_latency
    assert r["timing"]["load_cycles"] == model.load_cycles


@requires_icarus
def test_engine_as_elaborated_for_ecp5_with_a_dsp_model():
    """The engine as built for the ECP5 (every lane product in a MULT18X18D with its input and output
    registers, every partial product of the scale / reciprocal units in one with its output register;
    the banks' read address in TRELLIS_FF copies, one per BANK_GROUP banks), simulated with behavioural
    models of those cells: same words, same cycles."""
    cfg = MatchConfig(mode="matching", n_way=3, k_shot=2, dim=10, lanes=8)
    text, instances = ecp5_verilog(MatchEngine(config=cfg), mf.ENGINE.toplevel)
    lane = [p for p in instances if '.REG_INPUTA_CLK("CLK0")' in p]
    partial = [p for p in instances if '.REG_INPUTA_CLK("NONE")' in p]
    assert len(lane) == cfg.lanes and len(partial) + len(lane) == len(instances)
    assert len(partial) >= 4  # the unit pipelines' partial products (reciprocals, scaling)
    # two copies (8 banks) of the lane-bank address, the query-bank address and the bank writes, bit by bit
    lane_bits = (cfg.n_vectors * cfg.chunks - 1).bit_length()
    query_bits = (timing(cfg).query_slots * cfg.chunks - 1).bit_length()
    for reg, bits in (("bank_addr", lane_bits), ("qbank_addr", query_bits)):
        assert len(re.findall(rf"TRELLIS_FF #\([^;]*?\) \\?{reg}\d+_ff\d+ ", text, flags=re.S)) == 2 * bits
    assert len(re.findall(r"TRELLIS_FF #\([^;]*?\) \\?bank_write1_ff\d+ ", text, flags=re.S)) > 16
    for params in lane:
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            assert f'.REG_{reg}_CLK("CLK0")' in params
    for params in partial:
        assert '.REG_INPUTB_CLK("NONE")' in params and '.REG_OUTPUT_CLK("CLK0")' in params
    generic = flow.engine_verilog(mf.ENGINE, cfg)
    assert "MULT18X18D" not in generic  # simulation and other devices: fabric registers around a multiply
    eps = _episodes(cfg, seed=5)
    r = mf.run_engine(cfg, eps, sim="icarus", timing_queries=_timing_queries(cfg), run_name="test-ecp5-dsp",
                      verilog=text)
    assert r["mismatches"] == 0 and r["queries"] == sum(len(e["queries"]) for e in eps) + _timing_queries(cfg)
    assert r["cycles"] == [timing(cfg).latency]
    assert r["packet_latency_measured"] == match_cycles(cfg).packet_latency


# query codes narrower than their 16-bit field (two to a word, odd D: a pad field), and one lane (one to a word)
NARROW = MatchConfig(mode="proto", n_way=3, k_shot=2, dim=9, lanes=4, emb_fmt=QFormat(3, 10))
ONE_LANE = MatchConfig(mode="matching", n_way=3, k_shot=2, dim=10, lanes=1)


@requires_icarus
@pytest.mark.parametrize("cfg", [NARROW, ONE_LANE], ids=["packed-odd-d", "one-lane"])
@pytest.mark.parametrize("scenario", ["errors", "reset"])
def test_engine_icarus_errors_and_reset(scenario, cfg):
    assert (NARROW.query_pack, NARROW.query_words, ONE_LANE.query_pack, ONE_LANE.query_words) == (2, 5, 1, 10)
    eps = _episodes(cfg, seed=4, features="random")
    r = mf.run_engine(cfg, eps, sim="icarus", scenario=scenario, run_name=f"test-{scenario}")
    assert r["mismatches"] == 0 and r["queries"] >= 3
    if scenario == "errors":  # a query code out of range is refused (BAD_VALUE), in order with the others
        assert [c[1] for c in r["checks"]][-6:] == ["OK", "BAD_VALUE", "OK", "BAD_LENGTH", "OK", "OK"]


# --- cocotb + Verilator -------------------------------------------------------------------------


def test_engine_verilator_default_digits():
    """The default design on two digits episodes through the shipped embedding."""
    eps = _episodes(DEFAULT, seed=11, features="embedding", n_episodes=2)
    r = mf.run_engine(DEFAULT, eps, run_name="test-default")
    assert r["mismatches"] == 0 and r["queries"] == 2 * 15 + mf.TIMING_QUERIES
    assert r["cycles"] == [timing(DEFAULT).latency] * 2
    assert r["ii_measured"] == match_cycles(DEFAULT).ii == 34  # 32 words of two codes + header + start


def test_engine_verilator_malformed_packets_and_recovery():
    r = mf.run_engine(DEFAULT, _episodes(DEFAULT, seed=2), scenario="errors", run_name="test-errors")
    assert [c[1] for c in r["checks"]] == [
        "NOT_LOADED", "UNKNOWN_OPCODE", "BAD_MAGIC", "BAD_LENGTH", "BAD_LENGTH", "BAD_LENGTH", "BAD_VALUE",
        "BAD_VALUE", "BAD_VALUE", "OK", "OK", "BAD_LENGTH", "OK", "OK",
    ]  # 16-bit codes two to a word: no query code can be out of range (the Icarus errors tests check that)
    assert r["mismatches"] == 0 and r["queries"] == 3


@pytest.mark.parametrize("reset_after", [40, 300])
def test_engine_verilator_reset_mid_stream(reset_after):
    """Reset while a query streams in (40) and while queries compute and answer (300)."""
    r = mf.run_engine(DEFAULT, _episodes(DEFAULT, seed=5), scenario="reset", reset_after=reset_after,
                      run_name=f"test-reset{reset_after}")
    assert r["mismatches"] == 0 and r["queries"] == 15


def test_engine_verilator_saturation_and_ties():
    """Codes at the format's limits and rows repeated across classes: saturation and exact ties."""
    eps = _episodes(DEFAULT, seed=8, features="extreme", n_episodes=2)
    # the stimulus really ties and saturates, in the reference
    ties = sat = 0
    limits = [DEFAULT.emb_fmt.min_code, DEFAULT.emb_fmt.max_code]
    for ep in eps:
        prep = mx.prepare(np.asarray(ep["support"]), np.asarray(ep["labels"]), DEFAULT)
        ro = mx.readout(np.asarray(ep["queries"]), prep, DEFAULT)
        top = ro.sums.max(axis=1, keepdims=True)
        ties += int(np.sum((ro.sums == top).sum(axis=1) > 1))
        sat += int(np.sum(np.isin(np.asarray(ep["support"]), limits)))
        tied = (ro.sums == top).sum(axis=1) > 1
        assert np.all(ro.pred[tied] == np.argmax(ro.sums == top, axis=1)[tied])  # the lowest class wins
    assert ties > 0 and sat > 0
    r = mf.run_engine(DEFAULT, eps, timing_queries=0, run_name="test-extreme")
    assert r["mismatches"] == 0


@requires_icarus
def test_engine_icarus_proto_saturation_and_ties():
    cfg = MatchConfig(mode="proto", n_way=3, k_shot=2, dim=10, lanes=4, logit_fmt="Q6.14")  # +-32
    eps = _episodes(cfg, seed=9, features="extreme")
    prep = mx.prepare(np.asarray(eps[0]["support"]), np.asarray(eps[0]["labels"]), cfg)
    ro = mx.readout(np.asarray(eps[0]["queries"]), prep, cfg)
    lf = cfg.logit_fmt
    assert np.isin(ro.logits, [lf.min_code, lf.max_code]).any()  # logits saturate
    assert ((ro.sums == ro.sums.max(axis=1, keepdims=True)).sum(axis=1) > 1).any()  # exact ties
    r = mf.run_engine(cfg, eps, sim="icarus", run_name="test-proto-extreme")
    assert r["mismatches"] == 0 and r["cycles"] == [timing(cfg).latency]


def test_a_wrong_reference_is_caught():
    """The scoreboard is not vacuous: a query whose reference differs gives mismatches."""
    eps = _episodes(DEFAULT, seed=1)
    bad = [dict(e) for e in eps]
    bad[0]["queries"] = [list(q) for q in bad[0]["queries"]]
    with pytest.raises(SimulationFailed, match="mismatching output words"):
        mf.run_engine(DEFAULT, eps, timing_queries=0, run_name="test-wrong", expect_episodes=_shift(bad))


def _shift(eps):
    """The same episodes with the first label of the support set moved to another class."""
    out = []
    for e in eps:
        e = dict(e)
        labels = list(e["labels"])
        labels[0] = (labels[0] + 1) % DEFAULT.n_way
        e["labels"] = labels
        out.append(e)
    return out


def test_query_codes_pack_two_to_a_word():
    """Hand-computed words: code 2w in bits 15..0, code 2w+1 in bits 31..16, a pad field of 0."""
    assert pack_codes([1, -1, 2], 2) == [0xFFFF0001, 0x00000002]
    assert pack_codes([-32768, 32767], 2) == [0x7FFF8000]
    assert pack_codes([1, -1], 1) == [1, 0xFFFFFFFF]
    assert unpack_codes([0xFFFF0001, 0x00000002], 2, 3).tolist() == [1, -1, 2]
    with pytest.raises(UserError, match="code 32768 does not fit a 16-bit field"):
        pack_codes([32768], 2)


@pytest.mark.parametrize("sim", ["verilator", pytest.param("icarus", marks=requires_icarus)])
def test_engine_follows_every_protocol_rule(sim):
    """docs/protocol.md's error precedence, loaded flag, STATUS fields and one-cycle reset, each request
    against the bench's model of those rules (the default design in Verilator; in Icarus a design whose
    query codes can be out of range)."""
    cfg = DEFAULT if sim == "verilator" else NARROW
    r = mf.run_engine(cfg, _episodes(cfg, seed=6, features="random"), sim=sim, scenario="protocol",
                      run_name=f"test-protocol-{sim}")
    statuses = [c[1] for c in r["checks"]]
    assert r["protocol_checks"] == len(statuses) > 50
    assert {"NOT_LOADED", "BAD_MAGIC", "UNKNOWN_OPCODE", "BAD_LENGTH", "BAD_VALUE", "OK"} == set(statuses)
    assert ("RUN with a bad value" in [c[0] for c in r["checks"]]) == (sim == "icarus")
