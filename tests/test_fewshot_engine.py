"""The few-shot engine (encoder + similarity read-out, pixels in, class out) against the bit-exact reference.

The encoder alone runs in the Amaranth simulator against
:func:`metafab.reference.encoder.encode_fixed` (conv with and without pool,
several lane groups, dense-only, odd sizes). The whole engine runs under
cocotb (Verilator and Icarus) against
:func:`metafab.reference.encoder.fewshot_fixed`: every output word, the
STATUS latency after every episode, and in the timing phase (query images
back to back) the cycle of every request and response header and the support
LOAD's cycles against :mod:`metafab.hw.fewshot_cycles`; random idle cycles
and back-pressure everywhere else. The >= 1000-query runs on glyphs are
benchmarks (``metafab verify fewshot``, docs/fewshot_engine.md).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from metafab.gen import flow
from metafab.gen.engines import fewshot as ff
from metafab.hw.encoder import EMIT_DELAY, Encoder, emit_delay, encoder_plan
from metafab.hw.fewshot_cycles import encoder_job_cycles, fewshot_cycles, stream_timeline
from metafab.hw.fewshot_engine import FewShotEngine, fewshot_ops, image_words
from metafab.reference import encoder as enc
from metafab.reference.errors import UserError
from metafab.reference.payloads import fewshot_encoder_words, fewshot_load_words, fewshot_run_words
from metafab.reference.protocol import Opcode, unpack_codes
from metafab.sim.runner import SimulationFailed

from .conftest import ecp5_verilog, requires_icarus

# a conv encoder with pools and two lane groups in its second conv and its dense layer
SMALL = enc.EncoderConfig(spec="c4-p-c6-p-d8", input_shape=(1, 8, 8), lanes=4, split=1, n_way=2, k_shot=2)
# dense only, matching read-out, 3 ways
DENSE = enc.EncoderConfig(spec="d12-d8", input_shape=(1, 4, 4), lanes=4, split=1, n_way=3, k_shot=1,
                          mode="matching")
# a conv without pool and a linear conv, 2 input channels, odd sizes (a 9-wide embedding: a half word),
# rows split in 4 slices (columns past a row's end in the last slice)
ODD = enc.EncoderConfig(spec="c3l-c5-p-d9", input_shape=(2, 4, 6), lanes=2, split=4, n_way=3, k_shot=2)
# SMALL with its rows in 2 and 8 slices
SPLIT2 = SMALL.replace(split=2)
SPLIT8 = SMALL.replace(lanes=2, split=8)
DEFAULT = enc.EncoderConfig()


def _codes(cfg, n, seed):
    rng = np.random.default_rng(seed)
    return enc.quantize_images(rng.uniform(-0.2, 1.2, (n, cfg.spec.n_inputs)), cfg).reshape(n, -1)


def _weights(cfg, seed=1):
    return enc.quantize_encoder(enc.init_params(cfg.spec, seed=seed), cfg)


def _episodes(cfg, seed, n_episodes=1, n_query=3):
    rng = np.random.default_rng(seed)
    M = cfg.match.n_support
    out = []
    for _ in range(n_episodes):
        labels = np.repeat(np.arange(cfg.n_way), cfg.k_shot)
        rng.shuffle(labels)
        out.append({"support": _codes(cfg, M, int(rng.integers(1 << 30))).tolist(), "labels": labels.tolist(),
                    "queries": _codes(cfg, n_query, int(rng.integers(1 << 30))).tolist()})
    return out


# --- the encoder in the Amaranth simulator ---------------------------------------------------


def encoder_run(cfg, wq, images, slots=2, gap=0):
    """Load ``wq``, write each image into a slot, run a job per image; the codes out and each job's cycles
    from its start to its last code."""
    dut = Encoder(config=cfg, slots=slots)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got, cycles = [], []

    async def tb(ctx):
        for i, v in enumerate(np.concatenate([w.ravel() for w in wq])):
            ctx.set(dut.w_valid, 1)
            ctx.set(dut.w_first, int(i == 0))
            ctx.set(dut.w_code, int(v))
            await ctx.tick()
        ctx.set(dut.w_valid, 0)
        wpi = dut.words_per_image
        for n, im in enumerate(images):
            s = n % slots
            for a, w in enumerate(fewshot_run_words(im)):
                ctx.set(dut.img_we, 1)
                ctx.set(dut.img_waddr, s * wpi + a)
                ctx.set(dut.img_wdata, w)
                await ctx.tick()
            ctx.set(dut.img_we, 0)
            await ctx.tick().repeat(gap + 1)
            ctx.set(dut.start, 1)
            ctx.set(dut.slot, s)
            await ctx.tick()
            ctx.set(dut.start, 0)
            out, t, last = [], 0, None
            while ctx.get(dut.busy):
                if ctx.get(dut.o_valid):
                    out.append(ctx.get(dut.o_code))
                    if ctx.get(dut.o_last):
                        last = t
                await ctx.tick()
                t += 1
            got.append(out)
            cycles.append(last + 1)  # the start's cycle counts as 0

    sim.add_testbench(tb)
    sim.run()
    return np.asarray(got), cycles


@pytest.mark.parametrize("cfg", [SMALL, DENSE, ODD, SPLIT2, SPLIT8], ids=["conv-pool", "dense", "odd", "split2",
                                                                         "split8"])
def test_encoder_equals_reference_and_cycle_model(cfg):
    wq = _weights(cfg)
    images = _codes(cfg, 3, seed=2)
    got, cycles = encoder_run(cfg, wq, images, gap=2)
    assert np.array_equal(got, enc.encode_fixed(wq, images, cfg))
    assert cycles == [encoder_job_cycles(cfg)] * 3


def test_encoder_saturates_and_rounds_like_the_reference():
    """Weights and pixels at the formats' limits: outputs saturate in act_fmt, bit for bit."""
    cfg = SMALL
    rng = np.random.default_rng(3)
    wq = [rng.choice([cfg.weight_fmt.min_code, cfg.weight_fmt.max_code, 1, -1, 0], size=w.shape)
          for w in _weights(cfg)]
    images = rng.choice([cfg.act_fmt.min_code, cfg.act_fmt.max_code, 0, 1], size=(2, cfg.spec.n_inputs))
    out = enc.encode_fixed(wq, images, cfg)
    assert (np.abs(out) == cfg.act_fmt.max_code).any() or (out == cfg.act_fmt.min_code).any()
    got, _ = encoder_run(cfg, wq, images)
    assert np.array_equal(got, out)


def test_encoder_plan_and_cycle_formula():
    plan = encoder_plan(DEFAULT)
    assert (DEFAULT.lanes, DEFAULT.split) == (8, 8)
    assert [(st.kind, st.rows, st.cols, st.slice_cols, st.groups, st.positions, st.pool) for st in plan] == [
        ("conv3x3", 8, 10, 2, 1, 256, True), ("conv3x3", 16, 73, 10, 2, 64, True), ("dense", 64, 257, 33, 8, 1, False)]
    assert [st.issue_cycles for st in plan] == [512, 1280, 264]
    assert sum(st.macs for st in plan) == DEFAULT.spec.total_macs == 111_680
    # issue cycles, the drains between stages and the last emission; the slices' adder tree has 3 levels
    ed = emit_delay(8)
    assert ed == EMIT_DELAY + 3
    # (and one cycle: the start's register)
    job = 1 + (512 + ed + 8) + (1280 + ed + 8) + 264 + ed - 1 + 8
    assert encoder_job_cycles(DEFAULT) == job == 2113
    one = DEFAULT.replace(lanes=16, split=1)
    ed1 = EMIT_DELAY
    assert encoder_job_cycles(one) == 1 + (2560 + ed1 + 8) + (4672 + ed1 + 16) + 1028 + ed1 - 1 + 16
    m = fewshot_cycles(DEFAULT)
    assert m.ii == job + 2 and m.latency == job + 1 + m.readout_latency
    assert m.lanes == 64 and abs(m.lane_utilisation - 111_680 / (64 * job)) < 1e-12
    tl = stream_timeline(DEFAULT, 3)
    assert tl[2]["first_word"] == tl[0]["enc_last"] + 2  # the third image waits for a free slot
    W = image_words(DEFAULT)
    assert W == 128 and fewshot_ops(DEFAULT)[Opcode.LOAD].req_len == 5 * 129
    assert fewshot_ops(DEFAULT)[Opcode.LOAD_ENCODER].req_len == DEFAULT.spec.n_params == 17_696


def test_engine_rejects_configs_it_cannot_build():
    with pytest.raises(UserError, match="16-bit codes"):
        FewShotEngine(config=enc.EncoderConfig(act_fmt="Q4.8", acc_fmt="Q18.22"))
    with pytest.raises(UserError, match="pools once"):
        encoder_plan(enc.EncoderConfig(spec="c2-p-p-d4", input_shape=(1, 8, 8), lanes=2, n_way=2))
    with pytest.raises(UserError, match="use at most 10 lanes"):
        encoder_plan(enc.EncoderConfig(spec="c16-d4", input_shape=(1, 4, 4), lanes=16, split=1, n_way=2))
    with pytest.raises(UserError, match="use at most 3 lanes"):
        encoder_plan(enc.EncoderConfig(spec="d12-d8", input_shape=(1, 4, 4), lanes=4, split=8, n_way=2))
    with pytest.raises(UserError, match="split must be a power of two"):
        enc.EncoderConfig(split=3)
    with pytest.raises(UserError, match="lanes must be a power of two"):
        enc.EncoderConfig(lanes=12)
    with pytest.raises(TypeError):
        FewShotEngine(config=DEFAULT.match)


def test_payloads_pack_two_pixels_to_a_word():
    im = np.array([-1, 2, 0x7FFF, -0x8000, 5])
    words = fewshot_run_words(im)
    assert words == [(2 << 16) | 0xFFFF, (0x8000 << 16) | 0x7FFF, 5]
    assert unpack_codes(words, 2, 5).tolist() == im.tolist()
    load = fewshot_load_words([im, im], [1, 0])
    assert load == [1, *words, 0, *words]
    wq = _weights(SMALL)
    assert len(fewshot_encoder_words(wq)) == SMALL.spec.n_params


# --- the whole engine under cocotb -----------------------------------------------------------


def _run(cfg, eps, sim, **kw):
    return ff.run_engine(cfg, _weights(cfg), eps, sim=sim, run_name=f"test-{kw.pop('tag', 'run')}", **kw)


@pytest.mark.parametrize("cfg", [SMALL, DENSE, ODD, SPLIT8], ids=["conv-pool", "dense-matching", "odd", "split8"])
def test_engine_verilator_episodes(cfg):
    eps = _episodes(cfg, seed=4, n_episodes=2)
    r = _run(cfg, eps, "verilator", tag="episodes")
    model = fewshot_cycles(cfg)
    assert r["mismatches"] == 0 and r["queries"] == 6 + ff.TIMING_QUERIES
    assert r["cycles"] == [model.latency] * 2
    assert r["ii_measured"] == model.ii and r["packet_latency_measured"] == model.packet_latency
    assert r["timing"]["load_cycles"] == model.load_cycles


def test_engine_unequal_class_counts_and_proto_and_matching():
    """A support set of 3 + 1 + 2 images (the prototypes' counts differ), both read-outs."""
    for mode in ("proto", "matching"):
        cfg = enc.EncoderConfig(spec="c4-p-c6-p-d8", input_shape=(1, 8, 8), lanes=4, split=2, n_way=3, k_shot=2,
                                mode=mode)
        eps = _episodes(cfg, seed=6)
        eps[0]["labels"] = [0, 2, 0, 1, 2, 0]
        r = _run(cfg, eps, "verilator", tag=f"unequal-{mode}", timing_queries=0)
        assert r["mismatches"] == 0 and r["queries"] == 3


@pytest.mark.parametrize("scenario", ["errors", "reset", "protocol"])
def test_engine_verilator_errors_reset_protocol(scenario):
    """Before LOAD_ENCODER, a weight out of range, a truncated LOAD_ENCODER, LOAD_ENCODER behind queries in
    flight (its payload waits) clearing the loaded set, the read-out's LOAD rules; reset mid-stream; every
    rule of the packet protocol."""
    r = _run(SMALL, _episodes(SMALL, seed=7), "verilator", tag=scenario, scenario=scenario, timing_queries=0)
    assert r["mismatches"] == 0
    if scenario == "errors":
        assert [c[1] for c in r["checks"]] == ["NOT_LOADED", "NOT_LOADED", "BAD_VALUE", "NOT_LOADED", "BAD_LENGTH",
                                               "OK", "OK", "OK", "NOT_LOADED", "BAD_VALUE", "BAD_VALUE"]
    if scenario == "protocol":
        assert r["protocol_checks"] > 40


@requires_icarus
@pytest.mark.parametrize("cfg", [SMALL, ODD], ids=["conv-pool", "odd"])
def test_engine_icarus_episodes(cfg):
    r = _run(cfg, _episodes(cfg, seed=8), "icarus", tag="icarus", timing_queries=3)
    assert r["mismatches"] == 0 and r["cycles"] == [fewshot_cycles(cfg).latency]


def test_a_wrong_reference_is_caught():
    eps = _episodes(SMALL, seed=9)
    wrong = json.loads(json.dumps(eps))
    wrong[0]["labels"] = [1 - v for v in wrong[0]["labels"]]  # the classes swapped: every probability moves
    with pytest.raises(SimulationFailed, match="mismatching"):
        ff.run_engine(SMALL, _weights(SMALL), eps, sim="verilator", timing_queries=0, expect_episodes=wrong,
                      run_name="test-wrong")


def test_default_glyph_design_verilator():
    """The built-in design (5-way 1-shot glyphs, the shipped conv encoder): a few glyph queries bit-exact,
    cycles as modelled."""
    wq, src = ff.encoder_weights(DEFAULT)
    assert src.startswith("shipped glyph encoder (conv")
    eps, _ = ff.make_episodes(DEFAULT, 1, 3, n_query=1)
    r = ff.run_engine(DEFAULT, wq, ff.episode_codes(DEFAULT, eps), sim="verilator", timing_queries=2,
                      run_name="test-default")
    m = fewshot_cycles(DEFAULT)
    assert r["mismatches"] == 0 and r["cycles"] == [m.latency] and r["timing"]["load_cycles"] == m.load_cycles


@requires_icarus
def test_engine_as_elaborated_for_ecp5_with_a_dsp_model():
    """The engine as built for the ECP5 (lane products and the read-out's in MULT18X18D cells), with behavioural
    models of the cells: same words, same cycles."""
    cfg = SMALL
    text, instances = ecp5_verilog(FewShotEngine(config=cfg), ff.ENGINE.toplevel)
    lane = [p for p in instances if '.REG_INPUTA_CLK("CLK0")' in p]
    assert len(lane) >= cfg.lanes + cfg.match.lanes
    assert "MULT18X18D" not in flow.engine_verilog(ff.ENGINE, cfg)
    r = ff.run_engine(cfg, _weights(cfg), _episodes(cfg, seed=10), sim="icarus", timing_queries=2,
                      run_name="test-ecp5", verilog=text)
    assert r["mismatches"] == 0 and r["cycles"] == [fewshot_cycles(cfg).latency]
    assert re.search(r"fewshot_engine", text)


# --- the command line ------------------------------------------------------------------------

SMALL_ARGS = ["--spec", "c2-p-d8", "--lanes", "2", "--split", "2", "--ways", "2"]


def test_verify_fewshot_cli_json(capsys):
    """``metafab verify fewshot`` on glyph episodes with a small random encoder: 0 mismatches, the cycles as
    modelled, no accuracy (random weights)."""
    from metafab.gen.cli import main

    assert main(["verify", "fewshot", *SMALL_ARGS, "--queries", "30", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    cfg = enc.EncoderConfig(spec="c2-p-d8", lanes=2, split=2, n_way=2)
    m = fewshot_cycles(cfg)
    assert r["mismatches"] == 0 and r["queries"] == 30 and r["rtl_equals_fixed"] and r["cycles_match_model"]
    assert r["latency_measured"] == [m.latency] and r["ii_measured"] == m.ii
    assert r["load_cycles_measured"] == m.load_cycles and r["accuracy"]["rtl"] is None
    assert r["encoder"].startswith("random He weights") and r["features"].startswith("glyphs")


def test_verify_fewshot_with_an_encoder_file(tmp_path, capsys):
    """``--encoder FILE``: a trained encoder's file drives the design (accuracy reported); a file of another
    spec is a one-line error."""
    from metafab.gen.cli import main

    spec = enc.EncoderSpec.parse("c2-p-d8")
    path = enc.save_encoder(tmp_path / "e.npz", spec, enc.init_params(spec, seed=4), {"note": "test"})
    assert main(["verify", "fewshot", *SMALL_ARGS, "--encoder", str(path), "--queries", "30", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mismatches"] == 0 and r["encoder"].startswith("file ") and r["accuracy"]["rtl"] == r["accuracy"]["fixed"]
    assert main(["verify", "fewshot", "--encoder", str(path), "--queries", "5"]) == 2
    assert "holds c2-p-d8" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--split", "3"], "split must be a power of two"),
    (["--lanes", "128"], "lanes must be"),
    (["--spec", "c8-q"], "is not c<N>"),
    (["--spec", "d12-d8", "--set", "input_shape=[1, 4, 4]", "--features", "glyphs"], "glyph episodes need"),
    (["--set", 'act_fmt="Q4.8"', "--set", 'acc_fmt="Q18.22"'], "16-bit codes"),
    (["--encoder", "/nonexistent/e.npz"], "e.npz"),
])
def test_fewshot_cli_errors_are_one_line(argv, message, capsys):
    from metafab.gen.cli import main

    assert main(["verify", "fewshot", *argv, "--queries", "5"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
