"""MAML for N-way K-shot classification on a ReLU MLP in float64: the checked public API.

Format
------
Parameters are a list of ``(W, b)`` float64 pairs as in :mod:`metafab.reference.maml`;
the output layer gives one logit per class (``n_out = N >= 2`` classes). Inputs
``x`` are ``(n, in)``, labels integer classes ``(n,)`` in ``[0, N)``; every
function also accepts a leading task axis (``(T, n, in)`` and ``(T, n)``).

Conventions
-----------
* ``loss`` is the mean over samples of the softmax cross-entropy
  ``-log softmax(logits)[label]``; its gradient with respect to the logits is
  ``(p - onehot(label)) / n`` with ``p = softmax(logits)``.
* ``adapt`` is full-batch SGD on the support set. ``layers`` names the layers
  the inner loop updates: ``None`` every layer (MAML), :func:`anil_layers`
  the head only (ANIL: Raghu et al., "Rapid Learning or Feature Reuse?",
  ICLR 2020); the others keep their initial values.
* ``predict`` gives the class probabilities and the predicted class, the
  argmax with ties to the lowest class (as the similarity engine answers).
* The ReLU derivative at 0 is 0 and its second derivative 0, so gradients
  and the second-order meta-gradient are exact wherever no pre-activation is
  exactly 0.

References
----------
C. Finn, P. Abbeel, S. Levine, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", ICML 2017 (second- and first-order MAML);
A. Nichol, J. Achiam, J. Schulman, "On First-Order Meta-Learning
Algorithms", 2018 (Reptile).
"""

from __future__ import annotations

import numpy as np

from metafab.reference import inner_loop, mlp
from metafab.reference.arrays import as_count, as_float_array, as_rate
from metafab.reference.errors import UserError

__all__ = ["loss", "grad", "hvp", "predict", "accuracy", "adapt", "meta_grad", "fomaml_grad", "reptile_grad",
           "anil_layers", "check_layers", "pretrain", "with_new_head"]

Params = list[tuple[np.ndarray, np.ndarray]]
LOSS = inner_loop.SOFTMAX_CE


def anil_layers(n_layers: int) -> tuple[int, ...]:
    """The layers ANIL adapts: the head (the last layer) only."""
    return (as_count("n_layers", n_layers, minimum=1) - 1,)


def check_layers(layers, n_layers: int) -> tuple[int, ...] | None:
    """``layers`` (indices of the layers the inner loop adapts) as a sorted tuple; None stays None (all)."""
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise UserError(f"adapted layers must be a list of layer indices in 0..{n_layers - 1}, got {layers!r}")
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n_layers:
            raise UserError(f"adapted layers must be layer indices in 0..{n_layers - 1}, got {i!r}")
        out.append(int(i))
    if not out:
        raise UserError("adapted layers must name at least one layer (ANIL: the head, "
                        f"{n_layers - 1})")
    return tuple(sorted(set(out)))


def _check(params):
    params, shape = mlp.check_params(params)
    if shape.layers[-1] < 2:
        raise UserError(f"a classifier needs at least 2 classes (N >= 2 outputs), got {shape.layers[-1]}")
    return params, shape


def _check_data(shape: mlp.Shape, x, labels=None, *, x_name: str = "x", labels_name: str = "labels"):
    x = as_float_array(x_name, x, ndims=(2, 3))
    if x.shape[-1] != shape.layers[0]:
        raise UserError(f"{x_name} must have {shape.layers[0]} features per row (the network input width), "
                        f"got shape {x.shape}")
    if shape.n_tasks is not None and x.ndim == 3 and x.shape[0] != shape.n_tasks:
        raise UserError(f"{x_name} has {x.shape[0]} tasks but the parameters are stacked for {shape.n_tasks} tasks")
    if labels is None:
        return x, None
    raw = np.asarray(labels)
    n_classes = shape.layers[-1]
    if raw.dtype.kind not in "iu":
        raise UserError(f"{labels_name} must be integer class labels, got dtype {raw.dtype}")
    if raw.shape != x.shape[:-1]:
        raise UserError(f"{labels_name} must have shape {x.shape[:-1]} (one label per row of {x_name}), "
                        f"got {raw.shape}")
    bad = (raw < 0) | (raw >= n_classes)
    if bad.any():
        raise UserError(f"{labels_name} must lie in 0..{n_classes - 1} (the network's {n_classes} classes), "
                        f"got {raw[bad][0]}")
    return x, raw.astype(np.int64)


def loss(params, x, labels):
    """Mean softmax cross-entropy over the samples (a float; ``(T,)`` with a task axis)."""
    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    value = LOSS.value(mlp.forward_trace(params, x).output, labels)
    return float(value) if np.ndim(value) == 0 else value


def grad(params, x, labels) -> Params:
    """Gradient of :func:`loss` by backprop, shaped like ``params`` (per task with a task axis)."""
    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    grads, _ = inner_loop.support_grad(params, x, labels, LOSS)
    return grads


def hvp(params, x, labels, vec) -> Params:
    """Hessian of :func:`loss` with respect to ``params`` times the direction ``vec`` (R-operator, exact)."""
    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    vec, vec_shape = mlp.check_params(vec, "vec")
    if vec_shape.layers != shape.layers:
        raise UserError(f"vec must have layers {shape.layers} like params, got {vec_shape.layers}")
    trace = mlp.forward_trace(params, x)
    return mlp.loss_hvp(params, trace, vec, LOSS.output_grad(trace.output, labels),
                        lambda r: LOSS.r_output_grad(trace.output, labels, r))


def predict(params, x) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``softmax(logits)`` ``(n, N)`` and the predicted classes ``(n,)`` (argmax, ties
    to the lowest class)."""
    params, shape = _check(params)
    x, _ = _check_data(shape, x)
    z = mlp.forward_trace(params, x).output
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True), np.argmax(z, axis=-1)


def accuracy(params, x, labels) -> float | np.ndarray:
    """Fraction of rows whose predicted class is the label (per task with a task axis)."""
    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    value = np.mean(np.argmax(mlp.forward_trace(params, x).output, axis=-1) == labels, axis=-1)
    return float(value) if np.ndim(value) == 0 else value


def adapt(params, x, labels, steps, lr, *, layers=None) -> Params:
    """``steps`` full-batch SGD steps of size ``lr`` on :func:`loss` of the support set ``(x, labels)``,
    updating only ``layers`` (None: every layer; :func:`anil_layers`: the head)."""
    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    steps = as_count("steps", steps)
    lr = as_rate("lr", lr)
    layers = check_layers(layers, len(params))
    return inner_loop.adapt(params, x, labels, steps, lr, LOSS, layers)


def _check_tasks(params, xs, ls, xq, lq):
    params, shape = _check(params)
    if shape.n_tasks is not None:
        raise UserError("params must be shared initial parameters for a meta-gradient, not task-stacked")
    xs, ls = _check_data(shape, xs, ls, x_name="xs", labels_name="support labels")
    xq, lq = _check_data(shape, xq, lq, x_name="xq", labels_name="query labels")
    if xs.ndim != xq.ndim or (xs.ndim == 3 and xs.shape[0] != xq.shape[0]):
        raise UserError(f"xs and xq must hold the same tasks, got shapes {xs.shape} and {xq.shape}")
    return params, xs, ls, xq, lq


def meta_grad(params, xs, ls, xq, lq, steps, lr, *, first_order: bool = False, layers=None) -> Params:
    """MAML gradient of the query loss after adaptation with respect to the initial ``params``.

    Second order (exact, through every Hessian of the inner loop) unless
    ``first_order``; ``layers`` are the layers the inner loop adapts (ANIL:
    :func:`anil_layers`), the others still get the outer gradient. With a
    task axis, the mean over the tasks.
    """
    params, xs, ls, xq, lq = _check_tasks(params, xs, ls, xq, lq)
    steps = as_count("steps", steps)
    lr = as_rate("lr", lr)
    layers = check_layers(layers, len(params))
    grads, _ = inner_loop.meta_grad_and_loss(params, xs, ls, xq, lq, steps, lr, first_order=bool(first_order),
                                             loss=LOSS, layers=layers)
    return inner_loop.task_mean(grads)


def fomaml_grad(params, xs, ls, xq, lq, steps, lr, *, layers=None) -> Params:
    """First-order MAML: ``meta_grad(..., first_order=True)``."""
    return meta_grad(params, xs, ls, xq, lq, steps, lr, first_order=True, layers=layers)


def reptile_grad(params, xs, ls, steps, lr, *, layers=None) -> Params:
    """Reptile's outer direction ``(theta - mean_tasks adapt(theta)) / (steps lr)`` (steps >= 1, lr > 0)."""
    params, shape = _check(params)
    if shape.n_tasks is not None:
        raise UserError("params must be shared initial parameters for a meta-gradient, not task-stacked")
    xs, ls = _check_data(shape, xs, ls, x_name="xs", labels_name="support labels")
    steps = as_count("steps", steps, minimum=1)
    lr = as_rate("lr", lr, positive=True)
    layers = check_layers(layers, len(params))
    phi = inner_loop.task_mean(inner_loop.adapt(params, xs, ls, steps, lr, LOSS, layers))
    scale = 1.0 / (steps * lr)
    return [(scale * (w - pw), scale * (b - pb)) for (w, b), (pw, pb) in zip(params, phi, strict=True)]


def pretrain(params, x, labels, *, iterations: int, batch: int = 256, lr: float = 1e-3, seed: int = 0,
             progress=None, progress_every: int = 250) -> tuple[Params, np.ndarray]:
    """The pretrained baseline's training: the softmax cross-entropy of one classifier over all the classes of
    ``(x, labels)`` (e.g. every meta-train class), Adam on minibatches of ``batch`` rows drawn with
    replacement from ``default_rng(seed)``. Returns the parameters and the loss of every minibatch.

    For an episode, :func:`with_new_head` swaps the head for an N-way one, which :func:`adapt` then
    fine-tunes on the support set (Finn et al. 2017's "pretrained" comparison).
    """
    from metafab.reference.adam import Adam

    params, shape = _check(params)
    x, labels = _check_data(shape, x, labels)
    iterations = as_count("iterations", iterations)
    batch = as_count("batch", batch, minimum=1)
    lr = as_rate("lr", lr, positive=True)
    rng = np.random.default_rng(as_count("seed", seed))
    opt = Adam(lr=lr)
    history = np.empty(iterations)
    for it in range(iterations):
        rows = rng.integers(0, len(x), batch)
        grads, trace = inner_loop.support_grad(params, x[rows], labels[rows], LOSS)
        history[it] = float(LOSS.value(trace.output, labels[rows]))
        params = opt.step(params, grads)
        if progress is not None and ((it + 1) % progress_every == 0 or it + 1 == iterations):
            progress(it + 1, float(history[max(0, it + 1 - progress_every): it + 1].mean()))
    return params, history


def with_new_head(params, n_way: int) -> Params:
    """``params`` with the last layer replaced by a zero ``n_way``-way head (weights and biases 0): every
    class starts equally likely and fine-tuning learns the head first."""
    params, _ = mlp.check_params(params)
    n_way = as_count("n_way", n_way, minimum=2)
    w, _ = params[-1]
    return [*params[:-1], (np.zeros((n_way, w.shape[-1])), np.zeros(n_way))]
