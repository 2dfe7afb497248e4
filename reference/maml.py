"""MAML on a ReLU MLP in float64: the checked public API.

Format
------
Parameters are a list of ``(W, b)`` float64 pairs, ``W`` of shape ``(out, in)``
and ``b`` of shape ``(out,)``; hidden layers apply ReLU, the output layer is
linear. Inputs ``x`` are ``(n, in)``, targets ``y`` are ``(n, out)``.

Every function also accepts a leading *task* axis: data of shape
``(T, n, in)`` / ``(T, n, out)`` and, where parameters are adapted per task,
task-stacked parameters (``W`` of ``(T, out, in)``, ``b`` of ``(T, out)``).
Shared parameters broadcast over the tasks.

Conventions
-----------
* ``loss`` is the mean over samples and outputs of the squared error.
* The ReLU derivative at exactly 0 is taken as 0, and its second derivative
  as 0 everywhere. Gradients and the second-order meta-gradient are therefore
  exact wherever no pre-activation equals 0 (a measure-zero set for real data).
* ``adapt`` is plain full-batch SGD: ``theta <- theta - lr * grad loss(theta)``.

References
----------
C. Finn, P. Abbeel, S. Levine, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", ICML 2017.
"""

from __future__ import annotations

import numpy as np

from metafab.reference import inner_loop, mlp
from metafab.reference.arrays import as_count, as_float_array, as_rate
from metafab.reference.errors import UserError

__all__ = [
    "init_params",
    "forward",
    "loss",
    "grad",
    "hvp",
    "inner_step",
    "adapt",
    "meta_grad",
    "fomaml_grad",
]

Params = list[tuple[np.ndarray, np.ndarray]]


def init_params(layers, seed: int) -> Params:
    """He-normal initial parameters for an MLP with the given layer widths.

    Parameters
    ----------
    layers : sequence of int
        Widths from input to output, e.g. ``(1, 40, 40, 1)``; at least two.
    seed : int
        Seed of the :func:`numpy.random.default_rng` that draws the weights.

    Returns
    -------
    list of (W, b)
        ``W`` float64 ``(out, in)`` with std ``sqrt(2 / in)``, ``b`` zeros.
    """
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) < 2:
        raise UserError(f"layers must be a sequence of at least two widths, got {layers!r}")
    widths = tuple(as_count(f"layers[{i}]", n, minimum=1) for i, n in enumerate(layers))
    seed = as_count("seed", seed)
    return mlp.init_params(widths, np.random.default_rng(seed))


def _check_data(
    shape: mlp.Shape, x, y=None, *, x_name: str = "x", y_name: str = "y"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``x`` (and ``y``) against the parameter shape; returns float64 arrays."""
    x = as_float_array(x_name, x, ndims=(2, 3))
    if x.shape[-1] != shape.layers[0]:
        raise UserError(
            f"{x_name} must have {shape.layers[0]} features per row (the network input width), "
            f"got shape {x.shape}"
        )
    if shape.n_tasks is not None and x.ndim == 3 and x.shape[0] != shape.n_tasks:
        raise UserError(
            f"{x_name} has {x.shape[0]} tasks but the parameters are stacked for "
            f"{shape.n_tasks} tasks"
        )
    if y is None:
        return x, None
    y = as_float_array(y_name, y, ndims=(2, 3))
    want = x.shape[:-1] + (shape.layers[-1],)
    if y.shape != want:
        raise UserError(
            f"{y_name} must have shape {want} ({x_name} rows x network outputs), got {y.shape}"
        )
    return x, y


def forward(params, x) -> np.ndarray:
    """Network output for the rows of ``x``: float64 ``(n, out)`` (or ``(T, n, out)``)."""
    params, shape = mlp.check_params(params)
    x, _ = _check_data(shape, x)
    return mlp.forward_trace(params, x).output


def loss(params, x, y):
    """Mean squared error over samples and outputs.

    Returns
    -------
    float or numpy.ndarray
        A float for one task; a float64 ``(T,)`` array with a task axis.
    """
    params, shape = mlp.check_params(params)
    x, y = _check_data(shape, x, y)
    value = mlp.mse(mlp.forward_trace(params, x).output, y)
    return float(value) if np.ndim(value) == 0 else value


def grad(params, x, y) -> Params:
    """Gradient of :func:`loss` by backprop, as a list of ``(dW, db)`` like ``params``.

    With a task axis the gradients are per task (task-stacked).
    """
    params, shape = mlp.check_params(params)
    x, y = _check_data(shape, x, y)
    grads, _ = inner_loop.support_grad(params, x, y)
    return grads


def hvp(params, x, y, vec) -> Params:
    """Hessian of :func:`loss` with respect to ``params``, times the direction ``vec``.

    ``vec`` has the structure of ``params``. Computed exactly by a forward pass
    of directional derivatives and a backward pass (Pearlmutter's R-operator).
    """
    params, shape = mlp.check_params(params)
    x, y = _check_data(shape, x, y)
    vec, vec_shape = mlp.check_params(vec, "vec")
    if vec_shape.layers != shape.layers:
        raise UserError(f"vec must have layers {shape.layers} like params, got {vec_shape.layers}")
    return mlp.mse_hvp(params, mlp.forward_trace(params, x), y, vec)


def inner_step(params, x, y, lr) -> Params:
    """One full-batch SGD step ``theta - lr * grad loss(theta)``."""
    return adapt(params, x, y, 1, lr)


def adapt(params, x, y, steps, lr) -> Params:
    """``steps`` full-batch SGD steps of learning rate ``lr`` on ``loss(params, x, y)``.

    Parameters
    ----------
    params : list of (W, b)
        Initial parameters (shared or task-stacked).
    x, y : array_like
        Support set, ``(K, in)`` and ``(K, out)``, or ``(T, K, in)`` and ``(T, K, out)``.
    steps : int
        Number of SGD steps, ``>= 0`` (0 returns the parameters unchanged).
    lr : float
        Finite step size ``>= 0``.

    Returns
    -------
    list of (W, b)
        Adapted parameters; task-stacked if ``x`` has a task axis and ``steps > 0``.
    """
    params, shape = mlp.check_params(params)
    x, y = _check_data(shape, x, y)
    steps = as_count("steps", steps)
    lr = as_rate("lr", lr)
    return inner_loop.adapt(params, x, y, steps, lr)


def meta_grad(params, xs, ys, xq, yq, steps, lr, *, first_order: bool = False) -> Params:
    """MAML gradient: derivative of the query loss after adaptation w.r.t. the initial params.

    Computes ``d/d theta loss(adapt(theta, xs, ys, steps, lr), xq, yq)``
    exactly (second order, through every Hessian of the inner loop), or the
    first-order approximation ``grad loss(adapt(theta, ...), xq, yq)`` when
    ``first_order`` is true.

    Parameters
    ----------
    params : list of (W, b)
        Shared initial parameters (not task-stacked).
    xs, ys : array_like
        Support set ``(K, in)`` / ``(K, out)``, or a meta-batch ``(T, K, in)`` / ``(T, K, out)``.
    xq, yq : array_like
        Query set ``(Q, in)`` / ``(Q, out)``, or ``(T, Q, in)`` / ``(T, Q, out)``.
    steps : int
        Inner SGD steps, ``>= 0``.
    lr : float
        Inner step size, finite, ``>= 0``.
    first_order : bool
        Drop the Hessian terms (first-order MAML).

    Returns
    -------
    list of (W, b)
        The gradient, shaped like ``params``; for a meta-batch, the mean over
        tasks (the gradient of the mean query loss).
    """
    params, shape = mlp.check_params(params)
    if shape.n_tasks is not None:
        raise UserError("params must be shared initial parameters for meta_grad, not task-stacked")
    xs, ys = _check_data(shape, xs, ys, x_name="xs", y_name="ys")
    xq, yq = _check_data(shape, xq, yq, x_name="xq", y_name="yq")
    if xs.ndim != xq.ndim or (xs.ndim == 3 and xs.shape[0] != xq.shape[0]):
        raise UserError(f"xs and xq must hold the same tasks, got shapes {xs.shape} and {xq.shape}")
    steps = as_count("steps", steps)
    lr = as_rate("lr", lr)
    grads, _ = inner_loop.meta_grad_and_loss(
        params, xs, ys, xq, yq, steps, lr, first_order=bool(first_order)
    )
    return inner_loop.task_mean(grads)


def fomaml_grad(params, xs, ys, xq, yq, steps, lr) -> Params:
    """First-order MAML gradient: ``meta_grad(..., first_order=True)``."""
    return meta_grad(params, xs, ys, xq, yq, steps, lr, first_order=True)
