"""The bit-exact fixed-point classification MAML model: a worked case, float64 agreement, ANIL, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from metafab.reference import classify, maml
from metafab.reference import fixed as fx
from metafab.reference import maml_cls_fixed as cf
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlClsConfig, MamlConfig
from metafab.reference.errors import UserError

#: wide formats: the fixed-point model must follow float64 closely (the exp table's step 2**-13 dominates)
WIDE = dict(act_fmt="Q6.20", weight_fmt="Q4.22", grad_fmt="Q2.24", lr_fmt="UQ0.20", acc_fmt="Q14.46",
            prob_fmt="UQ1.20", exp_fmt="UQ1.22", exp_table_bits=16, exp_range=8, mant_bits=24)


def test_one_step_worked_by_hand():
    """Two classes, one linear layer, one support sample: the softmax error and the update by hand."""
    cfg = MamlClsConfig(layers=(1, 2), k_support=1, n_query=1, steps=1, lr=0.5, lanes=1, act_fmt="Q6.10",
                        weight_fmt="Q4.12", grad_fmt="Q1.17", lr_fmt="UQ0.15", acc_fmt="Q16.30",
                        prob_fmt="UQ1.13", exp_fmt="UQ1.17", exp_table_bits=10, exp_range=8)
    assert cfg.lr_eff == 0.5  # lr / k_support
    # logits z = (0, 0) for x = 1: W = (0.5, -0.5), b = (-0.5, 0.5); p = (1/2, 1/2) exactly (exp(0) = 1)
    params = [(np.array([[0.5], [-0.5]]), np.array([-0.5, 0.5]))]
    wq = mf.quantize_params(params, cfg)
    x = mf.quantize_inputs(np.array([[1.0]]), cfg)
    logits, _ = cf.forward(wq, x, cfg)
    assert logits.tolist() == [[0, 0]]
    probs, e = cf.softmax(logits, cfg)
    assert e.tolist() == [[1 << 17, 1 << 17]] and probs.tolist() == [[1 << 12, 1 << 12]]
    # label 1: error = lr_eff * (p - onehot) = 0.5 * (1/2, -1/2) = (1/4, -1/4); dW = error * x, db = error
    new = cf.inner_step(wq, x, np.array([1]), cfg)
    got = [[fx.to_fraction(c, cfg.master_fmt) for c in row] for row in new[0].tolist()]
    assert got == [[Fraction(1, 4), Fraction(-3, 4)], [Fraction(-1, 4), Fraction(3, 4)]]


@pytest.mark.parametrize("layers,steps,adapt", [((6, 10, 4), 1, "all"), ((5, 8, 8, 3), 2, "all"),
                                                ((5, 8, 8, 3), 3, "head")])
def test_wide_formats_track_float64(layers, steps, adapt):
    cfg = MamlClsConfig(layers=layers, k_support=12, n_query=9, steps=steps, lr=0.5, adapt_layers=adapt, **WIDE)
    rng = np.random.default_rng(3)
    params = maml.init_params(layers, 4)
    xs, xq = rng.uniform(-1, 1, (12, layers[0])), rng.uniform(-1, 1, (9, layers[0]))
    labels = rng.integers(0, layers[-1], 12)
    wq = mf.quantize_params(params, cfg)
    xs_c, xq_c = mf.quantize_inputs(xs, cfg), mf.quantize_inputs(xq, cfg)
    res = cf.run_task(wq, xs_c, labels, xq_c, cfg)
    # float64 on the same quantised start and inputs
    start = mf.dequantize_params(wq, cfg)
    adapted = classify.adapt(start, fx.to_float(xs_c, cfg.act_fmt), labels, steps, 0.5,
                             layers=None if adapt == "all" else classify.anil_layers(len(layers) - 1))
    probs, pred = classify.predict(adapted, fx.to_float(xq_c, cfg.act_fmt))
    got_w = mf.dequantize_params(res.weights, cfg)
    for (w, b), (fw, fb) in zip(got_w, adapted, strict=True):
        assert np.max(np.abs(w - fw)) < 2e-5 and np.max(np.abs(b - fb)) < 2e-5
    assert np.max(np.abs(fx.to_float(res.probs, cfg.prob_fmt) - probs)) < 1e-4
    assert np.array_equal(res.pred, pred)
    if adapt == "head":
        assert all(np.array_equal(a, b) for a, b in zip(res.weights[:-1], wq[:-1], strict=True))
        assert not np.array_equal(res.weights[-1], wq[-1])


def test_softmax_is_the_shared_table_and_reciprocal():
    """The probabilities equal exp table entries times the similarity engine's reciprocal, and sum to ~1."""
    from metafab.reference.match_fixed import exp_table, reciprocal

    cfg = MamlClsConfig(layers=(4, 5), k_support=5, n_query=5)
    rng = np.random.default_rng(8)
    fa = cfg.act_fmt.frac_bits
    z = rng.integers(-9 << fa, 9 << fa, (50, 5))
    probs, e = cf.softmax(z, cfg)
    tab = exp_table(cfg)
    rel = z - z.max(axis=1, keepdims=True)
    # np.rint rounds half to even, as the table index does
    idx = np.rint(-rel / 2 ** (cfg.act_fmt.frac_bits - cfg.exp_shift_bits)).astype(np.int64)
    assert np.array_equal(e, np.where(idx < len(tab), tab[np.minimum(idx, len(tab) - 1)], 0))
    y, L = reciprocal(e.sum(axis=1), cfg)
    want = np.clip(np.rint(e * y[:, None] / 2.0 ** (cfg.mant_bits + L - 13)[:, None]), 0, (1 << 14) - 1)
    assert np.max(np.abs(probs - want)) <= 1  # float rint vs half-even on exact ties only
    assert np.all(np.abs(probs.sum(axis=1) / 2**13 - 1) < 2e-3)
    # the float softmax, within the 8-step range of the table
    f = np.exp(rel / 2.0**fa)
    assert np.max(np.abs(probs / 2**13 - f / f.sum(axis=1, keepdims=True))) < 5e-3


def test_query_class_is_the_argmax_of_the_logits_ties_to_the_lowest():
    cfg = MamlClsConfig(layers=(1, 3), k_support=1, n_query=2, steps=0, lanes=1)
    params = [(np.zeros((3, 1)), np.array([0.25, 0.75, 0.75]))]
    wq = mf.quantize_params(params, cfg)
    res = cf.run_task(wq, mf.quantize_inputs(np.ones((1, 1)), cfg), np.array([0]),
                      mf.quantize_inputs(np.ones((2, 1)), cfg), cfg)
    assert res.pred.tolist() == [1, 1] and res.probs[0, 1] == res.probs[0, 2] > res.probs[0, 0]
    assert cf.result_words(res) == [*map(int, res.probs[0]), 1, *map(int, res.probs[1]), 1]


@pytest.mark.parametrize("change,words", [
    (dict(layers=(4, 1)), "at least 2 classes"),
    (dict(adapt_layers="body"), "adapt_layers 'body' is not one of: all, head"),
    (dict(prob_fmt="Q1.13"), "prob_fmt must be unsigned"),
    (dict(exp_range=6), "exp_range must be a power of two"),
    (dict(prob_fmt="UQ1.16"), "needs 31 (prob_fmt + lr_fmt)"),
    (dict(exp_index_rounding="stochastic"), "not 'stochastic'"),
])
def test_bad_config_is_one_line(change, words):
    with pytest.raises(UserError) as exc:
        MamlClsConfig(**change)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_bad_labels_are_named():
    cfg = MamlClsConfig(layers=(2, 3), k_support=2, n_query=1, lanes=1)
    wq = mf.quantize_params(maml.init_params((2, 3), 0), cfg)
    x = mf.quantize_inputs(np.ones((2, 2)), cfg)
    with pytest.raises(UserError, match=r"must lie in 0\.\.2 \(the 3 classes\), got 3"):
        cf.inner_step(wq, x, np.array([0, 3]), cfg)
    with pytest.raises(UserError, match="integer class labels"):
        cf.inner_step(wq, x, np.array([0.0, 1.0]), cfg)
    with pytest.raises(UserError, match=r"shape \(2,\)"):
        cf.inner_step(wq, x, np.array([0]), cfg)


def test_config_sizes_and_round_trip():
    cfg = MamlClsConfig()
    assert cfg.name == "maml-cls-256-128-64-64-5-k5-q25-s5-p16" and cfg.n_way == 5
    assert cfg.n_params == 257 * 128 + 129 * 64 + 65 * 64 + 65 * 5
    assert cfg.run_words == 5 * 257 + 25 * 256 and cfg.result_words == 25 * 6
    assert MamlClsConfig.from_dict(cfg.to_dict()) == cfg and cfg.replace(adapt_layers="head").adapted == (3,)
    # per support sample: forward, backward below the top (3 layers, no bias column), all weight grads, error
    shapes = cfg.weight_shapes
    per = cfg.n_params + sum(o * (i - 1) for o, i in shapes[1:]) + cfg.n_params + 5
    assert cfg.useful_macs() == 5 * 5 * per + 25 * cfg.n_params
    assert isinstance(cfg, MamlConfig)
