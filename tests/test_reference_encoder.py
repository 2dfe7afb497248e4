"""Few-shot encoders: float64 gradients, the bit-exact fixed-point pipeline, episodic training, shipped files."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from metafab.gen.cli import main
from metafab.reference import encoder as enc
from metafab.reference import encoder_train as et
from metafab.reference import fixed as fx
from metafab.reference import maml_fixed, match_fixed
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError

SMALL = (2, 4, 4)


def _params(spec, seed=0, bias=0.1):
    rng = np.random.default_rng(seed)
    return [(w, rng.standard_normal(b.shape) * bias) for w, b in enc.init_params(spec, seed)]


def _numeric_grads(loss, params, h=1e-6):
    out = []
    for li, pair in enumerate(params):
        grads = []
        for j, a in enumerate(pair):
            g = np.zeros_like(a)
            for idx in np.ndindex(a.shape):
                def at(delta, li=li, j=j, idx=idx, a=a):
                    p = [list(t) for t in params]
                    v = a.copy()
                    v[idx] += delta
                    p[li][j] = v
                    return loss(p)
                g[idx] = (at(h) - at(-h)) / (2 * h)
            grads.append(g)
        out.append(grads)
    return out


# --- the spec -----------------------------------------------------------------


def test_spec_string_form_layers_sizes_and_macs():
    spec = enc.EncoderSpec.parse("c8-p-c16-p-d64")
    assert [v.kind for v in spec.layers] == ["conv3x3", "relu", "maxpool2x2", "conv3x3", "relu", "maxpool2x2",
                                             "flatten", "dense"]
    assert str(spec) == "c8-p-c16-p-d64" and spec.dim == 64 and spec.shapes()[-2] == (256,)
    assert spec.augmented_shapes() == [(8, 10), (16, 73), (64, 257)] and spec.n_params == 17696
    assert [m.macs for m in spec.macs()] == [8 * 10 * 256, 16 * 73 * 64, 64 * 257]
    assert spec.total_macs == 111680
    dense = enc.EncoderSpec.parse("d128-d64")
    assert [v.kind for v in dense.layers] == ["flatten", "dense", "relu", "dense"] and dense.n_params == 41152
    assert dense.total_macs == 128 * 257 + 64 * 129
    for text in ("c4l-p-d8l-d3", "c3-c2-p-d4", "d5"):
        assert str(enc.EncoderSpec.parse(text)) == text


@pytest.mark.parametrize("text, words", [
    ("c8-x-d4", "token 'x'"),
    ("c8-p", "last layer must be a linear dense"),
    ("c3-p-p-p-p-p-d2", "even height and width"),
    ("", "must be a string"),
])
def test_bad_specs_are_one_line_errors(text, words):
    with pytest.raises(UserError, match=words) as e:
        enc.EncoderSpec.parse(text)
    assert "\n" not in str(e.value)


def test_explicit_layers_are_validated():
    L = enc.LayerSpec
    with pytest.raises(UserError, match="ReLU must follow"):
        enc.EncoderSpec((L("conv3x3", 2), L("maxpool2x2"), L("relu"), L("flatten"), L("dense", 3)))
    with pytest.raises(UserError, match="needs a flatten"):
        enc.EncoderSpec((L("dense", 3),))
    with pytest.raises(UserError, match="after the flatten"):
        enc.EncoderSpec((L("flatten"), L("dense", 4), L("conv3x3", 2), L("dense", 3)))
    with pytest.raises(UserError, match="has no size"):
        L("relu", 3)


# --- float64 forward and backward ---------------------------------------------------


@pytest.mark.parametrize("text", ["c3-p-c4-p-d5", "d7-d5", "c2l-p-d6l-d3"])
def test_gradients_match_central_differences(text):
    spec = enc.EncoderSpec.parse(text, SMALL)
    params = _params(spec)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, *SMALL))
    r = rng.standard_normal((3, spec.dim))

    def loss(p):
        return float(np.sum(enc.forward(p, spec, x) * r))

    got = enc.backward(params, spec, enc.forward_trace(params, spec, x), r)
    want = _numeric_grads(loss, params)
    for (gw, gb), (nw, nb) in zip(got, want, strict=True):
        assert np.allclose(gw, nw, atol=1e-6) and np.allclose(gb, nb, atol=1e-6)


def test_conv_is_a_matrix_product_over_padded_patches():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, *SMALL))
    spec = enc.EncoderSpec.parse("c3l-d2", SMALL)
    (w, b), dense = _params(spec)
    # direct 3x3 convolution with zero padding
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    direct = np.zeros((2, 3, 4, 4))
    for o in range(3):
        for y in range(4):
            for xx in range(4):
                direct[:, o, y, xx] = np.sum(xp[:, :, y:y + 3, xx:xx + 3] * w[o], axis=(1, 2, 3)) + b[o]
    want = direct.reshape(2, -1) @ dense[0].T + dense[1]
    assert np.allclose(enc.forward([(w, b), dense], spec, x), want)
    cols = enc.im2col(x)
    assert cols.shape == (2, 18, 16)
    assert cols[0, 0 * 9 + 0, 0] == 0.0 and cols[0, 0 * 9 + 4, 5] == x[0, 0, 1, 1]  # padding / centre tap


def test_pool_takes_window_maxima_and_routes_the_gradient_to_the_first_maximum():
    x = np.array([[[[1.0, 3, 0, 0], [2, 3, -1, -2], [5, 0, 7, 7], [0, 0, 7, 7]]]])
    spec = enc.EncoderSpec.parse("c1l-p-d1", (1, 4, 4))
    ident = [(np.pad(np.ones((1, 1, 1, 1)), ((0, 0), (0, 0), (1, 1), (1, 1))), np.zeros(1)),
             (np.array([[1.0, 10, 100, 1000]]), np.zeros(1))]
    assert enc.forward(ident, spec, x)[0, 0] == 3 + 10 * 0 + 100 * 5 + 1000 * 7
    g = enc.backward(ident, spec, enc.forward_trace(ident, spec, x), np.ones((1, 1)))
    # dL/dW of the conv = sum of the routed gradient times the input at each tap; centre tap = the maxima
    assert g[0][0][0, 0, 1, 1] == 3 * 1 + 0 * 10 + 5 * 100 + 7 * 1000


# --- fixed point ------------------------------------------------------------------


def _hand_cfg(rounding="half_even"):
    return enc.EncoderConfig(spec="c1-p-d1", input_shape=SMALL, act_fmt="Q4.2", weight_fmt="Q2.2",
                             acc_fmt="Q10.4", rounding=rounding, n_way=1, k_shot=1, readout={})


def _hand_params():
    w = np.zeros((1, 2, 3, 3))
    w[0, 0, 1, 1] = 1.0  # channel 0: the centre tap
    w[0, 1, 0, 0] = 0.5  # channel 1: the top-left tap, i.e. x1[y-1, x-1]
    dense = (np.array([[0.25, 0.0, 0.0, 0.5]]), np.array([-1.0]))
    return [(w, np.array([0.25])), dense]


X0 = [[2, -6, 0, 1], [0, 3, 1, -2], [4, 0, 5, 0], [0, -1, 0, 31]]
X1 = [[1, 0, 0, 0], [0, 3, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("rounding, z11, z22", [("half_even", 4, 8), ("truncate", 4, 7)])
def test_a_step_worked_by_hand(rounding, z11, z22):
    """Q4.2 pixels (code c = c/4), Q2.2 weights, Q10.4 accumulator (frac 2 + 2, no shift).

    z[y, x] = 1.0 * x0[y, x] + 0.5 * x1[y-1, x-1] + 0.25, in accumulator codes
    4 X0 + 2 X1[y-1, x-1] + 1 * 4 (the bias code times the constant-1 code 4), then /4 into Q4.2:
    (1,1): 12 + 2 + 4 = 18 -> 4.5 -> 4 (half-even and truncate); (2,2): 20 + 6 + 4 = 30 -> 7.5 -> 8 (even) / 7;
    (3,3): 124 + 10 + 4 = 138 -> 34.5 -> 34 -> saturates to 31; elsewhere X0 + 1 exactly ((0,1): -5).
    """
    cfg = _hand_cfg(rounding)
    wq = enc.quantize_encoder(_hand_params(), cfg)
    assert wq[0].tolist() == [[0, 0, 0, 0, 4, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
    x = np.array([[X0, X1]], dtype=np.int64)
    conv, relu, pool, flat, dense = enc.encode_fixed_layers(wq, x, cfg)
    z = np.array(X0) + 1
    z[1, 1], z[2, 2], z[3, 3] = z11, z22, 31
    assert conv[0, 0].tolist() == z.tolist() and conv[0, 0, 0, 1] == -5
    assert relu[0, 0].tolist() == np.maximum(z, 0).tolist()
    # 2x2 windows of the ReLU output: {3,0,1,z11}, {1,2,2,0}, {5,1,1,0}, {z22,1,1,31}
    assert pool[0, 0].tolist() == [[max(3, z11), 2], [5, 31]]
    # dense: 0.25 * pool[0,0] + 0.5 * pool[1,1] - 1.0 = (1 * 4 + 2 * 31 - 4 * 4) / 4 = 50 / 4 = 12.5
    assert flat.tolist() == [[4, 2, 5, 31]]
    assert dense.tolist() == [[12]]  # 12.5: to the even 12, and truncated to 12
    assert enc.encode_fixed(wq, x.reshape(1, -1), cfg).tolist() == dense.tolist()


def test_padding_edges_and_pooling_of_negative_codes_are_exact():
    cfg = enc.EncoderConfig(spec="c1l-p-d1", input_shape=(1, 4, 4), act_fmt="Q4.4", weight_fmt="Q2.6",
                            acc_fmt="Q10.10", n_way=1, readout={})
    w = np.ones((1, 1, 3, 3))  # the 3x3 box sum: corners see 4 pixels, edges 6, inside 9
    wq = enc.quantize_encoder([(w, np.zeros(1)), (np.ones((1, 4)), np.zeros(1))], cfg)
    x = -np.ones((1, 1, 4, 4), dtype=np.int64)  # -1/16 everywhere
    conv, pool, _, _ = enc.encode_fixed_layers(wq, x, cfg)
    assert conv[0, 0].tolist() == [[-4, -6, -6, -4], [-6, -9, -9, -6], [-6, -9, -9, -6], [-4, -6, -6, -4]]
    assert pool[0, 0].tolist() == [[-4, -4], [-4, -4]]  # the maximum of negative codes, not 0


def test_fast_layer_product_equals_fixed_matmul():
    cfg = enc.EncoderConfig()
    rng = np.random.default_rng(3)
    w = rng.integers(cfg.weight_fmt.min_code, cfg.weight_fmt.max_code + 1, (16, 73))
    a = rng.integers(cfg.act_fmt.min_code, cfg.act_fmt.max_code + 1, (72, 50))
    got = enc._layer(w, a, cfg)
    aug = np.vstack([a, np.full((1, 50), 1 << cfg.act_fmt.frac_bits)])
    want = fx.resize(fx.matmul(w, cfg.weight_fmt, aug, cfg.act_fmt, cfg.acc_fmt), cfg.acc_fmt, cfg.act_fmt,
                     cfg.rounding, "saturate")
    assert np.array_equal(got, want)


def _wide(spec, **kw):
    return enc.EncoderConfig(spec=spec, input_shape=SMALL, act_fmt="Q8.16", weight_fmt="Q4.20", acc_fmt="Q20.36",
                             readout={"acc_fmt": "Q24.32", "proto_fmt": "Q8.16", "unit_fmt": "Q2.14",
                                      "logit_fmt": "Q12.14"}, **kw)


@pytest.mark.parametrize("text", ["c3-p-c4-p-d5", "d7-d5"])
def test_wide_fixed_point_agrees_with_float64(text):
    cfg = _wide(text)
    params = _params(cfg.spec)
    x = np.random.default_rng(4).random((6, *SMALL))
    wq = enc.quantize_encoder(params, cfg)
    got = fx.to_float(enc.encode_fixed(wq, enc.quantize_images(x, cfg), cfg), cfg.act_fmt)
    want = enc.forward(enc.dequantize_encoder(wq, cfg), cfg.spec, x)
    assert np.max(np.abs(got - want)) < 1e-4
    assert np.max(np.abs(got - enc.forward(params, cfg.spec, x))) < 1e-4


def test_dense_layers_are_maml_fixed_forward():
    cfg = enc.EncoderConfig(spec="d8-d4", input_shape=(1, 4, 4), n_way=2, readout={})
    mcfg = MamlConfig(layers=(16, 8, 4), act_fmt=cfg.act_fmt, weight_fmt=cfg.weight_fmt, acc_fmt="Q16.30")
    params = _params(cfg.spec, bias=0.5)
    x = enc.quantize_images(np.random.default_rng(5).random((7, 16)) * 4 - 2, cfg)
    wq = enc.quantize_encoder(params, cfg)
    want, _ = maml_fixed.forward(maml_fixed.quantize_params(params, mcfg), x.reshape(7, -1), mcfg)
    assert np.array_equal(enc.encode_fixed(wq, x, cfg), want)


def _direct_codes(wq, x, cfg):
    """An independent fixed-point encoder: direct convolution sums (no im2col), fixed.matmul for dense."""
    a = x.astype(np.int64)
    one = 1 << cfg.act_fmt.frac_bits
    shift = cfg.acc_fmt.frac_bits - cfg.act_fmt.frac_bits - cfg.weight_fmt.frac_bits
    pi = 0
    for layer in cfg.spec.layers:
        if layer.kind == "conv3x3":
            n, c, h, w = a.shape
            k = wq[pi][:, :-1].reshape(-1, c, 3, 3)
            ap = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
            acc = np.zeros((n, k.shape[0], h, w), dtype=np.int64) + (wq[pi][:, -1] * one)[None, :, None, None]
            for ky in range(3):
                for kx in range(3):
                    acc += np.einsum("oc,nchw->nohw", k[:, :, ky, kx], ap[:, :, ky:ky + h, kx:kx + w])
            a = fx.resize(acc << shift, cfg.acc_fmt, cfg.act_fmt, cfg.rounding, "saturate")
            pi += 1
        elif layer.kind == "relu":
            a = np.where(a > 0, a, 0)
        elif layer.kind == "maxpool2x2":
            a = np.maximum.reduce([a[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)])
        elif layer.kind == "flatten":
            a = a.reshape(len(a), -1)
        else:
            aug = np.vstack([a.T, np.full((1, len(a)), one)])
            acc = fx.matmul(wq[pi], cfg.weight_fmt, aug, cfg.act_fmt, cfg.acc_fmt)
            a = fx.resize(acc, cfg.acc_fmt, cfg.act_fmt, cfg.rounding, "saturate").T
            pi += 1
    return a


@pytest.mark.parametrize("mode", ["proto", "matching"])
def test_fewshot_fixed_is_match_fixed_on_independently_computed_codes(mode):
    cfg = enc.EncoderConfig(spec="c4-p-c6-p-d16", mode=mode, n_way=3, k_shot=2)
    params = _params(cfg.spec, 6)
    rng = np.random.default_rng(7)
    xs, xq = enc.quantize_images(rng.random((6, 256)), cfg), enc.quantize_images(rng.random((5, 256)), cfg)
    labels = np.array([0, 0, 1, 1, 2, 2])
    wq = enc.quantize_encoder(params, cfg)
    res = enc.fewshot_fixed(wq, xs, labels, xq, cfg)
    s, q = _direct_codes(wq, xs, cfg), _direct_codes(wq, xq, cfg)
    assert np.array_equal(res.support, s) and np.array_equal(res.query, q)
    want = match_fixed.readout(q, match_fixed.prepare(s, labels, cfg.match), cfg.match)
    assert np.array_equal(res.probs, want.probs) and np.array_equal(res.pred, want.pred)
    assert cfg.match.emb_fmt == cfg.act_fmt and cfg.match.dim == 16 and cfg.match.mode == mode
    # one image at a time gives the same codes as the batch
    assert np.array_equal(np.vstack([enc.encode_fixed(wq, xq[i:i + 1], cfg) for i in range(5)]), res.query)


def test_config_round_trip_and_one_line_errors():
    cfg = enc.EncoderConfig()
    assert enc.EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["spec"] == "c8-p-c16-p-d64" and cfg.name == "fewshot-proto-5w1s-c8-p-c16-p-d64-p8x8"
    assert cfg.replace(mode="matching", k_shot=5).match.n_support == 25
    assert cfg.useful_macs(75) == 80 * 111680 + 75 * 5 * 64
    bad = [
        ({"act_fmt": "Q1.15"}, "cannot hold 1.0"),
        ({"acc_fmt": "Q30.10"}, "fraction bits"),
        ({"acc_fmt": "Q8.26"}, "can overflow in layer"),
        ({"rounding": "stochastic"}, "not 'stochastic'"),
        ({"mode": "cosine"}, "mode 'cosine'"),
        ({"spec": "c8-q"}, "token 'q'"),
        ({"readout": {"dim": 3}}, "follows from the encoder"),
        ({"readout": {"bogus": 3}}, "unknown readout field"),
        ({"weight_fmt": "UQ2.14"}, "must be signed"),
        ({"n_way": 0}, "n_way"),
        ({"colour": 1}, "unknown EncoderConfig key"),
    ]
    for change, words in bad:
        with pytest.raises(UserError, match=words) as e:
            cfg.replace(**change)
        assert "\n" not in str(e.value), change
    with pytest.raises(UserError, match="integer codes"):
        enc.encode_fixed(enc.quantize_encoder(enc.init_params(cfg.spec), cfg), np.zeros((1, 256)), cfg)
    with pytest.raises(UserError, match="does not fit"):
        enc.encode_fixed(enc.quantize_encoder(enc.init_params(cfg.spec), cfg), np.full((1, 256), 1 << 20), cfg)


# --- training ----------------------------------------------------------------------


def test_matching_loss_gradient_matches_central_differences():
    rng = np.random.default_rng(8)
    s, q = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    ls, lq = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 1, 0])
    _, ds, dq = et.matching_loss_and_grads(s, ls, q, lq, 3)
    h = 1e-6
    for arr, grad, which in ((s, ds, 0), (q, dq, 1)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            lp = et.matching_loss_and_grads(*((plus, ls, q, lq) if which == 0 else (s, ls, plus, lq)), 3)[0]
            lm = et.matching_loss_and_grads(*((minus, ls, q, lq) if which == 0 else (s, ls, minus, lq)), 3)[0]
            num[idx] = (lp - lm) / (2 * h)
        assert np.allclose(num, grad, atol=1e-7)


@pytest.mark.parametrize("loss", ["proto", "matching"])
def test_training_is_reproducible_and_seeded(loss):
    def run(seed):
        with threadpool_limits(1):
            return et.train(enc.init_params("c2-p-p-d8", 1), "c2-p-p-d8", loss=loss, n_way=5, k_shot=1, n_query=2,
                            iterations=4, seed=seed, progress_every=2, val_episodes=3)
    seen = []
    a, b, c = run(0), run(0), run(1)
    for (wa, ba), (wb, bb) in zip(a.params, b.params, strict=True):
        assert np.array_equal(wa, wb) and np.array_equal(ba, bb)
    assert np.array_equal(a.loss, b.loss) and a.iterations == 4 and len(a.history) == 2
    assert not np.array_equal(a.loss, c.loss)
    et.train(enc.init_params("c2-p-p-d8", 1), "c2-p-p-d8", loss=loss, n_way=5, iterations=2, progress_every=1,
             val_episodes=2, progress=lambda *v: seen.append(v))
    assert [v[0] for v in seen] == [1, 2] and all(0 <= v[2] <= 100 for v in seen)


def test_training_stops_at_max_seconds():
    r = et.train(enc.init_params("d8", 0), "d8", n_way=5, iterations=10**6, max_seconds=0.5, progress_every=10**6,
                 val_episodes=2)
    assert r.stopped_by_time and 0 < r.iterations < 10**6 and r.history[-1][0] == r.iterations


# --- shipped encoders and the CLI ----------------------------------------------------------


@pytest.mark.parametrize("kind, spec, n_params, documented", [("conv", "c8-p-c16-p-d64", 17696, 93.49),
                                                               ("dense", "d128-d64", 41152, 91.29)])
def test_shipped_encoders_load_with_their_spec_and_accuracy(kind, spec, n_params, documented):
    """The spec, size and validation accuracy docs/reference.md gives ("The shipped encoders")."""
    w = enc.load_glyph_encoder(kind)
    assert str(w.spec) == spec and w.spec.dim == 64 and enc.n_weights(w.params) == n_params
    meta = w.metadata
    assert round(meta["validation_accuracy"], 2) == documented
    assert meta["encoder"] == spec and meta["loss"] == "proto" and meta["seconds"] <= 15 * 60
    assert meta["command"].startswith(f"metafab train glyph-encoder --encoder {spec} ")
    with threadpool_limits(1):
        acc, _ = et.evaluate(w.params, w.spec, et.validation_episodes(meta["shots"], 200, 7), meta["loss"])
    assert acc == pytest.approx(meta["validation_accuracy"], abs=1e-9)
    with pytest.raises(UserError, match="one of conv, dense"):
        enc.load_glyph_encoder("rnn")


def test_cli_trains_a_glyph_encoder(tmp_path, capsys):
    out = tmp_path / "e.npz"
    argv = ["train", "glyph-encoder", "--encoder", "c2-p-p-d8", "--ways", "5", "--iterations", "3",
            "--validate-every", "3", "-o", str(out)]
    assert main(argv) == 0
    w = enc.load_encoder(out)
    assert str(w.spec) == "c2-p-p-d8" and w.metadata["iterations_run"] == 3
    assert w.metadata["command"] == ("metafab train glyph-encoder --encoder c2-p-p-d8 --loss proto --ways 5 --shots 1 "
                                     "--queries 5 --iterations 3 --lr 0.001 --max-minutes 15.0 --seed 0 "
                                     "--validate-every 3")
    assert "wrote" in capsys.readouterr().err
    assert main(["train", "glyph-encoder", "--encoder", "c8-z", "-o", str(out)]) == 2
    assert "token 'z'" in capsys.readouterr().err


def test_study_glyphs_encoder_prints_every_row(capsys):
    assert main(["study", "glyphs-encoder", "--episodes", "2", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "glyphs-encoder" and doc["settings"]["episodes"] == 2 and len(doc["rows"]) == 12
    assert doc["settings"]["fixed_point"]["conv"]["act_fmt"] == "Q4.12"
    for r in doc["rows"]:
        assert (r["fixed"] is None) == (r["features"] == "raw pixels")
