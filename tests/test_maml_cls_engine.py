"""The classification MAML engine (``maml-cls``) against the bit-exact reference, in cocotb + Verilator / Icarus.

Every output word (each query's ``N`` probabilities and its class) of every
episode is compared with :func:`metafab.reference.maml_cls_fixed.run_task`,
and the engine's cycle counter with the cycle model. Each design is
converted and compiled once per session (build caches keyed by content).
"""

from __future__ import annotations

import numpy as np
import pytest

from metafab.gen.engines import get_engine
from metafab.gen.engines.maml_cls import glyph_episodes, initial_params, random_episodes
from metafab.hw.maml_cycles import maml_cycles
from metafab.hw.maml_schedule import ERROR, FORWARD, UPDATE, schedule
from metafab.reference import maml_cls_fixed as mc
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlClsConfig
from metafab.sim.runner import SimulationFailed

from .conftest import requires_icarus

ENGINE = get_engine("maml-cls")
GLYPH = MamlClsConfig()  # 256-128-64-64-5, 5-way 1-shot, 25 queries, 5 steps, P=16


def weights(cfg, method="random", seed=0):
    params, _ = initial_params(cfg, method, seed)
    return mf.quantize_params(params, cfg)


def run(cfg, wq, items, **kw):
    return ENGINE._run(cfg, wq, items, **kw)


# --- schedule and cycle model (no simulator) -----------------------------------------


def test_classifier_schedule_jobs_and_tensors():
    """MAML: every layer backward and updated; ANIL: no backward job, only the head updated; the error job
    reads the softmax unit's E = p - onehot, not targets."""
    sch = schedule(GLYPH)
    assert "E" in sch.tensors and "Y" not in sch.tensors
    kinds = [(j.kind, j.layer) for j in sch.step_jobs]
    assert kinds[:5] == [(FORWARD, 0), (FORWARD, 1), (FORWARD, 2), (FORWARD, 3), (ERROR, 4)]
    assert sum(k == UPDATE for k, _ in kinds) == 4 and len(kinds) == 5 + 3 + 4
    err = next(j for j in sch.step_jobs if j.kind == ERROR)
    assert [a.tensor for a in err.y] == ["E"]
    anil = schedule(GLYPH.replace(adapt_layers="head"))
    assert [(j.kind, j.layer) for j in anil.step_jobs] == kinds[:5] + [(UPDATE, 3)]


def test_softmax_timing_and_cycle_model_add_up():
    """The error job waits for the support softmax; the tail is the queries' softmax, one sample per period."""
    cfg = MamlClsConfig(layers=(16, 8, 3), k_support=3, n_query=4)
    sch, model = schedule(cfg), maml_cycles(cfg)
    sm = sch.softmax
    assert sm.period == sm.class_at + 1 and sm.write_at == sm.prob_at + sm.scale_latency
    assert sm.exp_at == cfg.n_out + 3 and sm.recip_at == sm.exp_at + cfg.n_out + sm.exp_latency
    tl = sch.timeline()
    fwd = next(p for p in tl if p.job.kind == FORWARD and p.job.layer == 1)
    err = next(p for p in tl if p.job.kind == ERROR)
    # the support softmax runs between the last forward job and the error job (3 samples, one period each)
    assert err.start - fwd.end >= 3 * sm.period
    assert model.tail_cycles >= cfg.n_query * sm.period
    assert model.task_cycles == sum(j.gap + j.issue for j in model.jobs) + model.tail_cycles
    assert 0 < model.lane_utilisation < 1


def test_classifier_schedules_on_random_configs():
    """Random classifiers (depth, widths, K, Q, steps, lanes, MAML or ANIL): the timeline's own checks hold
    (no word read and written in one cycle, the shared weight port never taken twice in a cycle, every
    E element read after the softmax wrote it), the error job overlaps the support softmax only as the
    columns come, and the model adds up."""
    rng = np.random.default_rng(7)
    for _ in range(25):
        depth = int(rng.integers(0, 3))
        hidden = [int(rng.integers(1, 20)) for _ in range(depth)]
        layers = [int(rng.integers(2, 24)), *hidden, int(rng.integers(2, 9))]
        cfg = MamlClsConfig(layers=layers, k_support=int(rng.integers(1, 13)), n_query=int(rng.integers(1, 13)),
                            steps=int(rng.integers(0, 4)), lanes=int(2 ** rng.integers(0, 7)),
                            adapt_layers=str(rng.choice(["all", "head"])))
        sch, model = schedule(cfg), maml_cycles(cfg)
        assert sch.shared_w_port and "E" in sch.tensors
        assert model.task_cycles == model.issue_cycles + model.gap_cycles + model.tail_cycles
        assert model.issue_cycles >= -(-cfg.useful_macs() // cfg.lanes)
        assert model.tail_cycles >= cfg.n_query * sch.softmax.period
        if cfg.steps:
            tl = sch.timeline()
            last_fwd = max(p.end for p in tl[:len(sch.step_jobs)] if p.job.kind == FORWARD)
            err = next(p for p in tl if p.job.kind == ERROR)
            sm = sch.softmax  # it starts reading E after the first sample's and ends after the last one's
            assert err.start > last_fwd + sm.write_at
            assert err.end > last_fwd + (cfg.k_support - 1) * sm.period + sm.write_at + cfg.n_out - 1


# --- cocotb + Verilator ------------------------------------------------------------------


def test_glyph_default_design_bit_exact_with_shipped_weights():
    """The built-in default: the shipped MAML glyph classifier on glyph meta-test episodes, 5 inner steps."""
    wq = weights(GLYPH, "auto")
    eps, items = glyph_episodes(GLYPH, 2, seed=3)
    r = run(GLYPH, wq, items, run_name="test-cls-default", return_outputs=True, read_weights=True)
    assert r["mismatches"] == 0 and r["tasks"] == 2
    assert r["words"] == 2 * (GLYPH.result_words + GLYPH.n_params) and r["weight_mismatches"] == 0
    assert r["cycles"] == [maml_cycles(GLYPH).task_cycles] * 2
    # the classes answered are the reference's (an independent check of the class words)
    for out, item in zip(r["outputs"], items, strict=True):
        want = mc.run_task(wq, *(np.asarray(a) for a in item), GLYPH).pred
        assert [out[q * 6 + 5] for q in range(GLYPH.n_query)] == want.tolist()


@pytest.mark.parametrize("name", ["anil", "5w5s"])
def test_glyph_net_anil_and_five_shot(name):
    """ANIL (the shipped ANIL classifier, 5 steps: the lower layers keep their loaded weights) and 5-way
    5-shot (the shipped 5-shot MAML classifier, 25 support samples; 1 step to keep the run short)."""
    cfg = GLYPH.replace(adapt_layers="head") if name == "anil" else GLYPH.replace(k_support=25, steps=1)
    wq = weights(cfg, "shipped")
    _, items = glyph_episodes(cfg, 1, seed=4)
    r = run(cfg, wq, items, run_name=f"test-cls-{name}", read_weights=True, return_outputs=True)
    assert r["mismatches"] == 0 and r["cycles"] == [maml_cycles(cfg).task_cycles]
    assert r["weight_words"] == cfg.n_params and r["weight_mismatches"] == 0
    if name == "anil":  # ANIL: every layer below the head reads back as loaded
        head = cfg.n_params - cfg.weight_shapes[-1][0] * cfg.weight_shapes[-1][1]
        assert r["adapted"][0][:head] == [int(w) for w in np.concatenate([a.reshape(-1) for a in wq])[:head]]
        assert r["adapted"][0][head:] != [int(w) for w in np.concatenate([a.reshape(-1) for a in wq])[head:]]


SMALL = {
    "20-way": MamlClsConfig(layers=(24, 16, 20), k_support=20, n_query=40, lanes=16),
    "deep-narrow": MamlClsConfig(layers=(12, 6, 6, 6, 6, 4), k_support=8, n_query=4, lanes=8, steps=2),
    "p1": MamlClsConfig(layers=(16, 8, 3), k_support=3, n_query=4, lanes=1),
    "p64-anil-s3": MamlClsConfig(layers=(16, 8, 3), k_support=6, n_query=6, lanes=64, steps=3, adapt_layers="head"),
    "one-layer": MamlClsConfig(layers=(16, 5), k_support=5, n_query=5, lanes=4, steps=2),
    "no-step": MamlClsConfig(layers=(16, 8, 2), k_support=2, n_query=3, steps=0),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_classifiers_bit_exact(name):
    cfg = SMALL[name]
    r = run(cfg, weights(cfg), random_episodes(cfg, 4, seed=1), run_name=f"test-cls-{name}", read_weights=True)
    assert r["mismatches"] == 0 and r["tasks"] == 4 and r["weight_words"] == 4 * cfg.n_params
    assert r["cycles"] == [maml_cycles(cfg).task_cycles] * 4


def test_saturating_inputs_bit_exact():
    """Inputs at the format's limits, large weights and a large step: logits and weights saturate."""
    cfg = MamlClsConfig(layers=(16, 8, 3), k_support=6, n_query=4, lanes=4, steps=2, lr=3.0)
    params, _ = initial_params(cfg, "random", 2)
    wq = mf.quantize_params([(4 * W, 4 * b) for W, b in params], cfg)
    items = random_episodes(cfg, 4, seed=2, extreme=True)
    outs = [mc.run_task(wq, *(np.asarray(a) for a in t), cfg) for t in items]
    assert any(np.isin(o.logits, [cfg.act_fmt.min_code, cfg.act_fmt.max_code]).any() for o in outs)
    assert sum(int(np.isin(w, [cfg.master_fmt.min_code, cfg.master_fmt.max_code]).sum())
               for o in outs for w in o.weights) > 0
    r = run(cfg, wq, items, run_name="test-cls-saturate")
    assert r["mismatches"] == 0 and r["tasks"] == 4


def test_malformed_runs_labels_out_of_range_and_recovery():
    cfg = SMALL["deep-narrow"]
    r = run(cfg, weights(cfg), random_episodes(cfg, 2, seed=4), scenario="errors", run_name="test-cls-errors")
    assert [c for c, _ in r["checks"]][-3:] == ["input out of range", "label out of range", "negative label"]
    assert [s for _, s in r["checks"]][-3:] == ["BAD_VALUE"] * 3
    assert r["mismatches"] == 0 and r["tasks"] == 2


@pytest.mark.parametrize("reset_after", [20, 400])
def test_reset_mid_episode_then_full_episodes(reset_after):
    """Reset while the RUN streams in (20) and while the engine computes (400: in the support softmax or
    after it)."""
    cfg = SMALL["deep-narrow"]
    r = run(cfg, weights(cfg), random_episodes(cfg, 2, seed=8), scenario="reset", reset_after=reset_after,
            run_name=f"test-cls-reset{reset_after}")
    assert r["mismatches"] == 0 and r["tasks"] == 2


def test_protocol_rules():
    cfg = SMALL["p1"]
    r = run(cfg, weights(cfg), random_episodes(cfg, 1, seed=3), scenario="protocol", run_name="test-cls-protocol")
    assert r["mismatches"] == 0


def test_a_wrong_reference_is_caught():
    """The scoreboard is not vacuous: an initial head bias off by a few codes changes probabilities."""
    cfg = SMALL["deep-narrow"]
    wq = weights(cfg)
    bumped = [w.copy() for w in wq]
    bumped[-1][0, -1] += 512
    with pytest.raises(SimulationFailed, match="mismatching output words"):
        run(cfg, wq, random_episodes(cfg, 1, seed=1), run_name="test-cls-wrong", expect_weights=bumped)


@requires_icarus
@pytest.mark.parametrize("scenario", ["tasks", "errors"])
def test_icarus_small_classifier(scenario):
    cfg = MamlClsConfig(layers=(8, 6, 3), k_support=3, n_query=3, lanes=4, steps=2)
    r = run(cfg, weights(cfg), random_episodes(cfg, 2, seed=6), sim="icarus", scenario=scenario,
            run_name=f"test-cls-icarus-{scenario}")
    assert r["mismatches"] == 0 and r["tasks"] == 2


# --- the command line --------------------------------------------------------------------------


def _cli(capsys, *argv):
    from metafab.gen.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SMALL_FLAGS = ["--layers", "16-8-3", "--shots", "1", "--queries", "2", "--steps", "2", "--lanes", "4"]


def test_cli_verify_glyph_default_reports_accuracies(capsys):
    """``metafab verify maml-cls`` with no design flags: the glyph default, RTL accuracy = fixed point's."""
    import json

    code, out, err = _cli(capsys, "verify", "maml-cls", "--episodes", "1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["design"] == GLYPH.name and r["mismatches"] == 0 and r["episodes"] == 1
    assert r["cycles_measured"] == [r["cycles_model"]] and r["rtl_equals_fixed_predictions"]
    assert r["accuracy_rtl"] == r["accuracy_fixed"] and 0 <= r["accuracy_float64"] <= 100
    assert "shipped MAML glyph classifier" in r["weights"]


def test_cli_design_flags_sim_and_generate(capsys, tmp_path):
    import json

    code, out, err = _cli(capsys, "sim", "maml-cls", *SMALL_FLAGS, "--episodes", "2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["design"] == "maml-cls-16-8-3-k3-q6-s2-p4" and doc["mismatches"] == 0
    assert doc["cycles_per_episode"] == [doc["model_cycles"]] * 2 and len(doc["classes"][0]) == 6
    code, _, err = _cli(capsys, "generate", "maml-cls", *SMALL_FLAGS, "--anil", "-o", str(tmp_path / "g"))
    assert code == 0, err
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["engine"] == "maml-cls" and man["adapt_layers"] == "head" and man["classes"] == 3
    assert man["protocol"]["request_words"]["RUN"] == 3 * 17 + 6 * 16


@pytest.mark.parametrize("argv, fragment", [
    (["--ways", "1"], "--ways must be at least 2"),
    (["--shots", "0"], "--shots must be at least 1, got 0"),
    (["--layers", "16-8-3", "--weights", "shipped"], "the shipped glyph classifiers are 256-128-64-64-5 nets"),
    (["--set", "adapt_layers=some"], "adapt_layers"),
])
def test_cli_user_mistakes_are_one_line(capsys, argv, fragment):
    code, _, err = _cli(capsys, "verify", "maml-cls", *argv, "--episodes", "1")
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_board_preload_of_the_glyph_net_and_none():
    """The board top's preload is the LOAD of the shipped weights; ``--weights none`` builds it without one."""
    from argparse import Namespace

    from metafab.reference.weights import load_glyph_classifier

    words, source = ENGINE.preload(GLYPH, Namespace(weights="auto"))
    assert len(words) == GLYPH.n_params and "shipped MAML" in source
    # the protocol's order: layer by layer, [W | b] row by row, two's complement 32-bit words
    wq = mf.quantize_params(load_glyph_classifier("maml", 1).params, GLYPH)
    assert words == [int(v) & 0xFFFFFFFF for w in wq for v in w.reshape(-1)]
    none, why = ENGINE.preload(GLYPH, Namespace(weights="none"))
    assert none is None and "no preload" in why
