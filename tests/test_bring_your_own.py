"""A user's own model and data through the real CLI: ``metafab import``, ``--weights FILE``, ``--input FILE``.

Every model here is made in the test (ONNX with ``onnx.helper``, safetensors with its numpy API), so the
expected weights are the arrays put in; the RTL runs are small designs (a 1-8-1 net, 4 lanes) checked word
for word by the bench against the bit-exact reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from metafab.gen.cli import main
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig
from metafab.reference.payloads import maml_weight_codes

from .test_cli_errors import one_line

SMALL = ["--layers", "1-8-1", "--lanes", "4", "--k-support", "3", "--queries", "2"]


def _mlp(rng, layers):
    return [(rng.normal(0, 0.6, (o, i)), rng.normal(0, 0.1, o)) for i, o in zip(layers[:-1], layers[1:], strict=True)]


def _onnx(path, params, softmax=False):
    """An ONNX graph as torch.onnx.export writes an nn.Sequential of Linear/ReLU: Gemm(transB=1) + Relu."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for n, (w, b) in enumerate(params):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{n}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{n}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{n}", f"b{n}"], [f"g{n}"], name=f"gemm{n}", transB=1))
        x = f"g{n}"
        if n < len(params) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{n}"], name=f"relu{n}"))
            x = f"r{n}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [x], ["p"], name="softmax", axis=1))
        x = "p"
    n_in, n_out = params[0][0].shape[1], params[-1][0].shape[0]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_in])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", n_out])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [(w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for w, b in params]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(5)
    mlp = _onnx(d / "mlp.onnx", _mlp(rng, (1, 8, 1)))
    cls = _onnx(d / "cls.onnx", _mlp(rng, (6, 5, 3)), softmax=True)
    from safetensors.numpy import save_file

    save_file({"0.weight": mlp[0][0].astype(np.float32), "0.bias": mlp[0][1].astype(np.float32),
               "2.weight": mlp[1][0].astype(np.float32), "2.bias": mlp[1][1].astype(np.float32)},
              str(d / "mlp.safetensors"))
    return {"dir": d, "mlp": mlp, "cls": cls}


def test_import_writes_a_weight_file_and_reports(capsys, models, tmp_path):
    out = tmp_path / "imp"
    assert main(["import", str(models["dir"] / "mlp.onnx"), "-o", str(out), "--fit-formats", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["layers"] == [1, 8, 1] and r["engine"] == "maml" and not r["softmax"]
    assert r["quantisation"]["total"]["count"] == 8 + 8 + 8 + 1
    assert (out / "weights.npz").is_file() and json.loads((out / "import.json").read_text()) == r
    from metafab.reference.weights import load

    got = load(out / "weights.npz").params
    for (w, b), (w0, b0) in zip(got, models["mlp"], strict=True):
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(b, b0)
    assert set(r["fit_formats"]) >= {"master_fmt", "weight_fmt", "act_fmt", "why"}
    # the classifier goes to maml-cls by its Softmax
    assert main(["import", str(models["dir"] / "cls.onnx"), "-o", str(tmp_path / "c"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "maml-cls"


def test_weights_file_sets_the_layers_and_the_load_payload(capsys, models, tmp_path):
    """generate with --weights FILE: the design takes the model's layers, weights.txt is its quantised weights."""
    for name in ("mlp.onnx", "mlp.safetensors"):
        out = tmp_path / name
        assert main(["generate", "maml", "--weights", str(models["dir"] / name), "-o", str(out)]) == 0
        capsys.readouterr()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"]["layers"] == [1, 8, 1]
        cfg = MamlConfig(layers=(1, 8, 1))
        want = maml_weight_codes(mf.quantize_params(models["mlp"], cfg))
        assert [int(v) for v in (out / "weights.txt").read_text().split()] == want
        assert manifest["protocol"]["opcodes"]["READ_WEIGHTS"] == 4
        assert manifest["protocol"]["response_words"]["READ_WEIGHTS"] == cfg.n_params


@pytest.mark.parametrize("argv, fragment", [
    (["verify", "maml", "--weights", "{d}/cls.onnx"], "ends in a Softmax (a classifier): use the maml-cls engine"),
    (["verify", "maml", "--weights", "{d}/mlp.onnx", "--layers", "1-40-40-1"],
     "has layers 1-8-1, the design 1-40-40-1; leave --layers out"),
    (["verify", "maml", "--weights", "{d}/none.onnx"], "model file '{d}/none.onnx' does not exist"),
    (["verify", "maml", "--weights", "{d}/x.pt"], "is neither one of auto, shipped, random nor a model file"),
    (["import", "{d}/x.pt"], "unknown model file suffix '.pt'; valid: .onnx, .safetensors, .npz"),
    (["import", "{d}/none.onnx"], "model file '{d}/none.onnx' does not exist"),
])
def test_weights_file_mistakes_are_one_line(capsys, models, argv, fragment):
    d = str(models["dir"])
    one_line(capsys, [a.format(d=d) for a in argv], fragment.format(d=d), progress=True)


def _tasks(rng, n, K=3, Q=2, yq=True):
    xs = rng.uniform(-2, 2, (n, K, 1))
    xq = rng.uniform(-2, 2, (n, Q, 1))
    amp = rng.uniform(0.5, 2, (n, 1, 1))
    out = {"xs": xs, "ys": amp * np.sin(xs), "xq": xq}
    if yq:
        out["yq"] = amp * np.sin(xq)
    return out


def test_verify_and_sim_take_a_users_tasks(capsys, models, tmp_path):
    """--input as npz and as JSON: the same tasks give the same report; the MSE needs yq; weights read back."""
    t = _tasks(np.random.default_rng(1), 4)
    np.savez(tmp_path / "t.npz", **t)
    (tmp_path / "t.json").write_text(json.dumps([{k: v[i].tolist() for k, v in t.items()} for i in range(4)]))
    w = str(models["dir"] / "mlp.onnx")
    docs = []
    for f in ("t.npz", "t.json"):
        assert main(["verify", "maml", "--weights", w, "--input", str(tmp_path / f), "--lanes", "4",
                     "--k-support", "3", "--queries", "2", "--read-weights", "--json"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    for r in docs:
        assert r["tasks"] == 4 and r["mismatches"] == 0 and r["output_words"] == 4 * 2 + 4 * 25
        assert r["weight_words"] == 4 * 25 and r["weight_mismatches"] == 0 and "mse_fixed" in r
    assert docs[0]["mse_fixed"] == docs[1]["mse_fixed"] and docs[0]["mse_float64"] == docs[1]["mse_float64"]
    # without query targets: no MSE, still verified
    np.savez(tmp_path / "noyq.npz", **_tasks(np.random.default_rng(1), 2, yq=False))
    assert main(["verify", "maml", "--weights", w, "--input", str(tmp_path / "noyq.npz"), "--lanes", "4",
                 "--k-support", "3", "--queries", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tasks"] == 2 and r["mismatches"] == 0 and "mse_fixed" not in r
    # sim gives the fixed-point outputs of the same tasks (checked against the reference here)
    assert main(["sim", "maml", "--weights", w, "--input", str(tmp_path / "t.npz"), "--lanes", "4",
                 "--k-support", "3", "--queries", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cfg = MamlConfig(layers=(1, 8, 1), lanes=4, k_support=3, n_query=2)
    wq = mf.quantize_params(models["mlp"], cfg)
    for i, out in enumerate(doc["outputs"]):
        codes = [mf.quantize_inputs(t[k][i], cfg) for k in ("xs", "ys", "xq")]
        y = mf.run_task(wq, *codes, cfg).y_query
        np.testing.assert_array_equal(np.asarray(out).reshape(-1), (y * 2.0 ** -cfg.act_fmt.frac_bits).reshape(-1))


def test_classifier_and_similarity_engines_take_a_users_episodes(capsys, models, tmp_path):
    rng = np.random.default_rng(2)
    eps = [{"xs": rng.uniform(0, 1, (3, 6)).tolist(), "labels": [0, 1, 2], "xq": rng.uniform(0, 1, (3, 6)).tolist(),
            "query_labels": [2, 1, 0]} for _ in range(2)]
    (tmp_path / "e.json").write_text(json.dumps(eps))
    assert main(["verify", "maml-cls", "--weights", str(models["dir"] / "cls.onnx"), "--input",
                 str(tmp_path / "e.json"), "--shots", "1", "--queries", "1", "--lanes", "4", "--read-weights",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["episodes"] == 2 and r["mismatches"] == 0 and r["rtl_equals_fixed_predictions"]
    assert r["weight_mismatches"] == 0 and "accuracy_rtl" in r and r["accuracy_rtl"] == r["accuracy_fixed"]
    # the similarity engine: 2-way 2-shot, dim 8, two clusters
    c = np.array([[1.0] * 8, [-1.0] * 8]) * 0.5
    support = np.concatenate([c[[0, 0, 1, 1]] + rng.normal(0, 0.1, (4, 8))])
    queries = c[[1, 0, 1]] + rng.normal(0, 0.1, (3, 8))
    np.savez(tmp_path / "m.npz", support=support[None], labels=np.array([[0, 0, 1, 1]]), queries=queries[None],
             query_labels=np.array([[1, 0, 1]]))
    assert main(["verify", "match", "--ways", "2", "--shots", "2", "--dim", "8", "--lanes", "4", "--input",
                 str(tmp_path / "m.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["queries"] == 3 and r["mismatches"] == 0 and r["accuracy"]["fixed"] == 1.0 and r["accuracy"]["rtl"] == 1.0


@pytest.mark.parametrize("content, fragment", [
    ({"xs": np.zeros((2, 3, 1)), "ys": np.zeros((2, 4, 1)), "xq": np.zeros((2, 2, 1))},
     "task 0 in '{f}': ys has shape (4, 1), the design needs 3x1"),
    ({"xs": np.zeros((2, 3, 1)), "ys": np.zeros((1, 3, 1)), "xq": np.zeros((2, 2, 1))},
     "the arrays' first axes differ"),
    ({"xs": np.zeros((1, 3, 1)), "xq": np.zeros((1, 2, 1))}, "task 0 in '{f}' has no 'ys'"),
    ({"xs": np.full((1, 3, 1), np.nan), "ys": np.zeros((1, 3, 1)), "xq": np.zeros((1, 2, 1))}, "NaN or infinite"),
    ({"a": np.zeros(3)}, "holds a; it needs xs, ys, xq, yq"),
])
def test_bad_input_files_are_one_line(capsys, tmp_path, content, fragment):
    f = tmp_path / "bad.npz"
    np.savez(f, **content)
    one_line(capsys, ["verify", "maml", *SMALL, "--input", str(f)], fragment.format(f=f), progress=True)


def test_bad_input_file_kinds(capsys, tmp_path):
    one_line(capsys, ["sim", "maml", *SMALL, "--input", str(tmp_path / "no.json")], "does not exist", progress=True)
    (tmp_path / "t.csv").write_text("1,2")
    one_line(capsys, ["sim", "maml", *SMALL, "--input", str(tmp_path / "t.csv")], "unknown suffix '.csv'",
             progress=True)
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04garbage")
    one_line(capsys, ["sim", "maml", *SMALL, "--input", str(tmp_path / "cut.npz")], "cannot read task file",
             progress=True)
    (tmp_path / "l.json").write_text(json.dumps([{"xs": [[0.0] * 6] * 3, "labels": [0, 1, 3], "xq": [[0.0] * 6] * 3}]))
    one_line(capsys, ["sim", "maml-cls", "--layers", "6-5-3", "--shots", "1", "--queries", "1", "--input",
                      str(tmp_path / "l.json")], "labels must be class labels 0..2", progress=True)


def _bad_models(d, good):
    """Each bad model file a user might bring, with the fragment its one-line error must name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import save_file

    (w0, b0), (w1, b1) = good

    def graph(path, nodes, inits):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["n", 1])],
                              initializer=[numpy_helper.from_array(a.astype(np.float32), n) for n, a in inits])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(d / path))
        return str(d / path)

    inits = [("W0", w0), ("b0", b0), ("W1", w1), ("b1", b1)]
    gemm0 = helper.make_node("Gemm", ["x", "W0", "b0"], ["h"], name="fc0", transB=1)
    gemm1 = helper.make_node("Gemm", ["r", "W1", "b1"], ["y"], name="fc1", transB=1)
    out = {
        "sigmoid": (graph("sig.onnx", [gemm0, helper.make_node("Sigmoid", ["h"], ["r"], name="act"), gemm1], inits),
                    "node 'act' (op Sigmoid) is not supported"),
        "shape": (graph("shape.onnx", [gemm0, helper.make_node("Relu", ["h"], ["r"], name="relu"), gemm1],
                        [("W0", w0), ("b0", b0), ("W1", np.zeros((1, 5))), ("b1", b1)]), "the layer widths must chain"),
    }
    nan = w0.copy()
    nan[0, 0] = np.nan
    save_file({"0.weight": nan.astype(np.float32), "0.bias": b0.astype(np.float32),
               "2.weight": w1.astype(np.float32), "2.bias": b1.astype(np.float32)}, str(d / "nan.safetensors"))
    out["nan"] = (str(d / "nan.safetensors"), "holds 1 NaN or infinite value(s)")
    save_file({"enc.w": w0.astype(np.float32), "head.w": w1.astype(np.float32)}, str(d / "names.safetensors"))
    out["names"] = (str(d / "names.safetensors"), "pass a tensor map")
    data = (d / "sig.onnx").read_bytes()
    (d / "cut.onnx").write_bytes(data[: len(data) // 2])
    out["truncated"] = (str(d / "cut.onnx"), "cannot read onnx file")
    return out


@pytest.mark.parametrize("case", ["sigmoid", "shape", "nan", "names", "truncated"])
def test_bad_models_are_one_line_errors(capsys, models, tmp_path, case):
    path, fragment = _bad_models(tmp_path, models["mlp"])[case]
    one_line(capsys, ["import", path, "-o", str(tmp_path / "o")], fragment)
    assert not (tmp_path / "o").exists()
    one_line(capsys, ["verify", "maml", "--weights", path], fragment)


def test_import_sample_inputs_in_a_given_range(capsys, models, tmp_path):
    """--input-range sets the agreement check's inputs (pixels: 0,1); the report says which range it used."""
    path = str(models["dir"] / "cls.onnx")
    assert main(["import", path, "-o", str(tmp_path / "a"), "--input-range", "0,1", "--json"]) == 0
    a = json.loads(capsys.readouterr().out)["quantisation"]["agreement"]
    assert a["input_range"] == [0.0, 1.0] and 0 <= a["argmax_agreement"] <= 1
    assert main(["import", path, "-o", str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantisation"]["agreement"]["input_range"] == [-4.0, 4.0]
    one_line(capsys, ["import", path, "--input-range", "1,0"], "LO must be below HI, got '1,0'")
