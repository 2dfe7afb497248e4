"""metafab.gen.model_import: ONNX, safetensors and npz MLPs to float64 params, and their quantisation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import safetensors.numpy as stnp
from onnx import TensorProto, helper, numpy_helper

from metafab.gen import model_import as mi
from metafab.reference import fixed as fx
from metafab.reference import maml_fixed, weights
from metafab.reference.config import MamlClsConfig, MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import QFormat

LAYERS = (3, 5, 4, 2)


def _arrays(layers=LAYERS, seed=0, scale=0.5):
    """Independent (W (out,in), b (out,)) float32 arrays: what every file below is built from."""
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((o, i)) * scale).astype(np.float32),
             (rng.standard_normal(o) * 0.1).astype(np.float32))
            for i, o in zip(layers[:-1], layers[1:], strict=True)]


def _np_forward(arrays, x):
    """relu MLP forward of the original arrays, written out independently of the module."""
    a = x
    for i, (w, b) in enumerate(arrays):
        a = a @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
        if i < len(arrays) - 1:
            a = np.maximum(a, 0.0)
    return a


def _params_forward(params, x):
    a = x
    for i, (w, b) in enumerate(params):
        a = a @ w.T + b
        if i < len(params) - 1:
            a = np.maximum(a, 0.0)
    return a


def _assert_params(model, arrays):
    assert len(model.params) == len(arrays)
    for (w, b), (w0, b0) in zip(model.params, arrays, strict=True):
        assert w.dtype == np.float64 and b.dtype == np.float64
        np.testing.assert_array_equal(w, np.asarray(w0, np.float64))
        np.testing.assert_array_equal(b, np.asarray(b0, np.float64))


# --- ONNX builders -------------------------------------------------------------------------------------------


def _onnx(path, nodes, inits, *, in_shape=("N", 3), out_shape=("N", 2), check=True, extra_inputs=()):
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape)), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _gemm_chain(arrays, *, trans_b=1, last="y", first_in="x"):
    """Gemm, Relu, Gemm, ..., Gemm nodes and their initializers (weights (out,in) with transB=1, else (in,out))."""
    nodes, inits = [], []
    cur = first_in
    for i, (w, b) in enumerate(arrays):
        inits += [numpy_helper.from_array(w if trans_b else np.ascontiguousarray(w.T), f"W{i}"),
                  numpy_helper.from_array(b, f"B{i}")]
        out = last if i == len(arrays) - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [out], name=f"gemm{i}", transB=trans_b))
        cur = out
        if i < len(arrays) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    return nodes, inits


def _raises(fn, *parts):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# --- ONNX: what is read ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b", [1, 0])
def test_onnx_gemm(tmp_path, trans_b):
    arrays = _arrays()
    path = _onnx(tmp_path / "m.onnx", *_gemm_chain(arrays, trans_b=trans_b))
    model = mi.read_model(path)
    _assert_params(model, arrays)
    assert model.layers == LAYERS and model.softmax is False
    assert model.names == (("W0", "B0"), ("W1", "B1"), ("W2", "B2"))
    assert model.source == "ONNX m.onnx (3 Gemm, 2 Relu)"
    x = np.random.default_rng(1).uniform(-2, 2, (20, 3))
    np.testing.assert_allclose(_params_forward(model.params, x), _np_forward(arrays, x), rtol=1e-12, atol=1e-12)


def test_onnx_matmul_add_and_matmul_without_bias(tmp_path):
    arrays = _arrays()
    nodes = [
        helper.make_node("MatMul", ["x", "M0"], ["m0"], name="mm0"),
        helper.make_node("Add", ["m0", "B0"], ["a0"], name="add0"),
        helper.make_node("Relu", ["a0"], ["r0"], name="relu0"),
        helper.make_node("MatMul", ["r0", "M1"], ["m1"], name="mm1"),  # no bias
        helper.make_node("Relu", ["m1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "M2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["B2", "m2"], ["y"], name="add2"),  # the bias as the first operand
    ]
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), f"M{i}") for i, (w, _) in enumerate(arrays)]
    inits += [numpy_helper.from_array(arrays[0][1], "B0"), numpy_helper.from_array(arrays[2][1], "B2")]
    model = mi.read_model(_onnx(tmp_path / "mm.onnx", nodes, inits))
    expect = [arrays[0], (arrays[1][0], np.zeros(4)), arrays[2]]
    _assert_params(model, expect)
    assert model.layers == LAYERS
    assert model.names == (("M0", "B0"), ("M1", ""), ("M2", "B2"))
    assert "layer 1 has no bias: zeros" in model.notes
    x = np.random.default_rng(2).normal(size=(16, 3))
    np.testing.assert_allclose(_params_forward(model.params, x), _np_forward(expect, x), rtol=1e-12, atol=1e-12)


def test_onnx_flatten_softmax_dropout_identity(tmp_path):
    arrays = _arrays((6, 5, 3))
    gemm, inits = _gemm_chain(arrays, last="logits", first_in="d")
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1),
        helper.make_node("Identity", ["f"], ["d"], name="ident"),
        gemm[0],
        helper.make_node("Dropout", ["h0"], ["h0d"], name="drop"),
        helper.make_node("Relu", ["h0d"], ["r0"], name="relu0"),
        gemm[2],
        helper.make_node("Softmax", ["logits"], ["y"], name="soft", axis=-1),
    ]
    path = _onnx(tmp_path / "cls.onnx", nodes, inits, in_shape=("N", 2, 3), out_shape=("N", 3))
    model = mi.read_model(path)
    _assert_params(model, arrays)
    assert model.layers == (6, 5, 3) and model.softmax is True
    assert any("'flat'" in n for n in model.notes)

    # onnx's own evaluator: its softmax of the graph == softmax of the relu MLP of the imported params
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(3).normal(size=(10, 2, 3)).astype(np.float32)
    (got,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x})
    z = _params_forward(model.params, x.reshape(10, 6).astype(np.float64))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, p / p.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_onnx_reshape_at_the_input(tmp_path):
    arrays = _arrays((6, 4, 2))
    gemm, inits = _gemm_chain(arrays, first_in="flat")
    shape = numpy_helper.from_array(np.array([-1, 6], np.int64), "shape")  # an integer initializer, not a weight
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="reshape"), *gemm]
    model = mi.read_model(_onnx(tmp_path / "r.onnx", nodes, [shape, *inits], in_shape=("N", 3, 2)))
    _assert_params(model, arrays)
    assert model.layers == (6, 4, 2) and model.source == "ONNX r.onnx (1 Reshape, 2 Gemm, 1 Relu)"


def test_onnx_reference_evaluator_regression(tmp_path):
    from onnx.reference import ReferenceEvaluator

    arrays = _arrays()
    path = _onnx(tmp_path / "m.onnx", *_gemm_chain(arrays, trans_b=0))
    model = mi.read_model(path)
    x = np.random.default_rng(4).uniform(-3, 3, (32, 3)).astype(np.float32)
    (got,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x})
    np.testing.assert_allclose(got, _params_forward(model.params, x.astype(np.float64)), rtol=1e-5, atol=1e-6)


# --- ONNX: what is refused -------------------------------------------------------------------------------------


def test_onnx_unsupported_op(tmp_path):
    arrays = _arrays((3, 5, 2))
    nodes, inits = _gemm_chain(arrays)
    nodes[1] = helper.make_node("Sigmoid", ["h0"], ["r0"], name="act0")
    path = _onnx(tmp_path / "s.onnx", nodes, inits)
    _raises(lambda: mi.read_model(path), "'act0'", "Sigmoid", "not supported", "supported: Gemm")


def test_onnx_conv_is_an_encoder_operator(tmp_path):
    conv_w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "K")
    nodes = [helper.make_node("Conv", ["x", "K"], ["c"], name="conv1"),
             helper.make_node("Flatten", ["c"], ["y"], name="flat")]
    path = _onnx(tmp_path / "c.onnx", nodes, [conv_w], in_shape=("N", 1, 5, 5), out_shape=("N", 18), check=False)
    _raises(lambda: mi.read_model(path), "node 'conv1' (Conv): convolution and pooling are encoder operators",
            "maml, maml-cls", "dense layers only")


def test_onnx_relu_after_last_layer(tmp_path):
    arrays = _arrays((3, 5, 2))
    nodes, inits = _gemm_chain(arrays, last="z")
    nodes.append(helper.make_node("Relu", ["z"], ["y"], name="relu_out"))
    path = _onnx(tmp_path / "r.onnx", nodes, inits)
    _raises(lambda: mi.read_model(path), "'relu_out'", "last linear layer", "'gemm1'", "linear")


def test_onnx_two_linear_layers_without_relu(tmp_path):
    arrays = _arrays((3, 5, 2))
    nodes, inits = _gemm_chain(arrays)
    del nodes[1]
    nodes[1] = helper.make_node("Gemm", ["h0", "W1", "B1"], ["y"], name="gemm1", transB=1)
    path = _onnx(tmp_path / "n.onnx", nodes, inits)
    _raises(lambda: mi.read_model(path), "'gemm1'", "'gemm0'", "no Relu", "exactly one Relu")


def test_onnx_layer_shape_mismatch(tmp_path):
    arrays = _arrays((3, 5, 2))
    arrays[1] = (np.ones((2, 6), np.float32), arrays[1][1])
    path = _onnx(tmp_path / "x.onnx", *_gemm_chain(arrays), check=False)
    _raises(lambda: mi.read_model(path), "'W1'", "(2, 6)", "'W0'", "(5, 3)", "chain")


def test_onnx_input_width_mismatch(tmp_path):
    arrays = _arrays((3, 5, 2))
    path = _onnx(tmp_path / "w.onnx", *_gemm_chain(arrays), in_shape=("N", 4), check=False)
    _raises(lambda: mi.read_model(path), "graph input 'x'", "4 features", "'W0'", "(5, 3)")


def test_onnx_weight_from_graph_input_and_misplaced_nodes(tmp_path):
    arrays = _arrays((3, 5, 2))
    nodes, inits = _gemm_chain(arrays)
    inits = [t for t in inits if t.name != "W1"]
    extra = [helper.make_tensor_value_info("W1", TensorProto.FLOAT, [2, 5])]
    path = _onnx(tmp_path / "gi.onnx", nodes, inits, extra_inputs=extra, check=False)
    _raises(lambda: mi.read_model(path), "'gemm1' (Gemm)", "weight 'W1' comes from a graph input", "initializer")

    nodes, inits = _gemm_chain(arrays, last="z")
    nodes.insert(2, helper.make_node("Flatten", ["r0"], ["fl"], name="late_flat"))
    nodes[3] = helper.make_node("Gemm", ["fl", "W1", "B1"], ["y"], name="gemm1", transB=1)
    path = _onnx(tmp_path / "lf.onnx", nodes, inits, check=False)
    _raises(lambda: mi.read_model(path), "'late_flat' (Flatten)", "after the first linear layer")

    nodes, inits = _gemm_chain(arrays, last="z")
    nodes[0] = helper.make_node("Gemm", ["x", "W0", "B0"], ["h0"], name="gemm0", transB=1, alpha=2.0)
    path = _onnx(tmp_path / "al.onnx", nodes + [helper.make_node("Identity", ["z"], ["y"])], inits, check=False)
    _raises(lambda: mi.read_model(path), "'gemm0' (Gemm)", "alpha=2.0")


def test_onnx_softmax_must_be_last(tmp_path):
    arrays = _arrays((3, 5, 2))
    nodes, inits = _gemm_chain(arrays, last="z")
    nodes.insert(1, helper.make_node("Softmax", ["h0"], ["s0"], name="early_soft"))
    nodes[2] = helper.make_node("Relu", ["s0"], ["r0"], name="relu0")
    nodes.append(helper.make_node("Identity", ["z"], ["y"], name="id"))
    path = _onnx(tmp_path / "sm.onnx", nodes, inits, check=False)
    _raises(lambda: mi.read_model(path), "'early_soft' (Softmax)", "last node")


def test_onnx_nan_and_integer_weights(tmp_path):
    arrays = _arrays((3, 5, 2))
    w0 = arrays[0][0].copy()
    w0[0, 0] = np.nan
    w0[1, 2] = np.inf
    arrays[0] = (w0, arrays[0][1])
    path = _onnx(tmp_path / "nan.onnx", *_gemm_chain(arrays), check=False)
    _raises(lambda: mi.read_model(path), "'W0'", "2 NaN or infinite")

    arrays = _arrays((3, 5, 2))
    arrays[1] = (np.ones((2, 5), np.int32), arrays[1][1])
    path = _onnx(tmp_path / "int.onnx", *_gemm_chain(arrays), check=False)
    _raises(lambda: mi.read_model(path), "'W1'", "integer dtype int32", "floating point")


# --- safetensors -----------------------------------------------------------------------------------------------


def _seq(arrays, indices, prefix=""):
    out = {}
    for idx, (w, b) in zip(indices, arrays, strict=True):
        out[f"{prefix}{idx}.weight"] = w
        out[f"{prefix}{idx}.bias"] = b
    return out


def test_safetensors_sequential_names(tmp_path):
    arrays = _arrays()
    stnp.save_file(_seq(arrays, (0, 2, 4)), str(tmp_path / "w.safetensors"))
    model = mi.read_model(tmp_path / "w.safetensors")
    _assert_params(model, arrays)
    assert model.layers == LAYERS and model.softmax is False
    assert model.names == (("0.weight", "0.bias"), ("2.weight", "2.bias"), ("4.weight", "4.bias"))
    assert model.source == "safetensors w.safetensors (nn.Sequential names)"
    x = np.random.default_rng(5).normal(size=(8, 3))
    np.testing.assert_allclose(_params_forward(model.params, x), _np_forward(arrays, x), rtol=1e-12, atol=1e-12)


def test_safetensors_numeric_order_and_prefix(tmp_path):
    arrays = _arrays((3, 5, 2))  # indices 2 and 10: as strings, "10" would sort before "2"
    stnp.save_file(_seq(arrays, (2, 10), prefix="net."), str(tmp_path / "p.safetensors"))
    model = mi.read_model(tmp_path / "p.safetensors")
    _assert_params(model, arrays)
    assert model.layers == (3, 5, 2)
    assert model.names == (("net.2.weight", "net.2.bias"), ("net.10.weight", "net.10.bias"))


def test_safetensors_missing_bias_and_float16(tmp_path):
    arrays = _arrays()
    tensors = _seq(arrays, (0, 2, 4))
    del tensors["2.bias"]
    tensors["4.weight"] = tensors["4.weight"].astype(np.float16)
    stnp.save_file(tensors, str(tmp_path / "nb.safetensors"))
    model = mi.read_model(tmp_path / "nb.safetensors")
    expect = [arrays[0], (arrays[1][0], np.zeros(4)), (arrays[2][0].astype(np.float16), arrays[2][1])]
    _assert_params(model, expect)
    assert "layer 1 has no bias: zeros" in model.notes
    assert model.names[1] == ("2.weight", "")


def test_safetensors_tensor_map(tmp_path):
    arrays = _arrays((3, 5, 2))
    stnp.save_file({"fc1.weight": arrays[0][0], "fc1.bias": arrays[0][1], "fc2.weight": arrays[1][0],
                    "other": np.zeros(3, np.float32)}, str(tmp_path / "m.safetensors"))
    path = tmp_path / "m.safetensors"
    _raises(lambda: mi.read_model(path), "'fc1.bias'", "tensor map")  # the names fit no convention
    model = mi.read_model(path, tensor_map="W0=fc1.weight, b0=fc1.bias, W1=fc2.weight")
    _assert_params(model, [arrays[0], (arrays[1][0], np.zeros(2))])
    assert model.names == (("fc1.weight", "fc1.bias"), ("fc2.weight", ""))
    assert "layer 1 has no bias: zeros" in model.notes
    assert "tensor map" in model.source
    _raises(lambda: mi.read_model(path, tensor_map="W0=fc1.weight,W1=fc3.weight"), "'fc3.weight'", "'fc1.bias'")
    _raises(lambda: mi.read_model(path, tensor_map="W0=fc1.weight,W2=fc2.weight"), "W1")
    _raises(lambda: mi.read_model(path, tensor_map="X0=fc1.weight"), "'X0=fc1.weight'")


def test_safetensors_wrong_names_nan_integer(tmp_path):
    a = _arrays((3, 5, 2))
    names = {"encoder.fc.weight": a[0][0], "encoder.fc.bias": a[0][1], "head.w": a[1][0]}
    stnp.save_file(names, str(tmp_path / "n.safetensors"))
    _raises(lambda: mi.read_model(tmp_path / "n.safetensors"), "'encoder.fc.bias'", "'head.w'", "tensor map")

    w = a[0][0].copy()
    w[2, 1] = np.nan
    stnp.save_file(_seq([(w, a[0][1]), a[1]], (0, 2)), str(tmp_path / "nan.safetensors"))
    _raises(lambda: mi.read_model(tmp_path / "nan.safetensors"), "'0.weight'", "1 NaN or infinite")

    stnp.save_file(_seq([(np.ones((5, 3), np.int64), a[0][1]), a[1]], (0, 2)), str(tmp_path / "i.safetensors"))
    _raises(lambda: mi.read_model(tmp_path / "i.safetensors"), "'0.weight'", "integer dtype int64")

    stnp.save_file(_seq([a[0], (a[1][0], np.ones(3, np.float32))], (0, 2)), str(tmp_path / "b.safetensors"))
    _raises(lambda: mi.read_model(tmp_path / "b.safetensors"), "'2.bias'", "(3,)", "(2,)")


# --- npz -------------------------------------------------------------------------------------------------------


def test_npz_plain_and_map(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "p.npz", **{f"{k}{i}": v for i, (w, b) in enumerate(arrays) for k, v in (("W", w), ("b", b))})
    model = mi.read_model(tmp_path / "p.npz")
    _assert_params(model, arrays)
    assert model.layers == LAYERS and model.names[0] == ("W0", "b0")
    np.savez(tmp_path / "k.npz", first=arrays[0][0], second=arrays[1][0], third=arrays[2][0])
    model = mi.read_model(tmp_path / "k.npz", tensor_map="W0=first,W1=second,W2=third")
    _assert_params(model, [(w, np.zeros(w.shape[0])) for w, _ in arrays])
    w = np.array(arrays[0][0])
    w[0] = np.inf
    np.savez(tmp_path / "inf.npz", W0=w, b0=arrays[0][1])
    _raises(lambda: mi.read_model(tmp_path / "inf.npz"), "'W0'", "3 NaN or infinite")
    np.savez(tmp_path / "d.npz", W0=np.ones((2, 3, 1)), b0=np.ones(2))
    _raises(lambda: mi.read_model(tmp_path / "d.npz"), "'W0'", "(2, 3, 1)", "2-D")


def test_npz_metafab_file_and_write_imported(tmp_path):
    arrays = _arrays()
    params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in arrays]
    weights.save(tmp_path / "own.npz", params, {"kind": "sinusoid-init", "layers": list(LAYERS)})
    model = mi.read_model(tmp_path / "own.npz")
    _assert_params(model, arrays)
    assert model.layers == LAYERS and model.softmax is False
    assert model.source.startswith("metafab weights own.npz")

    # an ONNX classifier written as a metafab file and read back keeps its params, softmax flag and source
    nodes, inits = _gemm_chain(arrays, last="z")
    nodes.append(helper.make_node("Softmax", ["z"], ["y"], name="soft"))
    imported = mi.read_model(_onnx(tmp_path / "c.onnx", nodes, inits))
    out = mi.write_imported(imported, tmp_path / "sub" / "c.npz")
    assert out == tmp_path / "sub" / "c.npz"
    meta = weights.load(out).metadata
    assert meta["imported_from"] == imported.source and meta["softmax"] is True
    assert meta["layers"] == list(LAYERS) and meta["names"] == [list(p) for p in imported.names]
    back = mi.read_model(out)
    _assert_params(back, arrays)
    assert back.softmax is True and imported.source in back.source


# --- unreadable files ------------------------------------------------------------------------------------------


def test_truncated_files(tmp_path):
    arrays = _arrays((8, 16, 4))
    good = {
        "onnx": _onnx(tmp_path / "m.onnx", *_gemm_chain(arrays), in_shape=("N", 8), out_shape=("N", 4)),
        "safetensors": tmp_path / "m.safetensors",
        "npz": tmp_path / "m.npz",
    }
    stnp.save_file(_seq(arrays, (0, 2)), str(good["safetensors"]))
    np.savez(good["npz"], W0=arrays[0][0], b0=arrays[0][1], W1=arrays[1][0], b1=arrays[1][1])
    for fmt, path in good.items():
        mi.read_model(path)  # whole, it reads
        data = path.read_bytes()
        cut = tmp_path / f"cut.{fmt}"
        cut.write_bytes(data[: len(data) // 2])
        _raises(lambda cut=cut: mi.read_model(cut), f"cannot read {fmt} file {str(cut)!r}: ")
        empty = tmp_path / f"empty.{fmt}"
        empty.write_bytes(b"")
        _raises(lambda empty=empty: mi.read_model(empty), f"cannot read {fmt} file")


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    _raises(lambda: mi.read_model(tmp_path / "model.pt"), "model.pt", "'.pt'", ".onnx", ".safetensors", ".npz")
    _raises(lambda: mi.read_model(tmp_path / "nothing.onnx"), "nothing.onnx", "does not exist")
    assert mi.FORMATS == ("onnx", "safetensors", "npz")


# --- quantisation ----------------------------------------------------------------------------------------------


def _npz_model(tmp_path, arrays, name="q.npz"):
    np.savez(tmp_path / name, **{f"{k}{i}": v for i, (w, b) in enumerate(arrays) for k, v in (("W", w), ("b", b))})
    return mi.read_model(tmp_path / name)


def test_quantisation_report_saturation_and_to_zero(tmp_path):
    w0 = np.full((3, 2), 0.25)
    w0[0, 0] = 100.0   # beyond the default Q4.12's +-8
    w0[1, 1] = 1e-9    # below half an lsb (2**-13)
    model = _npz_model(tmp_path, [(w0, np.zeros(3)), (np.full((1, 3), 0.5), np.zeros(1))])
    cfg = MamlConfig(layers=(2, 3, 1))
    rep = mi.quantisation_report(model, cfg, samples=32)
    assert rep["total"]["saturated"] == 1 and rep["layers"][0]["saturated"] == 1
    assert rep["total"]["saturated_weight_fmt"] == 1
    assert rep["total"]["to_zero"] == 1 and rep["layers"][0]["to_zero"] == 1
    assert rep["layers"][0]["count"] == 9 and rep["total"]["count"] == 13
    assert rep["layers"][0]["max_abs_error"] == pytest.approx(100.0 - cfg.master_fmt.max_value)
    assert rep["formats"] == {"master_fmt": "Q4.12", "weight_fmt": "Q4.12", "act_fmt": "Q5.11"}
    _raises(lambda: mi.quantisation_report(model, MamlConfig(layers=(2, 4, 1))), "2-4-1", "2-3-1")


def test_quantisation_report_agreement(tmp_path):
    arrays = _arrays((3, 8, 2), seed=7, scale=0.3)
    model = _npz_model(tmp_path, arrays)
    cfg = MamlConfig(layers=(3, 8, 2))
    rep = mi.quantisation_report(model, cfg, samples=64, seed=5)
    # the same batch and the fixed-point forward, computed here
    x = np.random.default_rng(5).uniform(-4.0, 4.0, (64, 3))
    y = _np_forward(arrays, x)
    wq = maml_fixed.quantize_params(model.params, cfg)
    codes, _ = maml_fixed.forward(wq, maml_fixed.quantize_inputs(x, cfg), cfg)
    err = fx.to_float(codes, cfg.act_fmt) - y
    ag = rep["agreement"]
    assert ag["max_abs_error"] == pytest.approx(float(np.max(np.abs(err))), rel=1e-12)
    assert ag["rms_error"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-12)
    assert ag["max_abs_error"] < 0.02  # a few lsb of Q5.11 / Q4.12 through two layers
    assert ag["output_range"] == pytest.approx([y.min(), y.max()], rel=1e-12)
    assert ag["saturated_outputs"] == 0 and "argmax_agreement" not in ag
    assert rep["total"]["saturated"] == 0


def test_quantisation_report_softmax_argmax(tmp_path):
    arrays = _arrays((4, 6, 3), seed=11, scale=1.0)
    nodes, inits = _gemm_chain(arrays, last="z")
    nodes.append(helper.make_node("Softmax", ["z"], ["y"], name="soft"))
    model = mi.read_model(_onnx(tmp_path / "c.onnx", nodes, inits, in_shape=("N", 4), out_shape=("N", 3)))
    cfg = MamlClsConfig(layers=(4, 6, 3))
    rep = mi.quantisation_report(model, cfg, samples=100, seed=2)
    lim = min(cfg.act_fmt.max_value, 4.0)
    x = np.random.default_rng(2).uniform(-lim, lim, (100, 4))
    wq = maml_fixed.quantize_params(model.params, cfg)
    codes, _ = maml_fixed.forward(wq, maml_fixed.quantize_inputs(x, cfg), cfg)
    own = float(np.mean(np.argmax(_np_forward(arrays, x), 1) == np.argmax(fx.to_float(codes, cfg.act_fmt), 1)))
    assert 0.0 <= rep["agreement"]["argmax_agreement"] <= 1.0
    assert rep["agreement"]["argmax_agreement"] == own


def test_fit_formats(tmp_path):
    w0 = np.array([[0.5, -5.3], [0.25, 1.0], [-0.75, 0.1], [0.3, 0.2]])  # max |w| 5.3
    arrays = [(w0, np.array([0.1, -0.2, 0.0, 0.3])), (np.array([[0.5, -0.5, 1.0, 0.25]]), np.array([0.05]))]
    model = _npz_model(tmp_path, arrays)
    cfg = MamlConfig(layers=(2, 4, 1), weight_fmt="Q2.14", act_fmt="Q6.10", acc_fmt="Q16.30")
    assert mi.quantisation_report(model, cfg)["total"]["saturated"] >= 1
    prop = mi.fit_formats(model, cfg)
    assert prop["why"]["max_abs_weight"] == 5.3 and prop["why"]["config_check"] == "ok"
    weight, act = QFormat.parse(prop["weight_fmt"]), QFormat.parse(prop["act_fmt"])
    assert prop["master_fmt"] == prop["weight_fmt"] and weight.width == 16 and act.width == 16
    # 5.3 needs 4 integer bits (Q3.13 stops below 4): enough, and at most one more
    assert QFormat(3, 13).max_value < 5.3 <= QFormat(4, 12).max_value
    assert 4 <= weight.int_bits <= 5
    x = np.random.default_rng(0).uniform(-4.0, 4.0, (256, 2))
    h = np.maximum(x @ w0.T + arrays[0][1], 0)
    max_act = max(h.max(), np.abs(h @ arrays[1][0].T + arrays[1][1]).max())
    assert act.max_value >= 1.1 * max_act and QFormat(act.int_bits - 1, act.frac_bits + 1).max_value < 1.1 * max_act
    fitted = cfg.replace(**{k: v for k, v in prop.items() if k != "why"})
    rep = mi.quantisation_report(model, fitted)
    assert rep["total"]["saturated"] == 0 and rep["total"]["saturated_weight_fmt"] == 0
    assert rep["agreement"]["saturated_outputs"] == 0
    d = {**cfg.to_dict(), "master_fmt": prop["master_fmt"], "weight_fmt": prop["weight_fmt"]}
    assert MamlConfig.from_dict(d).master_fmt == weight
