"""Float64 MAML reference: backprop, Hessian-vector products, meta-gradients vs differences."""

import re

import numpy as np
import pytest

from metafab.reference import inner_loop, maml, mlp
from metafab.reference.errors import UserError

ARCHITECTURES = [(1, 40, 40, 1), (3, 5, 2), (2, 3, 3, 3, 3, 4), (4, 6, 3)]
EPS = 1e-6


def flat(params):
    return np.concatenate([np.concatenate([w.ravel(), b.ravel()]) for w, b in params])


def unflat(vector, like):
    out, i = [], 0
    for w, b in like:
        j = i + w.size
        out.append((vector[i:j].reshape(w.shape), vector[j : j + b.size].reshape(b.shape)))
        i = j + b.size
    return out


def central_difference(f, theta):
    """Gradient of scalar f at theta by central differences, one coordinate at a time."""
    g = np.empty_like(theta)
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = EPS
        g[j] = (f(theta + step) - f(theta - step)) / (2 * EPS)
    return g


def rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def kink_margin(params, *xs):
    """Smallest |pre-activation| of any hidden unit on any of the inputs."""
    margins = [np.abs(z).min() for x in xs for z in mlp.forward_trace(params, x).pre[:-1]]
    return min(margins) if margins else np.inf


def problem(layers, seed, n_support=7, n_query=6, steps=0, lr=0.05):
    """Random net and data whose ReLUs are at least 1e-3 away from their kink.

    Checks every parameter vector the inner loop visits, so finite differences
    never straddle a kink.
    """
    for attempt in range(100):
        rng = np.random.default_rng(1000 * seed + attempt)
        params = [
            (w, 0.1 * rng.standard_normal(b.shape))
            for w, b in maml.init_params(layers, seed + attempt)
        ]
        xs = rng.standard_normal((n_support, layers[0]))
        ys = rng.standard_normal((n_support, layers[-1]))
        xq = rng.standard_normal((n_query, layers[0]))
        yq = rng.standard_normal((n_query, layers[-1]))
        thetas = [params]
        for _ in range(steps):
            thetas.append(maml.inner_step(thetas[-1], xs, ys, lr))
        if min(kink_margin(t, xs, xq) for t in thetas) > 1e-3:
            return params, xs, ys, xq, yq
    raise AssertionError("no kink-free problem found")


@pytest.mark.parametrize("layers", ARCHITECTURES)
def test_grad_matches_central_differences(layers):
    params, x, y, _, _ = problem(layers, seed=1)
    fd = central_difference(lambda v: maml.loss(unflat(v, params), x, y), flat(params))
    assert rel_err(flat(maml.grad(params, x, y)), fd) < 1e-6


@pytest.mark.parametrize("layers", ARCHITECTURES)
def test_hvp_matches_differences_of_the_gradient(layers):
    params, x, y, _, _ = problem(layers, seed=2)
    rng = np.random.default_rng(3)
    v = [(rng.standard_normal(w.shape), rng.standard_normal(b.shape)) for w, b in params]
    plus = [(w + EPS * vw, b + EPS * vb) for (w, b), (vw, vb) in zip(params, v, strict=True)]
    minus = [(w - EPS * vw, b - EPS * vb) for (w, b), (vw, vb) in zip(params, v, strict=True)]
    fd = (flat(maml.grad(plus, x, y)) - flat(maml.grad(minus, x, y))) / (2 * EPS)
    assert rel_err(flat(maml.hvp(params, x, y, v)), fd) < 1e-6


@pytest.mark.parametrize("layers", ARCHITECTURES)
@pytest.mark.parametrize("steps", [1, 2])
def test_meta_grad_matches_differences_of_the_adapted_query_loss(layers, steps):
    lr = 0.05
    params, xs, ys, xq, yq = problem(layers, seed=4, steps=steps, lr=lr)

    def query_loss_after_adaptation(v):
        return maml.loss(maml.adapt(unflat(v, params), xs, ys, steps, lr), xq, yq)

    fd = central_difference(query_loss_after_adaptation, flat(params))
    exact = flat(maml.meta_grad(params, xs, ys, xq, yq, steps, lr))
    assert rel_err(exact, fd) < 1e-6


@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_is_the_query_gradient_at_the_adapted_params(steps):
    lr = 0.05
    params, xs, ys, xq, yq = problem((3, 5, 2), seed=5, steps=steps, lr=lr)
    fo = maml.fomaml_grad(params, xs, ys, xq, yq, steps, lr)
    assert np.array_equal(
        flat(fo), flat(maml.meta_grad(params, xs, ys, xq, yq, steps, lr, first_order=True))
    )
    adapted = maml.adapt(params, xs, ys, steps, lr)
    assert rel_err(flat(fo), flat(maml.grad(adapted, xq, yq))) < 1e-12
    second = flat(maml.meta_grad(params, xs, ys, xq, yq, steps, lr))
    assert rel_err(flat(fo), second) > 1e-3


def test_zero_steps_meta_grad_is_the_plain_query_gradient():
    params, xs, ys, xq, yq = problem((2, 4, 1), seed=6)
    assert (
        rel_err(
            flat(maml.meta_grad(params, xs, ys, xq, yq, 0, 0.1)), flat(maml.grad(params, xq, yq))
        )
        < 1e-12
    )


def test_meta_batch_gradient_is_the_mean_of_task_gradients():
    rng = np.random.default_rng(7)
    params = maml.init_params((1, 8, 8, 1), 7)
    xs, ys = rng.uniform(-2, 2, (4, 5, 1)), rng.standard_normal((4, 5, 1))
    xq, yq = rng.uniform(-2, 2, (4, 6, 1)), rng.standard_normal((4, 6, 1))
    batch = flat(maml.meta_grad(params, xs, ys, xq, yq, 2, 0.05))
    single = np.mean(
        [flat(maml.meta_grad(params, xs[t], ys[t], xq[t], yq[t], 2, 0.05)) for t in range(4)],
        axis=0,
    )
    assert rel_err(batch, single) < 1e-12


def test_task_stacked_adaptation_matches_one_task_at_a_time():
    rng = np.random.default_rng(8)
    params = maml.init_params((1, 6, 1), 8)
    x, y = rng.standard_normal((3, 5, 1)), rng.standard_normal((3, 5, 1))
    stacked = maml.adapt(params, x, y, 3, 0.05)
    for t in range(3):
        one = maml.adapt(params, x[t], y[t], 3, 0.05)
        assert rel_err(flat([(w[t], b[t]) for w, b in stacked]), flat(one)) < 1e-12
    losses = maml.loss(stacked, x, y)
    assert losses.shape == (3,)


def test_loss_is_mean_squared_error_over_samples_and_outputs():
    # one linear layer y = W x + b with W = [[1, 2], [0, 1]], b = [0, 1]
    params = [(np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([0.0, 1.0]))]
    x = np.array([[1.0, 1.0], [0.0, 2.0]])  # outputs [[3, 2], [4, 3]]
    y = np.array([[3.0, 0.0], [1.0, 3.0]])  # errors [[0, 2], [3, 0]]
    assert maml.loss(params, x, y) == pytest.approx((0 + 4 + 9 + 0) / 4)
    np.testing.assert_array_equal(maml.forward(params, x), [[3.0, 2.0], [4.0, 3.0]])


def test_relu_derivative_at_zero_is_zero():
    # hidden pre-activation exactly 0: no gradient flows to the first layer
    params = [(np.array([[1.0]]), np.array([-1.0])), (np.array([[2.0]]), np.array([0.0]))]
    g = maml.grad(params, np.array([[1.0]]), np.array([[1.0]]))
    assert g[0][0][0, 0] == 0.0 and g[0][1][0] == 0.0
    assert g[1][1][0] == -2.0  # d/db of (0 + b - 1)^2 at b = 0


def test_adapt_is_plain_sgd():
    params, x, y, _, _ = problem((3, 5, 2), seed=9)
    g = maml.grad(params, x, y)
    stepped = maml.adapt(params, x, y, 1, 0.1)
    expected = [(w - 0.1 * gw, b - 0.1 * gb) for (w, b), (gw, gb) in zip(params, g, strict=True)]
    assert np.array_equal(flat(stepped), flat(expected))
    assert np.array_equal(flat(maml.adapt(params, x, y, 0, 0.1)), flat(params))


def test_init_params_is_seeded_and_shaped():
    a, b = maml.init_params((1, 40, 40, 1), 3), maml.init_params([1, 40, 40, 1], 3)
    assert [w.shape for w, _ in a] == [(40, 1), (40, 40), (1, 40)]
    assert np.array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(maml.init_params((1, 40, 40, 1), 4)))
    assert all(w.dtype == np.float64 and not bias.any() for w, bias in a)


def test_inner_loop_math_matches_checked_api():
    params, xs, ys, xq, yq = problem((2, 4, 1), seed=10, steps=1)
    grads, q_loss = inner_loop.meta_grad_and_loss(params, xs, ys, xq, yq, 1, 0.05)
    assert np.array_equal(flat(grads), flat(maml.meta_grad(params, xs, ys, xq, yq, 1, 0.05)))
    assert float(q_loss) == maml.loss(maml.adapt(params, xs, ys, 1, 0.05), xq, yq)


GOOD = maml.init_params((2, 3, 1), 0)
X = np.zeros((4, 2))
Y = np.zeros((4, 1))


def nan_at(a, index=0):
    a = np.array(a, dtype=float)
    a.flat[index] = np.nan
    return a


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: maml.forward(GOOD, np.zeros((4, 3))), "x"),
        (lambda: maml.forward(GOOD, np.zeros(4)), "x"),
        (lambda: maml.forward(GOOD, nan_at(X)), "x"),
        (lambda: maml.forward(GOOD, np.full((4, 2), np.inf)), "x"),
        (lambda: maml.loss(GOOD, X, np.zeros((4, 2))), "y"),
        (lambda: maml.loss(GOOD, X, np.zeros((3, 1))), "y"),
        (lambda: maml.grad(GOOD, X, nan_at(Y)), "y"),
        (lambda: maml.forward([(nan_at(GOOD[0][0]), GOOD[0][1]), GOOD[1]], X), "params[0] W"),
        (lambda: maml.forward([GOOD[0], (np.zeros((1, 4)), GOOD[1][1])], X), "params[1] W"),
        (lambda: maml.forward([GOOD[0], (GOOD[1][0], np.zeros(2))], X), "params[1] b"),
        (lambda: maml.forward([], X), "params"),
        (lambda: maml.adapt(GOOD, X, Y, -1, 0.1), "steps"),
        (lambda: maml.adapt(GOOD, X, Y, 1.5, 0.1), "steps"),
        (lambda: maml.adapt(GOOD, X, Y, 1, np.nan), "lr"),
        (lambda: maml.adapt(GOOD, X, Y, 1, np.inf), "lr"),
        (lambda: maml.adapt(GOOD, X, Y, 1, -0.1), "lr"),
        (lambda: maml.meta_grad(GOOD, X, Y, X, Y, -2, 0.1), "steps"),
        (lambda: maml.meta_grad(GOOD, X, Y, X, Y, 1, float("nan")), "lr"),
        (lambda: maml.meta_grad(GOOD, X, Y, np.zeros((4, 5)), Y, 1, 0.1), "xq"),
        (lambda: maml.meta_grad(GOOD, X, Y, X, np.zeros((5, 1)), 1, 0.1), "yq"),
        (lambda: maml.meta_grad(GOOD, np.zeros((0, 2)), Y, X, Y, 1, 0.1), "xs"),
        (
            lambda: maml.meta_grad(GOOD, X, Y, np.zeros((2, 4, 2)), np.zeros((2, 4, 1)), 1, 0.1),
            "xs and xq",
        ),
        (lambda: maml.hvp(GOOD, X, Y, maml.init_params((2, 4, 1), 0)), "vec"),
        (lambda: maml.init_params((2,), 0), "layers"),
        (lambda: maml.init_params((2, 0, 1), 0), "layers[1]"),
        (lambda: maml.init_params((2, 3, 1), -1), "seed"),
    ],
)
def test_bad_input_raises_a_user_error_naming_it(call, name):
    with pytest.raises(UserError, match="^" + re.escape(name)):
        call()
    assert issubclass(UserError, ValueError)
