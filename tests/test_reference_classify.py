"""Float64 classification MAML reference: softmax cross-entropy, ANIL, Reptile, checked against differences."""

import numpy as np
import pytest

from metafab.reference import classify, maml, mlp
from metafab.reference.errors import UserError

from .test_reference_maml import central_difference, flat, kink_margin, rel_err, unflat

ARCHITECTURES = [(6, 8, 5), (4, 7, 6, 3), (3, 5, 2)]


def problem(layers, seed, n_support=10, n_query=8, steps=0, lr=0.3, adapt=None):
    """Random net, inputs and labels whose ReLUs stay at least 1e-3 from their kink along the inner loop."""
    n_classes = layers[-1]
    for attempt in range(100):
        rng = np.random.default_rng(1000 * seed + attempt)
        params = [(w, 0.1 * rng.standard_normal(b.shape)) for w, b in maml.init_params(layers, seed + attempt)]
        xs = rng.standard_normal((n_support, layers[0]))
        xq = rng.standard_normal((n_query, layers[0]))
        ls = rng.integers(0, n_classes, n_support)
        lq = rng.integers(0, n_classes, n_query)
        visited = [params]
        for s in range(steps):
            visited.append(classify.adapt(params, xs, ls, s + 1, lr, layers=adapt))
        if min(kink_margin(p, xs, xq) for p in visited) > 1e-3:
            return params, xs, ls, xq, lq
    raise AssertionError("no kink-free problem found")


def log_softmax_loss(params, x, labels):
    """The loss written independently: mean of log-sum-exp minus the label's logit."""
    z = mlp.forward_trace(params, x).output
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("layers", ARCHITECTURES)
def test_loss_is_the_mean_cross_entropy(layers):
    params, x, labels, _, _ = problem(layers, 1)
    assert classify.loss(params, x, labels) == pytest.approx(log_softmax_loss(params, x, labels), rel=1e-12)
    probs, pred = classify.predict(params, x)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.array_equal(pred, probs.argmax(axis=1))
    assert np.allclose(-np.log(probs[np.arange(len(labels)), labels]).mean(), classify.loss(params, x, labels))


@pytest.mark.parametrize("layers", ARCHITECTURES)
def test_grad_matches_central_differences(layers):
    params, x, labels, _, _ = problem(layers, 2)
    fd = central_difference(lambda v: log_softmax_loss(unflat(v, params), x, labels), flat(params))
    assert rel_err(flat(classify.grad(params, x, labels)), fd) < 1e-6


@pytest.mark.parametrize("layers", ARCHITECTURES)
def test_hvp_matches_differences_of_the_gradient(layers):
    params, x, labels, _, _ = problem(layers, 3)
    rng = np.random.default_rng(7)
    vec = unflat(rng.standard_normal(flat(params).size), params)
    eps = 1e-6
    theta, v = flat(params), flat(vec)
    plus = flat(classify.grad(unflat(theta + eps * v, params), x, labels))
    minus = flat(classify.grad(unflat(theta - eps * v, params), x, labels))
    assert rel_err(flat(classify.hvp(params, x, labels, vec)), (plus - minus) / (2 * eps)) < 1e-6


@pytest.mark.parametrize("layers", ARCHITECTURES)
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("anil", [False, True])
def test_meta_grad_matches_differences_of_the_adapted_query_loss(layers, steps, anil):
    adapt = classify.anil_layers(len(layers) - 1) if anil else None
    params, xs, ls, xq, lq = problem(layers, 4, steps=steps, adapt=adapt)

    def query_loss(v):
        return log_softmax_loss(classify.adapt(unflat(v, params), xs, ls, steps, 0.3, layers=adapt), xq, lq)

    fd = central_difference(query_loss, flat(params))
    got = flat(classify.meta_grad(params, xs, ls, xq, lq, steps, 0.3, layers=adapt))
    assert rel_err(got, fd) < 1e-5


def test_anil_adapts_only_the_head_and_first_order_is_the_query_gradient_there():
    layers = (6, 8, 5)
    params, xs, ls, xq, lq = problem(layers, 5, steps=2, adapt=(1,))
    adapted = classify.adapt(params, xs, ls, 2, 0.3, layers=classify.anil_layers(2))
    assert np.array_equal(adapted[0][0], params[0][0]) and np.array_equal(adapted[0][1], params[0][1])
    assert not np.allclose(adapted[1][0], params[1][0])
    # the head alone by hand: two SGD steps on the last layer's gradient
    head = params
    for _ in range(2):
        g = classify.grad(head, xs, ls)
        head = [head[0], (head[1][0] - 0.3 * g[1][0], head[1][1] - 0.3 * g[1][1])]
    assert np.allclose(flat(adapted), flat(head), rtol=0, atol=1e-14)
    fo = classify.fomaml_grad(params, xs, ls, xq, lq, 2, 0.3, layers=(1,))
    assert np.allclose(flat(fo), flat(classify.grad(adapted, xq, lq)), rtol=0, atol=1e-14)


def test_reptile_direction_is_theta_minus_mean_adapted_over_steps_lr():
    layers = (4, 7, 3)
    rng = np.random.default_rng(11)
    params = maml.init_params(layers, 3)
    xs = rng.standard_normal((4, 6, 4))
    ls = rng.integers(0, 3, (4, 6))
    got = classify.reptile_grad(params, xs, ls, 3, 0.2)
    phi = [classify.adapt(params, xs[t], ls[t], 3, 0.2) for t in range(4)]
    for i, (w, b) in enumerate(params):
        mean_w = np.mean([p[i][0] for p in phi], axis=0)
        mean_b = np.mean([p[i][1] for p in phi], axis=0)
        assert np.allclose(got[i][0], (w - mean_w) / 0.6) and np.allclose(got[i][1], (b - mean_b) / 0.6)


def test_meta_batch_gradient_is_the_mean_of_task_gradients():
    layers = (4, 6, 3)
    rng = np.random.default_rng(12)
    params = maml.init_params(layers, 5)
    xs, xq = rng.standard_normal((3, 6, 4)), rng.standard_normal((3, 5, 4))
    ls, lq = rng.integers(0, 3, (3, 6)), rng.integers(0, 3, (3, 5))
    batch = classify.meta_grad(params, xs, ls, xq, lq, 1, 0.3)
    one = [classify.meta_grad(params, xs[t], ls[t], xq[t], lq[t], 1, 0.3) for t in range(3)]
    assert np.allclose(flat(batch), np.mean([flat(g) for g in one], axis=0), rtol=0, atol=1e-13)


def test_argmax_ties_go_to_the_lowest_class():
    params = [(np.zeros((4, 3)), np.array([0.5, 1.0, 1.0, 1.0]))]
    probs, pred = classify.predict(params, np.ones((2, 3)))
    assert pred.tolist() == [1, 1] and np.allclose(probs[0, 1:], probs[0, 1])


@pytest.mark.parametrize("call,words", [
    (lambda p, x, l: classify.loss(p, x, np.array([0, 1, 3])), "must lie in 0..2 (the network's 3 classes), got 3"),
    (lambda p, x, l: classify.loss(p, x, np.array([0, -1, 2])), "got -1"),
    (lambda p, x, l: classify.loss(p, x, np.array([0.0, 1.0, 2.0])), "integer class labels"),
    (lambda p, x, l: classify.loss(p, x, np.array([0, 1])), "one label per row of x"),
    (lambda p, x, l: classify.adapt(p, x[:0], l[:0], 1, 0.1), "x must not be empty"),
    (lambda p, x, l: classify.loss(maml.init_params((4, 5, 1), 0), x, l), "at least 2 classes (N >= 2"),
    (lambda p, x, l: classify.adapt(p, x, l, 1, 0.1, layers=[2]), "layer indices in 0..1, got 2"),
    (lambda p, x, l: classify.adapt(p, x, l, 1, 0.1, layers=[]), "at least one layer"),
    (lambda p, x, l: classify.reptile_grad(p, x, l, 0, 0.1), "steps"),
])
def test_bad_input_is_one_line_naming_it(call, words):
    params = maml.init_params((4, 5, 3), 0)
    x = np.ones((3, 4))
    labels = np.array([0, 1, 2])
    with pytest.raises(UserError) as exc:
        call(params, x, labels)
    msg = str(exc.value)
    assert words in msg and "\n" not in msg


def test_meta_train_outer_gradients_for_classification_are_the_checked_api_s():
    from metafab.reference import glyphs, inner_loop, meta_train

    data = glyphs.load_shipped()
    sampler = glyphs.EpisodeSampler(split="train", n_way=3, k_shot=2, n_query=4, data=data)
    batch = glyphs.episode_batch(sampler, np.random.default_rng(5), 4)
    assert batch.x_support.shape == (4, 6, 256) and batch.y_support.shape == (4, 6)
    assert batch.x_query.shape == (4, 12, 256) and batch.y_query.tolist()[0] == [0] * 4 + [1] * 4 + [2] * 4
    params = maml.init_params((256, 16, 3), 2)
    xs, ls, xq, lq = batch.x_support, batch.y_support, batch.x_query, batch.y_query
    for method, layers in (("maml", None), ("fomaml", None), ("maml", (1,)), ("reptile", None)):
        got, q_loss = meta_train.outer_grad(params, batch, method=method, inner_steps=2, inner_lr=0.3,
                                            loss=inner_loop.SOFTMAX_CE, layers=layers)
        if method == "reptile":
            want = classify.reptile_grad(params, xs, ls, 2, 0.3)
        else:
            want = classify.meta_grad(params, xs, ls, xq, lq, 2, 0.3, first_order=method == "fomaml", layers=layers)
        assert np.allclose(flat(got), flat(want), rtol=0, atol=1e-12)
        adapted = classify.adapt(params, xs, ls, 2, 0.3, layers=layers)
        assert q_loss == pytest.approx(float(np.mean(classify.loss(adapted, xq, lq))), rel=1e-12)
    # a few Adam steps of MAML lower the meta-batch loss it is trained on
    res = meta_train.meta_train(params, lambda rng, n: batch, method="maml", iterations=30, meta_batch=4,
                                inner_steps=1, inner_lr=0.3, meta_lr=3e-3, loss=inner_loop.SOFTMAX_CE)
    assert res.loss[-1] < 0.8 * res.loss[0]


def test_pretrain_fits_its_classes_and_the_new_head_starts_uniform():
    rng = np.random.default_rng(21)
    centres = rng.standard_normal((6, 8)) * 3
    labels = rng.integers(0, 6, 300)
    x = centres[labels] + 0.3 * rng.standard_normal((300, 8))
    params = maml.init_params((8, 16, 6), 4)
    trained, history = classify.pretrain(params, x, labels, iterations=300, batch=32, lr=1e-2, seed=2)
    assert history.shape == (300,) and history[-20:].mean() < 0.25 * history[:20].mean()
    assert classify.accuracy(trained, x, labels) > 0.95
    again, _ = classify.pretrain(params, x, labels, iterations=300, batch=32, lr=1e-2, seed=2)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(trained, again, strict=True))
    head = classify.with_new_head(trained, 3)
    assert head[0][0] is trained[0][0] and head[-1][0].shape == (3, 16) and not head[-1][0].any()
    probs, _ = classify.predict(head, x[:4])
    assert np.allclose(probs, 1 / 3)
