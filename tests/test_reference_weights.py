"""Weight files: deterministic bytes, round trip, and the shipped meta-trained defaults."""

import io
import re
from importlib.resources import files

import numpy as np
import pytest

from metafab.reference import digits, embedding, maml, weights
from metafab.reference.errors import UserError
from metafab.reference.sinusoid import SinusoidTasks


def flat(params):
    return np.concatenate([a.ravel() for pair in params for a in pair])


def test_same_parameters_give_the_same_bytes(tmp_path):
    params = maml.init_params((1, 4, 1), 0)
    meta = {"seed": 0, "command": "x", "layers": [1, 4, 1]}
    a = weights.save(tmp_path / "a.npz", params, meta).read_bytes()
    b = weights.save(tmp_path / "sub" / "b.npz", params, dict(reversed(meta.items())))
    assert a == b.read_bytes()
    loaded = weights.load(tmp_path / "a.npz")
    assert np.array_equal(flat(loaded.params), flat(params)) and loaded.metadata == meta
    with np.load(io.BytesIO(a), allow_pickle=False) as npz:  # a plain npz
        assert sorted(npz.files) == ["W0", "W1", "b0", "b1", "metadata"]


def test_bad_files_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        weights.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a metafab weights file"):
        weights.load(tmp_path / "junk.npz")
    with pytest.raises(UserError, match=re.escape("no shipped weights named 'nope.npz'")):
        weights.load_shipped("nope.npz")
    with pytest.raises(UserError, match="^k_shot"):
        weights.load_sinusoid_init(k_shot=7)


@pytest.mark.parametrize(
    "name",
    [
        weights.SINUSOID_INIT,
        weights.SINUSOID_INIT_K5,
        weights.SINUSOID_PRETRAINED,
        weights.DIGITS_EMBEDDING,
    ],
)
def test_shipped_files_are_canonical_and_record_their_command(name):
    shipped = weights.load_shipped(name)
    assert shipped.metadata["command"].startswith("metafab train ")
    # rewriting what was loaded gives the shipped bytes: the writer is deterministic
    raw = (files("metafab.reference") / "data" / name).read_bytes()
    assert weights.to_bytes(shipped.params, shipped.metadata) == raw


def test_shipped_sinusoid_inits_have_the_default_shape():
    for params in (
        weights.load_sinusoid_init(),
        weights.load_sinusoid_init(k_shot=5),
        weights.load_sinusoid_pretrained(),
    ):
        assert [w.shape for w, _ in params] == [(40, 1), (40, 40), (1, 40)]
    meta = weights.load_shipped(weights.SINUSOID_INIT).metadata
    assert (meta["layers"], meta["inner_lr"], meta["k_shot"], meta["method"]) == (
        [1, 40, 40, 1],
        0.01,
        10,
        "maml",
    )


def test_maml_init_after_one_step_beats_the_pretrained_init():
    tasks = SinusoidTasks(k_support=10, k_query=50).sample(np.random.default_rng(12345), 100)

    def query_mse(params, steps):
        adapted = maml.adapt(params, tasks.x_support, tasks.y_support, steps, 0.01)
        return float(np.mean(maml.loss(adapted, tasks.x_query, tasks.y_query)))

    meta_init, pretrained = weights.load_sinusoid_init(), weights.load_sinusoid_pretrained()
    assert query_mse(meta_init, 1) < 0.5 * query_mse(pretrained, 1)
    assert query_mse(meta_init, 1) < 0.5 * query_mse(meta_init, 0)


def test_shipped_embedding_maps_digits_to_bounded_non_negative_features():
    params = weights.load_digits_embedding()
    e = embedding.embed(params, digits.images()[0])
    assert e.shape == (1797, 64) and e.min() >= 0.0 and e.max() < 16.0
