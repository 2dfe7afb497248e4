"""Sinusoid tasks and few-shot digit episodes: ranges, shapes, seeding, class split."""

import math
import re

import numpy as np
import pytest

from metafab.reference import digits
from metafab.reference.errors import UserError
from metafab.reference.sinusoid import SinusoidTasks


def test_sinusoid_tasks_follow_finn_et_al():
    tasks = SinusoidTasks(k_support=10, k_query=7).sample(np.random.default_rng(0), 500)
    assert tasks.x_support.shape == (500, 10, 1) and tasks.y_query.shape == (500, 7, 1)
    assert tasks.amplitude.min() >= 0.1 and tasks.amplitude.max() <= 5.0
    assert tasks.phase.min() >= 0.0 and tasks.phase.max() <= math.pi
    for x in (tasks.x_support, tasks.x_query):
        assert x.min() >= -5.0 and x.max() <= 5.0
    expected = tasks.amplitude[:, None, None] * np.sin(tasks.x_query - tasks.phase[:, None, None])
    np.testing.assert_array_equal(tasks.y_query, expected)


def test_sinusoid_sampler_is_seeded():
    sampler = SinusoidTasks(k_support=5, k_query=5)
    a = sampler(np.random.default_rng(3), 4)
    b = sampler(np.random.default_rng(3), 4)
    c = sampler(np.random.default_rng(4), 4)
    assert np.array_equal(a.x_support, b.x_support) and np.array_equal(a.y_query, b.y_query)
    assert not np.array_equal(a.x_support, c.x_support)


def test_digits_are_scaled_to_unit_range():
    x, y = digits.images()
    assert x.shape == (1797, 64) and x.dtype == np.float64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_episodes_use_only_their_class_pool_and_disjoint_images():
    assert not set(digits.META_TRAIN_CLASSES) & set(digits.META_TEST_CLASSES)
    x, y = digits.images()
    sampler = digits.EpisodeSampler(classes=digits.META_TEST_CLASSES, k_shot=5, n_query=15)
    ep = sampler(np.random.default_rng(1))
    assert ep.support.shape == (25, 64) and ep.query.shape == (75, 64)
    np.testing.assert_array_equal(ep.support_labels, np.repeat(np.arange(5), 5))
    np.testing.assert_array_equal(ep.query_labels, np.repeat(np.arange(5), 15))
    assert sorted(ep.classes) == list(digits.META_TEST_CLASSES)
    rows = {tuple(r) for r in x}
    assert all(tuple(r) in rows for r in ep.support)
    # every row's digit is the episode label's class; support and query images differ
    index = {r.tobytes(): i for i, r in enumerate(x)}
    s_idx = [index[r.tobytes()] for r in ep.support]
    q_idx = [index[r.tobytes()] for r in ep.query]
    np.testing.assert_array_equal(y[s_idx], ep.classes[ep.support_labels])
    np.testing.assert_array_equal(y[q_idx], ep.classes[ep.query_labels])
    assert not set(s_idx) & set(q_idx)


def test_episodes_are_seeded():
    sampler = digits.EpisodeSampler(classes=digits.META_TRAIN_CLASSES, k_shot=1, n_query=3)
    a, b = sampler(np.random.default_rng(9)), sampler(np.random.default_rng(9))
    assert np.array_equal(a.support, b.support) and np.array_equal(a.classes, b.classes)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: SinusoidTasks(k_support=0), "k_support"),
        (lambda: SinusoidTasks(k_query=-1), "k_query"),
        (lambda: SinusoidTasks()(np.random.default_rng(0), 0), "n_tasks"),
        (lambda: SinusoidTasks()(0, 3), "rng"),
        (lambda: digits.EpisodeSampler(n_way=6), "n_way"),
        (lambda: digits.EpisodeSampler(k_shot=0), "k_shot"),
        (lambda: digits.EpisodeSampler(k_shot=100, n_query=100), "k_shot + n_query"),
        (lambda: digits.EpisodeSampler(classes=(1, 1, 2)), "classes"),
        (lambda: digits.EpisodeSampler(classes=(3, 12)), "classes"),
    ],
)
def test_bad_input_raises_a_user_error_naming_it(call, name):
    with pytest.raises(UserError, match="^" + re.escape(name)):
        call()
