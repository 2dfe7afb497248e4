"""The float64 math of a ReLU multilayer perceptron: forward, backprop, Hessian-vector product.

Parameters are a list of ``(W, b)`` pairs, ``W`` of shape ``(out, in)`` and
``b`` of shape ``(out,)``; hidden layers apply ReLU, the output layer is
linear. Every array may carry one extra leading *task* axis (``W`` of shape
``(T, out, in)``, ``b`` of ``(T, out)``, inputs of ``(T, n, in)``); numpy
broadcasting then evaluates ``T`` independent networks at once, which is how
meta-training runs a whole meta-batch in one pass.

The ReLU derivative is taken as 0 at exactly 0 (``relu'(z) = [z > 0]``) and its
second derivative as 0 everywhere, so the Hessian-vector product below is the
exact Hessian of the loss wherever no pre-activation is exactly 0.

The math functions do not check their inputs; :func:`check_params` validates a
parameter list, and :mod:`metafab.reference.maml` and
:mod:`metafab.reference.embedding` are the checked public entry points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metafab.reference.arrays import as_float_array
from metafab.reference.errors import UserError

__all__ = [
    "Trace",
    "Shape",
    "check_params",
    "init_params",
    "forward_trace",
    "backward",
    "mse",
    "mse_output_grad",
    "mse_r_output_grad",
    "mse_hvp",
    "one_hot",
    "softmax_ce",
    "softmax_ce_output_grad",
    "softmax_ce_r_output_grad",
    "loss_hvp",
]

Params = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Trace:
    """What a forward pass keeps for backprop.

    Attributes
    ----------
    inputs : list of numpy.ndarray
        The input of each layer, ``inputs[0]`` is the network input.
    pre : list of numpy.ndarray
        The pre-activation ``z = a W^T + b`` of each layer; ``pre[-1]`` is the
        network output.
    """

    inputs: list[np.ndarray]
    pre: list[np.ndarray]

    @property
    def output(self) -> np.ndarray:
        return self.pre[-1]


@dataclass(frozen=True)
class Shape:
    """Layer widths of a parameter list and its task count (``None`` if not task-stacked)."""

    layers: tuple[int, ...]
    n_tasks: int | None


def check_params(params, name: str = "params") -> tuple[Params, Shape]:
    """Validate a list of ``(W, b)`` pairs and return it as float64 arrays with its shape.

    ``W`` must be ``(out, in)`` (or ``(T, out, in)``), ``b`` ``(out,)`` (or
    ``(T, out)``), consecutive layers must chain (``in`` of layer ``i + 1`` equals
    ``out`` of layer ``i``), all finite; the task-stacked layers all for the same task count (plain
    layers among them are shared by every task).

    Raises
    ------
    UserError
        Naming the offending layer and array.
    """
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)) or not params:
        raise UserError(f"{name} must be a non-empty list of (W, b) pairs, got {params!r:.80}")
    checked = []
    layers: list[int] = []
    n_tasks: set[int | None] = set()
    for i, pair in enumerate(params):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise UserError(f"{name}[{i}] must be a (W, b) pair, got {pair!r:.80}")
        w = as_float_array(f"{name}[{i}] W", pair[0], ndims=(2, 3))
        b = as_float_array(f"{name}[{i}] b", pair[1], ndims=(1, 2))
        tasks = w.shape[0] if w.ndim == 3 else None
        if b.shape != w.shape[:-1]:
            raise UserError(
                f"{name}[{i}] b must have shape {w.shape[:-1]} to match W of shape {w.shape}, "
                f"got {b.shape}"
            )
        if layers and w.shape[-1] != layers[-1]:
            raise UserError(
                f"{name}[{i}] W must have {layers[-1]} inputs (layer {i - 1} has {layers[-1]} "
                f"outputs), got shape {w.shape}"
            )
        if not layers:
            layers.append(w.shape[-1])
        layers.append(w.shape[-2])
        n_tasks.add(tasks)
        checked.append((w, b))
    stacked = n_tasks - {None}
    if len(stacked) > 1:
        raise UserError(f"{name} stacks its layers for different task counts {sorted(stacked)}")
    # plain layers next to task-stacked ones are shared by every task (ANIL adapts only some layers)
    return checked, Shape(tuple(layers), stacked.pop() if stacked else None)


def _t(w: np.ndarray) -> np.ndarray:
    """Transpose the last two axes (``W^T`` for a plain or a task-stacked weight)."""
    return np.swapaxes(w, -1, -2)


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; a task-stacked ``a`` times a shared ``b`` runs as one matrix product."""
    if b.ndim == 2 and a.ndim == 3:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + b.shape[-1:])
    return a @ b


def init_params(layers: tuple[int, ...], rng: np.random.Generator) -> Params:
    """He-normal weights (std ``sqrt(2 / in)``) and zero biases, drawn layer by layer."""
    params = []
    for n_in, n_out in zip(layers[:-1], layers[1:], strict=True):
        w = rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
        params.append((w, np.zeros(n_out)))
    return params


def forward_trace(params: Params, x: np.ndarray) -> Trace:
    """Run the network on rows of ``x`` and keep every layer's input and pre-activation."""
    inputs, pre = [], []
    a = x
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        inputs.append(a)
        z = _mm(a, _t(w)) + b[..., None, :]
        pre.append(z)
        if i < last:
            a = np.maximum(z, 0.0)
    return Trace(inputs, pre)


def backward(params: Params, trace: Trace, d_output: np.ndarray) -> Params:
    """Backprop ``d_output`` = dL/d(output) to dL/dW and dL/db for every layer."""
    grads = [None] * len(params)
    delta = d_output
    for i in range(len(params) - 1, -1, -1):
        grads[i] = (_t(delta) @ trace.inputs[i], delta.sum(axis=-2))
        if i > 0:
            delta = _mm(delta, params[i][0]) * (trace.pre[i - 1] > 0)
    return grads


def mse(output: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over samples and outputs of ``(output - y)**2`` (one value per task)."""
    return np.mean((output - y) ** 2, axis=(-2, -1))


def mse_output_grad(output: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/d(output) of :func:`mse`: ``2 (output - y) / (n * out)``."""
    n, m = output.shape[-2:]
    return (2.0 / (n * m)) * (output - y)


def mse_r_output_grad(output: np.ndarray, y, r_output: np.ndarray) -> np.ndarray:
    """Directional derivative of :func:`mse_output_grad` along ``r_output`` (the output's own one)."""
    n, m = output.shape[-2:]
    return (2.0 / (n * m)) * r_output


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """float64 one-hot rows of integer ``labels`` (any leading shape), ``n_classes`` wide."""
    return (np.asarray(labels)[..., None] == np.arange(n_classes)).astype(np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_ce(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean over samples of the softmax cross-entropy ``-log softmax(output)[label]`` (one value per task).

    ``output`` holds the logits ``(n, C)`` (or ``(T, n, C)``), ``labels`` integer classes ``(n,)``
    (or ``(T, n)``).
    """
    shifted = output - output.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, np.asarray(labels)[..., None], axis=-1)[..., 0]
    return -picked.mean(axis=-1)


def softmax_ce_output_grad(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """dL/d(logits) of :func:`softmax_ce`: ``(softmax(output) - onehot(labels)) / n``."""
    n, c = output.shape[-2:]
    return (_softmax(output) - one_hot(labels, c)) / n


def softmax_ce_r_output_grad(output: np.ndarray, labels, r_output: np.ndarray) -> np.ndarray:
    """Directional derivative of :func:`softmax_ce_output_grad` along ``r_output``:
    ``(diag(p) - p p^T) r / n`` row by row, ``p = softmax(output)``."""
    n = output.shape[-2]
    p = _softmax(output)
    return (p * r_output - p * (p * r_output).sum(axis=-1, keepdims=True)) / n


def mse_hvp(params: Params, trace: Trace, y: np.ndarray, vec: Params) -> Params:
    """Hessian of the MSE loss at ``params`` times the direction ``vec`` (:func:`loss_hvp`)."""
    return loss_hvp(params, trace, vec, mse_output_grad(trace.output, y),
                    lambda r_out: mse_r_output_grad(trace.output, y, r_out))


def loss_hvp(params: Params, trace: Trace, vec: Params, d_output: np.ndarray, r_output_grad) -> Params:
    """Hessian of a loss of the network's output at ``params`` times the direction ``vec``.

    Pearlmutter's R-operator by hand: a forward pass of directional
    derivatives ``R{z}``, ``R{a}`` along ``vec``, then a backward pass of
    ``R{delta}``. ``trace`` must come from ``forward_trace(params, x)``;
    ``d_output`` is the loss's gradient with respect to the output there and
    ``r_output_grad(r_out)`` that gradient's directional derivative along an
    output direction ``r_out`` (the loss's own Hessian times ``r_out``).
    """
    n_layers = len(params)
    masks = [z > 0 for z in trace.pre[:-1]]
    # Forward: R{z_l} = R{a_{l-1}} W^T + a_{l-1} V^T + v_b,  R{a_l} = relu'(z_l) R{z_l}.
    r_inputs = [None]
    r_pre = []
    for i, ((w, _), (v, vb)) in enumerate(zip(params, vec, strict=True)):
        r_z = _mm(trace.inputs[i], _t(v)) + vb[..., None, :]
        if r_inputs[i] is not None:
            r_z = r_z + _mm(r_inputs[i], _t(w))
        r_pre.append(r_z)
        if i < n_layers - 1:
            r_inputs.append(r_z * masks[i])
    # Backward: delta and R{delta} together.
    delta = d_output
    r_delta = r_output_grad(r_pre[-1])
    out = [None] * n_layers
    for i in range(n_layers - 1, -1, -1):
        h_w = _t(r_delta) @ trace.inputs[i]
        if r_inputs[i] is not None:
            h_w = h_w + _t(delta) @ r_inputs[i]
        out[i] = (h_w, r_delta.sum(axis=-2))
        if i > 0:
            w, v = params[i][0], vec[i][0]
            r_delta = (_mm(r_delta, w) + _mm(delta, v)) * masks[i - 1]
            delta = _mm(delta, w) * masks[i - 1]
    return out
