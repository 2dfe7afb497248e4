"""Matching and Prototypical read-outs against hand-computed small cases."""

import math
import re

import numpy as np
import pytest

from metafab.reference import matching, proto
from metafab.reference.errors import UserError


def test_matching_readout_by_hand():
    # cosines of q = (1, 0) to (1, 0), (0, 1), (1, 1): 1, 0, 1/sqrt(2)
    support = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([0, 1, 1])
    e = [math.exp(1.0), math.exp(0.0), math.exp(1 / math.sqrt(2))]
    att = [v / sum(e) for v in e]  # 0.4730411, 0.1740221, 0.3529368
    probs, pred = matching.readout(np.array([1.0, 0.0]), support, labels, 2)
    np.testing.assert_allclose(probs, [att[0], att[1] + att[2]], rtol=1e-14)
    np.testing.assert_allclose(probs, [0.4730411, 0.5269589], atol=1e-7)
    assert pred == 1  # the label mix beats the single nearest support sample
    assert isinstance(pred, int)
    np.testing.assert_allclose(matching.attention([1.0, 0.0], support), att, rtol=1e-14)


def test_matching_batch_equals_single_queries():
    rng = np.random.default_rng(0)
    support = rng.standard_normal((6, 4))
    labels = np.array([0, 1, 2, 0, 1, 2])
    queries = rng.standard_normal((5, 4))
    probs, pred = matching.readout(queries, support, labels, 3)
    assert probs.shape == (5, 3) and pred.shape == (5,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-14)
    for i, q in enumerate(queries):
        p, c = matching.readout(q, support, labels, 3)
        np.testing.assert_allclose(probs[i], p, rtol=1e-14)
        assert pred[i] == c


def test_matching_is_scale_invariant_and_zero_vectors_have_cosine_zero():
    support = np.array([[2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(matching.cosine_similarity([5.0, 0.0], support), [1.0, 0.0])
    np.testing.assert_array_equal(matching.cosine_similarity([0.0, 0.0], support), [0.0, 0.0])
    probs, pred = matching.readout([0.0, 0.0], support, [0, 1], 2)
    np.testing.assert_array_equal(probs, [0.5, 0.5])
    assert pred == 0  # tie: lowest class index


def test_matching_tie_goes_to_the_lowest_class():
    probs, pred = matching.readout([1.0, 0.0], [[0.0, 1.0], [0.0, -1.0]], [1, 0], 2)
    np.testing.assert_array_equal(probs, [0.5, 0.5])
    assert pred == 0


def test_prototypes_and_readout_by_hand():
    support = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    c = proto.prototypes(support, labels, 2)
    np.testing.assert_array_equal(c, [[1.0, 0.0], [0.0, 3.0]])
    # q = (1, 1): squared distances 1 and 5, probs = softmax(-1, -5)
    probs, pred = proto.readout([1.0, 1.0], c)
    p0 = 1 / (1 + math.exp(-4.0))
    np.testing.assert_allclose(probs, [p0, 1 - p0], rtol=1e-14)
    np.testing.assert_allclose(probs, [0.98201379, 0.01798621], atol=1e-8)
    assert pred == 0


def test_proto_batch_and_tie():
    c = np.array([[1.0, 0.0], [-1.0, 0.0]])
    probs, pred = proto.readout([[0.0, 5.0], [-2.0, 0.0]], c)
    np.testing.assert_array_equal(probs[0], [0.5, 0.5])
    assert list(pred) == [0, 1]


def test_proto_far_queries_do_not_overflow():
    # distances of 1e6: exp(-1e6) underflows unless the max is subtracted first
    probs, pred = proto.readout([1000.0, 0.0], [[0.0, 0.0], [1.0, 0.0]])
    assert np.all(np.isfinite(probs)) and pred == 1
    np.testing.assert_allclose(probs, [0.0, 1.0], atol=1e-300)


def test_proto_loss_gradient_matches_central_differences():
    rng = np.random.default_rng(1)
    s, q = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    sl, ql = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 1])
    loss, d_s, d_q = proto.loss_and_grads(s, sl, q, ql, 3)
    eps = 1e-6
    for arr, grad, is_support in ((s, d_s, True), (q, d_q, False)):
        fd = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            step = np.zeros_like(arr)
            step[idx] = eps

            def f(a, step=step, is_support=is_support):
                args = (a, sl, q, ql) if is_support else (s, sl, a, ql)
                return proto.loss_and_grads(*args, 3)[0]

            fd[idx] = (f(arr + step) - f(arr - step)) / (2 * eps)
        assert np.linalg.norm(grad - fd) / np.linalg.norm(fd) < 1e-6
    probs, _ = proto.readout(q, proto.prototypes(s, sl, 3))
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(4), ql])), rel=1e-12)


S = np.eye(3)
L = np.array([0, 1, 2])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: matching.readout([1.0, 0.0], S, L, 3), "query"),
        (lambda: matching.readout([np.nan, 0.0, 0.0], S, L, 3), "query"),
        (lambda: matching.readout(np.zeros((2, 2, 3)), S, L, 3), "query"),
        (lambda: matching.readout([1.0, 0, 0], np.zeros((0, 3)), np.zeros(0, int), 3), "support"),
        (lambda: matching.readout([1.0, 0, 0], np.where(S > 0, np.inf, 0.0), L, 3), "support"),
        (lambda: matching.readout([1.0, 0, 0], S, [0, 1, 3], 3), "support_labels"),
        (lambda: matching.readout([1.0, 0, 0], S, [0, 1, -1], 3), "support_labels"),
        (lambda: matching.readout([1.0, 0, 0], S, [0, 1], 3), "support_labels"),
        (lambda: matching.readout([1.0, 0, 0], S, [0.0, 1.0, 2.0], 3), "support_labels"),
        (lambda: matching.readout([1.0, 0, 0], S, [0, 1, 1], 3), "support_labels"),
        (lambda: matching.readout([1.0, 0, 0], S, L, 0), "n_classes"),
        (lambda: proto.prototypes(S, [0, 0, 0], 2), "support_labels"),
        (lambda: proto.prototypes(np.zeros((0, 3)), np.zeros(0, int), 2), "support"),
        (lambda: proto.prototypes(S, [0, 1, 5], 3), "support_labels"),
        (lambda: proto.prototypes(S, L, 3.0), "n_classes"),
        (lambda: proto.readout([1.0, 0.0], S), "query"),
        (lambda: proto.readout([1.0, 0.0, 0.0], S[:, :2]), "query"),
        (lambda: proto.readout([1.0, 0.0, 0.0], [[np.nan, 0, 0]]), "prototypes"),
        (lambda: proto.readout([1.0, 0.0, 0.0], np.zeros((0, 3))), "prototypes"),
        (lambda: proto.loss_and_grads(S, L, S, [0, 1, 7], 3), "query_labels"),
    ],
)
def test_bad_input_raises_a_user_error_naming_it(call, name):
    with pytest.raises(UserError, match="^" + re.escape(name)):
        call()
