"""The bit-exact fixed-point MAML model: a case worked by hand, agreement with float64, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from metafab.reference import fixed as fx
from metafab.reference import maml
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.precision import format_family, maml_precision, precision_markdown


def test_one_step_worked_by_hand():
    """1-1-1 net, one support pair, one step, one query: every value exact in its format."""
    cfg = MamlConfig(layers=(1, 1, 1), k_support=1, n_query=1, steps=1, lr=1 / 16, lanes=1,
                     act_fmt="Q6.10", weight_fmt="Q4.12", grad_fmt="Q0.18", lr_fmt="UQ0.17",
                     acc_fmt="Q16.30")
    assert cfg.lr_eff == 1 / 8  # 2 * lr / (K * n_out)
    params = [(np.array([[0.5]]), np.array([0.25])), (np.array([[1.5]]), np.array([-0.5]))]
    wq = mf.quantize_params(params, cfg)
    xs, ys, xq = (mf.quantize_inputs(np.array([[v]]), cfg) for v in (2.0, 1.0, 1.0))
    # forward: h = 0.5*2 + 0.25 = 1.25, y_hat = 1.5*1.25 - 0.5 = 1.375
    y_hat, acts = mf.forward(wq, xs, cfg)
    assert y_hat.tolist() == [[int(1.375 * 1024)]]
    assert acts[1].tolist() == [[int(1.25 * 1024)], [1024]]  # h and the bias input 1.0
    # error 0.375 * lr_eff = 3/64; hidden delta 1.5 * 3/64 = 9/128
    # updates: W1 = 1.5 - 3/64*1.25, b1 = -0.5 - 3/64, W0 = 0.5 - 9/128*2, b0 = 0.25 - 9/128
    new = mf.inner_step(wq, xs, ys, cfg)
    want = [
        [[Fraction(1, 2) - Fraction(9, 128) * 2, Fraction(1, 4) - Fraction(9, 128)]],
        [[Fraction(3, 2) - Fraction(3, 64) * Fraction(5, 4), Fraction(-1, 2) - Fraction(3, 64)]],
    ]
    for w, wv in zip(new, want, strict=True):
        assert [[fx.to_fraction(c, cfg.master_fmt) for c in row] for row in w.tolist()] == wv
    # query x=1: h = 0.359375 + 0.1796875 = 0.5390625 (exact), y = 1.44140625*h - 0.546875
    y = mf.run_task(wq, xs, ys, xq, cfg).y_query
    exact = Fraction(144140625, 10**8) * Fraction(5390625, 10**7) - Fraction(546875, 10**6)
    assert y.tolist() == [[round(exact * 1024)]] == [[236]]


@pytest.mark.parametrize("layers", [(1, 12, 12, 1), (2, 8, 3), (1, 5, 5, 5, 1)])
@pytest.mark.parametrize("steps", [1, 3])
def test_wide_formats_track_float64(layers, steps):
    """With 24-bit operands the fixed-point model follows float64 SGD closely."""
    cfg = format_family(24, layers=layers, steps=steps, k_support=6, n_query=5, lr=0.05)
    rng = np.random.default_rng(hash(layers) % 2**32)
    params = maml.init_params(list(layers), seed=3)
    xs = rng.uniform(-2, 2, (6, layers[0]))
    ys = rng.uniform(-2, 2, (6, layers[-1]))
    xq = rng.uniform(-2, 2, (5, layers[0]))
    wq = mf.quantize_params(params, cfg)
    pq = mf.dequantize_params(wq, cfg)
    xs_q, ys_q, xq_q = (mf.quantize_inputs(a, cfg) for a in (xs, ys, xq))
    f = lambda c: fx.to_float(c, cfg.act_fmt)  # noqa: E731
    adapted = maml.adapt(pq, f(xs_q), f(ys_q), steps, cfg.lr_code / 2**cfg.lr_fmt.frac_bits
                         * cfg.k_support * cfg.n_out / 2)
    want = maml.forward(adapted, f(xq_q))
    got = f(mf.run_task(wq, xs_q, ys_q, xq_q, cfg).y_query)
    assert np.abs(got - want).max() < 2e-4


def test_stochastic_rounding_is_reproducible_and_close():
    params = maml.init_params([1, 16, 1], seed=1)
    base = dict(layers=(1, 16, 1), k_support=5, n_query=5, steps=2, lr=0.05)
    rng = np.random.default_rng(0)
    xs, ys, xq = rng.uniform(-3, 3, (5, 1)), rng.uniform(-3, 3, (5, 1)), rng.uniform(-3, 3, (5, 1))
    outs = []
    for seed in range(1, 41):
        cfg = format_family(12, "stochastic", seed=seed, **base)
        wq = mf.quantize_params(params, cfg)
        q = [mf.quantize_inputs(a, cfg) for a in (xs, ys, xq)]
        outs.append(mf.run_task(wq, *q, cfg).y_query)
    again = mf.run_task(wq, *q, cfg).y_query
    assert (again == outs[-1]).all()
    assert len({o.tobytes() for o in outs}) > 1  # the seed matters
    cfg_ne = format_family(24, **base)
    ref = fx.to_float(mf.run_task(mf.quantize_params(params, cfg_ne),
                                  *(mf.quantize_inputs(a, cfg_ne) for a in (xs, ys, xq)), cfg_ne).y_query,
                      cfg_ne.act_fmt)
    mean = np.mean([fx.to_float(o, cfg.act_fmt) for o in outs], axis=0)
    # 12-bit weights (quantised once, half to even) bias every seed alike: a few LSBs of 2**-7
    assert np.abs(mean - ref).max() < 0.1


def test_bad_inputs_are_named():
    cfg = MamlConfig(layers=(1, 4, 1), k_support=2, n_query=2, lanes=1)
    wq = mf.quantize_params(maml.init_params([1, 4, 1], seed=0), cfg)
    with pytest.raises(UserError, match=r"inputs must have shape \(n, 1\)"):
        mf.forward(wq, np.zeros((2, 3), dtype=np.int64), cfg)
    with pytest.raises(UserError, match="inputs: code 1048576 does not fit Q5.11"):
        mf.forward(wq, np.array([[1 << 20]]), cfg)
    with pytest.raises(UserError, match="steps must be >= 0"):
        mf.adapt(wq, np.zeros((2, 1), dtype=np.int64), np.zeros((2, 1), dtype=np.int64), cfg, steps=-1)
    with pytest.raises(UserError, match="layer 0"):
        mf.quantize_params([(np.zeros((3, 1)), np.zeros(3)), (np.zeros((1, 4)), np.zeros(1))], cfg)
    with pytest.raises(UserError, match="layer 1 weights: 100.0 does not fit"):
        mf.quantize_params([(np.zeros((4, 1)), np.zeros(4)), (np.full((1, 4), 100.0), np.zeros(1))], cfg,
                           overflow="error")


def test_precision_study_runs_and_more_bits_help():
    from metafab.reference.weights import load_sinusoid_init

    rows = maml_precision(load_sinusoid_init(), widths=(10, 20), roundings=("half_even",), steps=(1,),
                          n_tasks=30, seed=5)
    by = {r.width: r for r in rows}
    assert abs(by[20].ratio - 1) < 0.02
    assert abs(by[10].ratio - 1) > abs(by[20].ratio - 1)
    assert "| 20 | half_even |" in precision_markdown(rows)
