"""The bit-exact fixed-point similarity read-out (reference/match_fixed.py) and MatchConfig."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from metafab.reference import fixed as fx
from metafab.reference import match_fixed as mx
from metafab.reference import matching, proto
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Rounding

CFG = MatchConfig(n_way=3, k_shot=2, dim=8, lanes=4)
WIDE = CFG.replace(emb_fmt="Q4.16", unit_fmt="Q2.16", proto_fmt="Q4.16", acc_fmt="Q16.32", logit_fmt="Q10.20",
                   mant_bits=20, exp_table_bits=16, prob_fmt="UQ1.20")


def _episode(cfg, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, scale, (cfg.n_way, cfg.dim))
    labels = np.repeat(np.arange(cfg.n_way), cfg.k_shot)
    support = centres[labels] + rng.normal(0, 0.5 * scale, (cfg.n_support, cfg.dim))
    queries = centres[rng.integers(0, cfg.n_way, 12)] + rng.normal(0, 0.5 * scale, (12, cfg.dim))
    return support, labels, queries


def test_round_shift_var_matches_constant_shifts_and_fractions():
    rng = np.random.default_rng(1)
    v = rng.integers(-(1 << 40), 1 << 40, 500)
    s = rng.integers(0, 45, 500)
    for rounding in (Rounding.TRUNCATE, Rounding.HALF_EVEN):
        got = mx.round_shift_var(v, s, rounding)
        for k in range(0, 45, 7):
            sel = s == k
            assert got[sel].tolist() == fx.round_shift(v[sel], k, rounding).tolist()
    for val, k in [(5, 1), (7, 1), (-5, 1), (-7, 1), (6, 2), (-6, 2), (10, 2), (3, 0)]:
        want = round(Fraction(val, 1 << k))  # Python rounds half to even
        assert int(mx.round_shift_var(np.array([val]), np.array([k]), Rounding.HALF_EVEN)[0]) == want


def test_bit_length_edges():
    xs = [0, 1, 2, 3, 4, 7, 8, (1 << 52) - 1, 1 << 52, (1 << 53) + 1, (1 << 62) - 1, 1 << 62]
    assert mx.bit_length(np.array(xs, dtype=np.int64)).tolist() == [x.bit_length() for x in xs]


def test_tables_are_exact():
    H = CFG.mant_bits
    rt = mx.recip_table(CFG)
    B = CFG.recip_table_bits
    for i, idx in enumerate(range(1 << (B - 1), 1 << B)):
        exact = Fraction(1 << (H + B), 2 * idx + 1)
        assert abs(Fraction(int(rt[i])) - exact) <= Fraction(1, 2)
    st = mx.rsqrt_table(CFG)
    B = CFG.rsqrt_table_bits
    for i, idx in enumerate(range(1 << (B - 2), 1 << B)):
        exact = (2 ** (2 * H + B - 1) / (2 * idx + 1)) ** 0.5
        assert abs(int(st[i]) - exact) <= 0.5 + 1e-9
    c = mx.count_constants(CFG)
    assert c[1] == 1 << H and c[2] == 1 << (H - 1) and c[4] == 1 << (H - 2) and c[0] == 0
    e = mx.exp_table(CFG)
    assert e[0] == 1 << CFG.exp_fmt.frac_bits and np.all(np.diff(e) <= 0) and e[-1] > 0


def test_exp_lookup_boundaries():
    cfg = CFG
    one = 1 << cfg.logit_fmt.frac_bits
    span = cfg.exp_span * one
    step = 1 << (cfg.logit_fmt.frac_bits - cfg.exp_shift_bits)
    e = mx.exp_lookup(np.array([0, 5, -span + step, -span - (one >> 3), -10 * span]), cfg)
    assert e[0] == e[1] == 1 << cfg.exp_fmt.frac_bits  # z > 0 reads entry 0
    assert e[2] > 0 and e[3] == 0 and e[4] == 0


def test_wide_formats_approach_float64():
    """With wide formats the fixed-point probabilities are the float64 ones to within 1e-4."""
    for mode in ("matching", "proto"):
        cfg = WIDE.replace(mode=mode)
        s, y, q = _episode(cfg, seed=3)
        r = mx.readout(mx.quantize(q, cfg), mx.prepare(mx.quantize(s, cfg), y, cfg), cfg)
        if mode == "matching":
            pf, pred = matching.readout(q, s, y, cfg.n_way)
        else:
            pf, pred = proto.readout(q, proto.prototypes(s, y, cfg.n_way))
        got = fx.to_float(r.probs, cfg.prob_fmt)
        assert np.max(np.abs(got - pf)) < 1e-4, mode
        assert r.pred.tolist() == pred.tolist()


def test_proto_logits_are_minus_squared_distance_up_to_a_constant():
    cfg = WIDE.replace(mode="proto")
    s, y, q = _episode(cfg, seed=4)
    sq, qq = mx.quantize(s, cfg), mx.quantize(q, cfg)
    prep = mx.prepare(sq, y, cfg)
    r = mx.readout(qq, prep, cfg)
    p = fx.to_float(prep.vectors, cfg.proto_fmt)
    qf = fx.to_float(qq, cfg.emb_fmt)
    d2 = ((qf[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    z = fx.to_float(r.z, cfg.logit_fmt)
    assert np.allclose(z, -(d2 - d2.min(axis=1, keepdims=True)), atol=1e-5)


def test_ties_go_to_the_lowest_class():
    cfg = CFG
    s, y, _ = _episode(cfg, seed=5)
    s[y == 2] = s[y == 0]  # classes 0 and 2 have the same rows
    sq = mx.quantize(s, cfg)
    for mode in ("matching", "proto"):
        c = cfg.replace(mode=mode)
        prep = mx.prepare(sq, y, c)
        r = mx.readout(sq[y == 2], prep, c)  # queries equal to those rows
        tie = r.sums[:, 0] == r.sums[:, 2]
        assert tie.all()
        assert set(r.pred.tolist()) <= {0, 1}
        assert np.all(r.pred[r.sums[:, 0] >= r.sums[:, 1]] == 0)


def test_zero_vectors_have_cosine_zero():
    cfg = CFG
    s, y, q = _episode(cfg, seed=6)
    sq = mx.quantize(s, cfg)
    sq[0] = 0
    prep = mx.prepare(sq, y, cfg)
    assert (prep.vectors[0] == 0).all() and prep.scale_y[0] == 0
    r = mx.readout(np.zeros((1, cfg.dim), dtype=np.int64), prep, cfg)
    assert (r.logits == 0).all()
    # a zero query: every cosine 0, uniform attention, class probabilities by row count
    assert np.allclose(fx.to_float(r.probs[0], cfg.prob_fmt), 1 / 3, atol=2e-4)


def test_saturating_codes_stay_in_range():
    cfg = CFG.replace(mode="proto", logit_fmt="Q6.14")
    ef = cfg.emb_fmt
    y = np.repeat(np.arange(cfg.n_way), cfg.k_shot)
    s = np.where((y == 1)[:, None], ef.min_code, ef.max_code) * np.ones((1, cfg.dim), dtype=np.int64)
    prep = mx.prepare(s, y, cfg)
    assert cfg.proto_fmt.contains(prep.vectors).all()
    r = mx.readout(s, prep, cfg)
    assert np.isin(r.logits, [cfg.logit_fmt.min_code, cfg.logit_fmt.max_code]).any()
    assert cfg.prob_fmt.contains(r.probs).all()


@pytest.mark.parametrize(
    "change, fragment",
    [
        (("labels", [0, 0, 1, 1, 3, 2]), "support label 3 is outside 0..2"),
        (("labels", [0, 0, 1, 1, 1, 1]), "classes [2] have none"),
        (("code", 1 << 20), "does not fit Q4.12"),
        (("shape", None), "support must have shape (6, 8)"),
    ],
)
def test_prepare_rejects_bad_support_sets(change, fragment):
    s, y, _ = _episode(CFG)
    sq, y = mx.quantize(s, CFG), np.asarray(y)
    kind, value = change
    if kind == "labels":
        y = np.array(value)
    elif kind == "code":
        sq[0, 0] = value
    else:
        sq = sq[:4]
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        mx.prepare(sq, y, CFG)


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"unit_fmt": "Q1.15"}, "cannot hold 1.0"),
        ({"exp_fmt": "UQ0.18"}, "exp_fmt must be unsigned and hold 1.0"),
        ({"logit_fmt": "Q10.4"}, "exp table step"),
        ({"prob_fmt": "UQ1.20"}, "prob_fmt has 20 fraction bits; at most 17"),
        ({"recip_method": "cordic"}, "recip_method 'cordic' is not one of: table, newton"),
        ({"emb_fmt": "UQ4.12"}, "emb_fmt must be signed"),
        ({"acc_fmt": "Q20.20"}, "acc_fmt Q20.20 has 20 fraction bits; the products need 26"),
        ({"n_way": 65}, "n_way must be in 1..64"),
        ({"emb_fmt": "Q4.20", "unit_fmt": "Q2.22", "mant_bits": 24, "acc_fmt": "Q16.44", "prob_fmt": "UQ1.22"},
         "cosine scaling a 78-bit product for dim 64"),
    ],
)
def test_config_validation(fields, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        MatchConfig(**fields)


def test_config_round_trip_and_derived_sizes():
    cfg = MatchConfig(mode="proto", n_way=4, k_shot=3, dim=20, lanes=8)
    assert MatchConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.n_support, cfg.n_vectors, cfg.chunks, cfg.exp_span) == (12, 4, 3, 8)
    assert cfg.replace(mode="matching").exp_span == 2 and cfg.replace(mode="matching").n_vectors == 12
    assert cfg.load_words == 12 * 21 and cfg.result_words == 5
