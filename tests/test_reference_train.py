"""Meta-training (MAML, first-order MAML, Reptile, joint) and embedding training: tiny runs."""

import re

import numpy as np
import pytest

from metafab.reference import digits, embedding, maml, meta_train
from metafab.reference.adam import Adam
from metafab.reference.errors import UserError
from metafab.reference.sinusoid import SinusoidTasks

LAYERS = (1, 20, 20, 1)


def flat(params):
    return np.concatenate([a.ravel() for pair in params for a in pair])


def held_out_loss(params, steps=1):
    tasks = SinusoidTasks(k_support=10, k_query=50).sample(np.random.default_rng(99), 50)
    adapted = maml.adapt(params, tasks.x_support, tasks.y_support, steps, 0.01)
    return float(np.mean(maml.loss(adapted, tasks.x_query, tasks.y_query)))


def small_run(method, seed=0, iterations=60):
    return meta_train.meta_train(
        maml.init_params(LAYERS, 1),
        SinusoidTasks(k_support=10, k_query=10),
        method=method,
        iterations=iterations,
        meta_batch=5,
        inner_steps=3 if method == "reptile" else 1,
        meta_lr=0.01,
        seed=seed,
    )


@pytest.mark.parametrize("method", meta_train.METHODS)
def test_meta_train_is_reproducible_and_lowers_the_held_out_loss(method):
    a, b = small_run(method), small_run(method)
    assert np.array_equal(flat(a.params), flat(b.params))
    assert np.array_equal(a.loss, b.loss) and a.loss.shape == (60,)
    assert not np.array_equal(flat(a.params), flat(small_run(method, seed=1).params))
    start = maml.init_params(LAYERS, 1)
    assert held_out_loss(a.params) < 0.9 * held_out_loss(start)


def test_maml_and_first_order_take_different_paths():
    assert not np.array_equal(flat(small_run("maml").params), flat(small_run("fomaml").params))


def test_progress_reports_averages():
    seen = []
    meta_train.meta_train(
        maml.init_params(LAYERS, 1),
        SinusoidTasks(),
        iterations=5,
        meta_batch=2,
        progress=lambda i, loss: seen.append((i, loss)),
        progress_every=2,
    )
    assert [i for i, _ in seen] == [2, 4, 5]


def test_adam_first_step_moves_every_weight_by_the_step_size():
    params = [(np.array([[1.0, -2.0]]), np.array([0.5]))]
    grads = [(np.array([[3.0, -0.1]]), np.array([1e-3]))]
    out = Adam(lr=0.1).step(params, grads)
    np.testing.assert_allclose(out[0][0], [[0.9, -1.9]], rtol=1e-6)
    np.testing.assert_allclose(out[0][1], [0.4], rtol=1e-4)


def test_embedding_training_is_reproducible_and_fits_the_train_digits():
    sampler = digits.EpisodeSampler(classes=digits.META_TRAIN_CLASSES, k_shot=5, n_query=5)

    def run():
        return embedding.train(
            embedding.init_params((64, 32, 16), 0), sampler, iterations=40, lr=3e-3, seed=2
        )

    a, b = run(), run()
    assert np.array_equal(flat(a.params), flat(b.params))
    assert a.loss[-10:].mean() < 0.5 * a.loss[:10].mean()
    e = embedding.embed(a.params, digits.images()[0][:10])
    assert e.shape == (10, 16) and e.min() >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iterations": -1}, "iterations"),
        ({"iterations": 2, "method": "sgd"}, "method"),
        ({"iterations": 2, "meta_batch": 0}, "meta_batch"),
        ({"iterations": 2, "inner_steps": -1}, "inner_steps"),
        ({"iterations": 2, "inner_lr": float("inf")}, "inner_lr"),
        ({"iterations": 2, "meta_lr": 0.0}, "lr"),
        ({"iterations": 2, "method": "reptile", "inner_steps": 0}, "inner_steps"),
    ],
)
def test_meta_train_rejects_bad_settings(kwargs, name):
    with pytest.raises(UserError, match="^" + re.escape(name)):
        meta_train.meta_train(maml.init_params(LAYERS, 0), SinusoidTasks(), **kwargs)


def test_embedding_rejects_bad_input():
    params = embedding.init_params((64, 8, 4), 0)
    with pytest.raises(UserError, match="^x"):
        embedding.embed(params, np.zeros((3, 63)))
    with pytest.raises(UserError, match="^iterations"):
        embedding.train(params, digits.EpisodeSampler(), iterations=-2)
