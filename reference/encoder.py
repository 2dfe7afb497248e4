"""Few-shot encoders: the network in front of the Prototypical / Matching read-out, float64 and fixed point.

Matching Networks (Vinyals et al. 2016) and Prototypical Networks (Snell et al.
2017) spend their compute in the encoder that embeds every support and query
sample; the similarity engine (:mod:`metafab.reference.match_fixed`) does only
the read-out. This module defines the encoder and its bit-exact fixed-point
model, written as the matrix products the MAML engine's lanes compute, so that
a hardware engine can run it on chip and be checked against it.

Encoder
-------
An :class:`EncoderSpec` is a sequence of layers over a ``C x H x W`` input
(glyphs: ``1 x 16 x 16``):

``conv3x3``
    ``C_in -> C_out`` channels, stride 1, zero padding 1, a bias per output
    channel. Written as one matrix product per image,
    ``Z = W (C_out x 9 C_in) @ P (9 C_in x H W) + b``, where the *patch
    matrix* ``P`` (im2col) has row ``c * 9 + ky * 3 + kx`` and column
    ``y * W + x`` holding ``x_padded[c, y + ky, x + kx]`` (``W[o, c, ky, kx]``
    row-major is the matching weight row).
``relu``
    ``max(z, 0)``, element-wise.
``maxpool2x2``
    the maximum of each 2x2 window, stride 2 (``H`` and ``W`` must be even).
``flatten``
    ``(C, H, W)`` to ``C H W`` features, row-major (feature ``c H W + y W + x``).
``dense``
    ``in -> out`` with a bias: ``z = W a + b``.

The string form joins tokens with ``-``: ``c<N>`` a conv to ``N`` channels
followed by ReLU (``c<N>l``: without), ``p`` a max-pool, ``d<N>`` a dense layer
of width ``N``, followed by ReLU unless it is the last layer (``d<N>l``: a
linear hidden layer). A ``flatten`` goes before the first dense layer, and the
last layer is always a linear dense layer: its width is the embedding
dimension ``D``. ``"c8-p-c16-p-d64"`` is conv(1->8)+ReLU, pool, conv(8->16)+ReLU,
pool, flatten, dense(256->64); ``"d128-d64"`` is flatten, dense(256->128)+ReLU,
dense(128->64).

Parameters are a list of ``(W, b)`` float64 pairs, one per conv or dense
layer: ``W`` of shape ``(C_out, C_in, 3, 3)`` (conv) or ``(out, in)``
(dense), ``b`` of shape ``(C_out,)`` / ``(out,)``.

Fixed point (:class:`EncoderConfig`, :func:`encode_fixed`)
----------------------------------------------------------
Input pixels and every activation are ``act_fmt`` codes; weights and biases
are ``weight_fmt`` codes stored *augmented* as ``[W | b]``: a conv layer as
the ``C_out x (9 C_in + 1)`` matrix, a dense layer as ``out x (in + 1)``,
exactly as :mod:`metafab.reference.maml_fixed` stores a dense layer. Each conv
or dense layer is one rounding point:

``z = round(W_aug @ [P; 1])`` (conv) or ``z = round(W_aug @ [a; 1])`` (dense)
    every product exact, summed exactly in ``acc_fmt`` (the config checks
    that the worst case fits, so the sum never wraps and the order of
    accumulation does not matter), then resized once into ``act_fmt`` with
    the ``rounding`` mode (:func:`metafab.reference.fixed.resize`) and
    saturated; the constant-1 row is the code ``2**F_act``.

ReLU and max-pool are exact on codes (they commute, both being monotone, so
``pool(relu(z)) == relu(pool(z))`` bit for bit). The last layer's output codes
are the read-out's embeddings: ``act_fmt`` is the read-out's ``emb_fmt``
(:attr:`EncoderConfig.match`), so they go to
:func:`metafab.reference.match_fixed.prepare` and
:func:`~metafab.reference.match_fixed.readout` unchanged
(:func:`fewshot_fixed`).

Weights files
-------------
:func:`save_encoder` writes the format of :mod:`metafab.reference.weights`
(``W0, b0, W1, ...`` float64 members and a JSON ``metadata`` string, stored
uncompressed with fixed timestamps, so the same parameters give the same
bytes); the metadata holds the spec. The conv weights are 4-D, which the MLP
loader of :mod:`metafab.reference.weights` does not accept, so encoder files
are read with :func:`load_encoder` / :func:`load_glyph_encoder`.

References
----------
O. Vinyals, C. Blundell, T. Lillicrap, K. Kavukcuoglu, D. Wierstra,
"Matching Networks for One Shot Learning", NeurIPS 2016.
J. Snell, K. Swersky, R. Zemel, "Prototypical Networks for Few-shot
Learning", NeurIPS 2017.
K. He, X. Zhang, S. Ren, J. Sun, "Delving Deep into Rectifiers", ICCV 2015
(the initialisation).
"""

from __future__ import annotations

import importlib.resources
import io
import json
import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference import match_fixed
from metafab.reference.arrays import as_count, as_float_array
from metafab.reference.config import MatchConfig, _check_int, _choice, _ConfigBase, _fmt
from metafab.reference.errors import UserError
from metafab.reference.files import write_whole
from metafab.reference.fixed import MAX_OPERAND_WIDTH, Overflow, QFormat, Rounding

__all__ = [
    "LAYER_KINDS",
    "LayerSpec",
    "EncoderSpec",
    "LayerMacs",
    "Trace",
    "check_params",
    "init_params",
    "n_weights",
    "im2col",
    "col2im",
    "forward",
    "forward_trace",
    "backward",
    "embed",
    "fewshot_float",
    "EncoderConfig",
    "quantize_encoder",
    "dequantize_encoder",
    "quantize_images",
    "encode_fixed",
    "encode_fixed_layers",
    "FewShotResult",
    "fewshot_fixed",
    "EncoderWeights",
    "to_bytes",
    "save_encoder",
    "load_encoder",
    "GLYPH_ENCODERS",
    "load_glyph_encoder",
]

#: The layer kinds of an encoder.
LAYER_KINDS = ("conv3x3", "relu", "maxpool2x2", "flatten", "dense")
#: Read-outs of the few-shot pipeline (those of :class:`~metafab.reference.config.MatchConfig`).
READOUTS = ("proto", "matching")

Params = list[tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------
# the spec
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` (one of :data:`LAYER_KINDS`) and ``size``, the output channels (``conv3x3``) or
    width (``dense``), 0 for the others."""

    kind: str
    size: int = 0

    def __post_init__(self):
        _choice("layer kind", self.kind, LAYER_KINDS)
        if self.kind in ("conv3x3", "dense"):
            _check_int(f"{self.kind} size", self.size, 1, 4096)
        elif self.size != 0:
            raise UserError(f"a {self.kind} layer has no size, got {self.size!r}")


_TOKEN = re.compile(r"^(?:(c|d)(\d+)(l?)|(p))$")


@dataclass(frozen=True)
class LayerMacs:
    """Multiply-accumulates of one conv or dense layer for one encoding, the bias included (the bias is one
    more product with the constant-1 input): ``rows x cols`` weights applied ``columns`` times."""

    layer: int
    name: str
    rows: int
    cols: int
    columns: int

    @property
    def macs(self) -> int:
        return self.rows * self.cols * self.columns


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder: ``layers`` (a tuple of :class:`LayerSpec`) over inputs of shape ``input_shape`` ``(C, H, W)``.

    Build it from its string form with :meth:`parse` (``"c8-p-c16-p-d64"``, see the module docstring);
    ``str(spec)`` gives that form back. Validation: a ReLU only right after a conv or dense layer, a
    ``flatten`` exactly once, right before the first dense layer, no conv or pool after it, even ``H`` and
    ``W`` at every pool, and a linear dense layer last.
    """

    layers: tuple
    input_shape: tuple = (1, 16, 16)

    def __post_init__(self):
        shape = self.input_shape
        if not isinstance(shape, (tuple, list)) or len(shape) != 3:
            raise UserError(f"input_shape must be (C, H, W), got {shape!r}")
        shape = tuple(_check_int(f"input_shape[{i}]", v, 1, 1024) for i, v in enumerate(shape))
        object.__setattr__(self, "input_shape", shape)
        layers = self.layers
        if not isinstance(layers, (tuple, list)) or not layers:
            raise UserError(f"an encoder needs at least one layer, got {layers!r}")
        layers = tuple(v if isinstance(v, LayerSpec) else LayerSpec(*v) for v in layers)
        object.__setattr__(self, "layers", layers)
        flat = False
        _, h, w = shape
        for i, layer in enumerate(layers):
            prev = layers[i - 1].kind if i else None
            where = f"layer {i} ({layer.kind})"
            if layer.kind == "relu" and prev not in ("conv3x3", "dense"):
                raise UserError(f"{where}: a ReLU must follow a conv3x3 or dense layer, not {prev or 'the input'}")
            if layer.kind in ("conv3x3", "maxpool2x2") and flat:
                raise UserError(f"{where} comes after the flatten; convolutions and pools come before it")
            if layer.kind == "flatten":
                if flat:
                    raise UserError(f"{where}: the encoder flattens twice")
                if i + 1 >= len(layers) or layers[i + 1].kind != "dense":
                    raise UserError(f"{where}: a flatten must come right before the first dense layer")
                flat = True
            if layer.kind == "dense" and not flat:
                raise UserError(f"{where}: a dense layer needs a flatten before it")
            if layer.kind == "maxpool2x2":
                if h % 2 or w % 2:
                    raise UserError(f"{where}: a 2x2 max-pool needs an even height and width, got {h}x{w}")
                h, w = h // 2, w // 2
        if layers[-1].kind != "dense":
            raise UserError(f"the last layer must be a linear dense layer (the embedding), got {layers[-1].kind}")

    @classmethod
    def parse(cls, text, input_shape=(1, 16, 16)) -> EncoderSpec:
        """The spec of a string such as ``"c8-p-c16-p-d64"`` or ``"d128-d64"`` (an EncoderSpec passes through)."""
        if isinstance(text, EncoderSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"encoder spec must be a string like 'c8-p-c16-p-d64', got {text!r}")
        tokens = text.strip().lower().split("-")
        layers: list[LayerSpec] = []
        for n, tok in enumerate(tokens):
            m = _TOKEN.match(tok)
            if not m:
                raise UserError(f"encoder spec {text!r}: token {tok!r} is not c<N>, c<N>l, p, d<N> or d<N>l "
                                f"(e.g. 'c8-p-c16-p-d64')")
            last = n == len(tokens) - 1
            if m.group(4):
                layers.append(LayerSpec("maxpool2x2"))
                continue
            kind, size, linear = m.group(1), int(m.group(2)), bool(m.group(3))
            if kind == "c":
                layers.append(LayerSpec("conv3x3", size))
                if not linear:
                    layers.append(LayerSpec("relu"))
                continue
            if not any(v.kind == "flatten" for v in layers):
                layers.append(LayerSpec("flatten"))
            layers.append(LayerSpec("dense", size))
            if not linear and not last:
                layers.append(LayerSpec("relu"))
        return cls(tuple(layers), tuple(input_shape))

    def __str__(self) -> str:
        out = []
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1].kind if i + 1 < len(self.layers) else None
            if layer.kind == "conv3x3":
                out.append(f"c{layer.size}" + ("" if nxt == "relu" else "l"))
            elif layer.kind == "maxpool2x2":
                out.append("p")
            elif layer.kind == "dense":
                out.append(f"d{layer.size}" + ("" if nxt == "relu" or nxt is None else "l"))
        return "-".join(out)

    # --- derived sizes -----------------------------------------------------
    def shapes(self) -> list[tuple[int, ...]]:
        """The shape of one sample after each layer (``(C, H, W)`` before the flatten, ``(n,)`` after)."""
        c, h, w = self.input_shape
        cur: tuple[int, ...] = (c, h, w)
        out = []
        for layer in self.layers:
            if layer.kind == "conv3x3":
                cur = (layer.size, cur[1], cur[2])
            elif layer.kind == "maxpool2x2":
                cur = (cur[0], cur[1] // 2, cur[2] // 2)
            elif layer.kind == "flatten":
                cur = (int(np.prod(cur)),)
            elif layer.kind == "dense":
                cur = (layer.size,)
            out.append(cur)
        return out

    @property
    def n_inputs(self) -> int:
        """Input values per sample, ``C H W``."""
        return int(np.prod(self.input_shape))

    @property
    def dim(self) -> int:
        """The embedding dimension ``D``: the last dense layer's width."""
        return self.layers[-1].size

    def weight_layers(self) -> list[tuple[int, LayerSpec, tuple[int, ...]]]:
        """``(layer index, layer, input shape)`` of every conv and dense layer, in order."""
        shapes = [self.input_shape, *self.shapes()]
        return [(i, layer, shapes[i]) for i, layer in enumerate(self.layers) if layer.kind in ("conv3x3", "dense")]

    def param_shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Shapes ``(W, b)`` of every conv and dense layer's float parameters."""
        out = []
        for _, layer, shape in self.weight_layers():
            if layer.kind == "conv3x3":
                out.append(((layer.size, shape[0], 3, 3), (layer.size,)))
            else:
                out.append(((layer.size, shape[0]), (layer.size,)))
        return out

    def augmented_shapes(self) -> list[tuple[int, int]]:
        """Shapes of the augmented fixed-point matrices ``[W | b]``: ``(C_out, 9 C_in + 1)`` / ``(out, in + 1)``."""
        return [(w[0], int(np.prod(w[1:])) + 1) for w, _ in self.param_shapes()]

    @property
    def n_params(self) -> int:
        """Weights and biases of the whole encoder."""
        return sum(r * c for r, c in self.augmented_shapes())

    def macs(self) -> list[LayerMacs]:
        """Multiply-accumulates of one encoding, per conv / dense layer (bias included).

        A conv layer is ``C_out x (9 C_in + 1)`` weights times ``H W`` patch columns; a dense layer
        ``out x (in + 1)`` weights times one column. ReLU, pool and flatten cost no multiplications.
        """
        out = []
        for (i, layer, shape), (rows, cols) in zip(self.weight_layers(), self.augmented_shapes(), strict=True):
            if layer.kind == "conv3x3":
                name = f"conv3x3 {shape[0]}->{layer.size} at {shape[1]}x{shape[2]}"
                out.append(LayerMacs(i, name, rows, cols, shape[1] * shape[2]))
            else:
                out.append(LayerMacs(i, f"dense {shape[0]}->{layer.size}", rows, cols, 1))
        return out

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one encoding (the sum of :meth:`macs`)."""
        return sum(m.macs for m in self.macs())


def _spec(spec) -> EncoderSpec:
    return EncoderSpec.parse(spec)


# ---------------------------------------------------------------------------
# float64 parameters, forward and backward
# ---------------------------------------------------------------------------


def check_params(params, spec, name: str = "params") -> Params:
    """``params`` as float64 ``(W, b)`` pairs of the shapes ``spec`` needs (UserError naming the layer)."""
    spec = _spec(spec)
    want = spec.param_shapes()
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)) or len(params) != len(want):
        raise UserError(f"{name} must be {len(want)} (W, b) pairs for encoder {spec}, got "
                        f"{len(params) if isinstance(params, (list, tuple)) else type(params).__name__}")
    out = []
    for i, (pair, (ws, bs)) in enumerate(zip(params, want, strict=True)):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise UserError(f"{name}[{i}] must be a (W, b) pair")
        w = as_float_array(f"{name}[{i}] W", pair[0], ndims=(len(ws),))
        b = as_float_array(f"{name}[{i}] b", pair[1], ndims=(1,))
        if w.shape != ws or b.shape != bs:
            raise UserError(f"{name}[{i}] has W {w.shape} and b {b.shape}; encoder {spec} needs {ws} and {bs}")
        out.append((w, b))
    return out


def init_params(spec, seed: int = 0) -> Params:
    """He-normal weights (std ``sqrt(2 / fan_in)``, ``fan_in = 9 C_in`` or ``in``) and zero biases, drawn
    layer by layer from ``default_rng(seed)`` (He et al. 2015)."""
    spec = _spec(spec)
    rng = np.random.default_rng(as_count("seed", seed))
    out = []
    for ws, bs in spec.param_shapes():
        fan_in = int(np.prod(ws[1:]))
        out.append((rng.standard_normal(ws) * np.sqrt(2.0 / fan_in), np.zeros(bs)))
    return out


def n_weights(params) -> int:
    """Number of weights and biases in ``params``."""
    return sum(int(w.size + b.size) for w, b in params)


def _as_images(x, spec: EncoderSpec, what: str = "images") -> np.ndarray:
    """Inputs as ``(n, C, H, W)``: accepts that shape or flat rows ``(n, C H W)`` (row-major)."""
    x = np.asarray(x)
    shape = spec.input_shape
    if x.ndim == 2 and x.shape[1] == spec.n_inputs:
        return x.reshape((x.shape[0], *shape))
    if x.ndim == 4 and x.shape[1:] == shape:
        return x
    raise UserError(f"{what} must have shape (n, {', '.join(map(str, shape))}) or (n, {spec.n_inputs}), "
                    f"got {x.shape}")


def im2col(x: np.ndarray) -> np.ndarray:
    """The patch matrices of a 3x3, stride-1, zero-padding-1 convolution: ``(n, C, H, W)`` to
    ``(n, 9 C, H W)``, row ``c * 9 + ky * 3 + kx``, column ``y * W + x``, value ``x_pad[c, y + ky, x + kx]``.
    Works on float arrays and on integer codes alike (the padding is 0)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=2)
    return cols.reshape(n, c * 9, h * w)


def col2im(d_cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The adjoint of :func:`im2col`: ``(n, 9 C, H W)`` patch gradients summed back onto ``(n, C, H, W)``."""
    n, c, h, w = shape
    d = d_cols.reshape(n, c, 9, h, w)
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=d_cols.dtype)
    for k in range(9):
        ky, kx = divmod(k, 3)
        dxp[:, :, ky:ky + h, kx:kx + w] += d[:, :, k]
    return dxp[:, :, 1:-1, 1:-1]


def _pool_windows(x: np.ndarray) -> np.ndarray:
    """``(n, C, H, W)`` to ``(n, C, H/2, W/2, 4)``: each 2x2 window's values, row-major within the window."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


@dataclass(frozen=True)
class Trace:
    """What :func:`forward_trace` keeps for :func:`backward`: per layer its cached values, and the output."""

    caches: list
    output: np.ndarray


def forward_trace(params, spec, x) -> Trace:
    """Float64 forward pass of a batch (``(n, C, H, W)`` or flat ``(n, C H W)``), keeping what backprop needs."""
    spec = _spec(spec)
    params = check_params(params, spec)
    a = _as_images(as_float_array("images", x, ndims=(2, 4)), spec)
    caches = []
    pi = 0
    for layer in spec.layers:
        if layer.kind == "conv3x3":
            w, b = params[pi]
            pi += 1
            cols = im2col(a)
            caches.append((a.shape, cols))
            n, _, h, wd = a.shape
            a = (np.matmul(w.reshape(w.shape[0], -1), cols) + b[None, :, None]).reshape(n, w.shape[0], h, wd)
        elif layer.kind == "relu":
            mask = a > 0
            caches.append(mask)
            a = np.where(mask, a, 0.0)
        elif layer.kind == "maxpool2x2":
            win = _pool_windows(a)
            idx = np.argmax(win, axis=-1)  # the first maximum in window order
            caches.append((a.shape, idx))
            a = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
        elif layer.kind == "flatten":
            caches.append(a.shape)
            a = a.reshape(a.shape[0], -1)
        else:  # dense
            w, b = params[pi]
            pi += 1
            caches.append(a)
            a = a @ w.T + b
    return Trace(caches, a)


def forward(params, spec, x) -> np.ndarray:
    """Embeddings ``(n, D)`` of a batch of inputs (float64)."""
    return forward_trace(params, spec, x).output


embed = forward


def backward(params, spec, trace: Trace, d_out) -> Params:
    """Gradients of every weight and bias, shaped like ``params``, for ``d_out = dloss/d(embeddings)``
    ``(n, D)`` of the pass recorded in ``trace``. The ReLU derivative at 0 is 0; a max-pool sends the
    gradient to the first maximum of its window (window order row-major)."""
    spec = _spec(spec)
    params = check_params(params, spec)
    g = as_float_array("d_out", d_out, ndims=(2,))
    if g.shape != trace.output.shape:
        raise UserError(f"d_out must have the embeddings' shape {trace.output.shape}, got {g.shape}")
    grads: list = [None] * len(params)
    pi = len(params)
    for layer, cache in zip(reversed(spec.layers), reversed(trace.caches), strict=True):
        if layer.kind == "dense":
            pi -= 1
            w, _ = params[pi]
            a = cache
            grads[pi] = (g.T @ a, g.sum(axis=0))
            g = g @ w
        elif layer.kind == "flatten":
            g = g.reshape(cache)
        elif layer.kind == "maxpool2x2":
            shape, idx = cache
            n, c, h, wd = shape
            win = np.zeros((*idx.shape, 4))
            np.put_along_axis(win, idx[..., None], g[..., None], axis=-1)
            g = win.reshape(n, c, h // 2, wd // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)
        elif layer.kind == "relu":
            g = np.where(cache, g, 0.0)
        else:  # conv3x3
            pi -= 1
            w, _ = params[pi]
            shape, cols = cache
            n, co = g.shape[:2]
            gz = g.reshape(n, co, -1)  # (n, C_out, H W)
            dw = np.tensordot(gz, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
            grads[pi] = (dw, gz.sum(axis=(0, 2)))
            g = col2im(np.matmul(w.reshape(co, -1).T, gz), shape)
    return grads


def fewshot_float(params, spec, support, support_labels, query, n_way: int, mode: str = "proto"):
    """Float64 few-shot classification: embed support and queries, then the Prototypical (``proto``:
    :func:`metafab.reference.proto.readout`) or Matching (``matching``: :func:`metafab.reference.matching.readout`)
    read-out. Returns ``(probs, pred)`` for the queries."""
    from metafab.reference import matching, proto

    _choice("mode", mode, READOUTS)
    s = forward(params, spec, support)
    q = forward(params, spec, query)
    if mode == "proto":
        return proto.readout(q, proto.prototypes(s, support_labels, n_way))
    return matching.readout(q, s, support_labels, n_way)


# ---------------------------------------------------------------------------
# fixed point
# ---------------------------------------------------------------------------

#: The read-out fields :class:`EncoderConfig` sets itself (they follow from the encoder).
_DERIVED = ("mode", "n_way", "k_shot", "dim", "emb_fmt")


@dataclass(frozen=True)
class EncoderConfig(_ConfigBase):
    """The few-shot pipeline in fixed point: encoder formats and the similarity read-out behind it.

    Parameters
    ----------
    spec : str or EncoderSpec
        The encoder (``"c8-p-c16-p-d64"``; see :class:`EncoderSpec`).
    input_shape : tuple of int
        ``(C, H, W)`` of one input (glyphs: ``(1, 16, 16)``).
    act_fmt : QFormat
        Input pixels and every activation; also the read-out's ``emb_fmt`` (the last layer's codes are the
        embeddings). Signed, at least 2 integer bits (it holds the constant 1.0 of the bias row).
    weight_fmt : QFormat
        Weights and biases (signed multiplier operands).
    acc_fmt : QFormat
        The accumulator of every conv / dense product: fraction bits at least ``act + weight``'s, and wide
        enough for the worst case of every layer (checked: the sums never wrap).
    rounding : str
        The rounding of every layer output into ``act_fmt``: ``"half_even"`` (default) or ``"truncate"``.
    mode : str
        Read-out: ``"proto"`` (Snell et al. 2017) or ``"matching"`` (Vinyals et al. 2016).
    n_way, k_shot : int
        Classes and support samples per class of an episode.
    lanes : int
        The hardware encoder's MAC lanes (``metafab.hw.encoder``): output channels / features computed at
        once; a power of two, 1..64. It does not change a bit of the result.
    split : int
        Slices of every weight row computed side by side (``lanes x split`` multipliers; their partial sums
        are added exactly): a power of two, 1..8. It does not change a bit of the result either.
    readout : dict
        Further :class:`~metafab.reference.config.MatchConfig` fields of the read-out (e.g.
        ``{"logit_fmt": "Q12.14"}``; the read-out's ``lanes`` default to 16, or the largest power of two up
        to ``D``);
        ``mode``, ``n_way``, ``k_shot``, ``dim`` and ``emb_fmt`` follow from the
        fields above. Stored as a sorted tuple of ``(name, value)`` pairs.
    """

    spec: EncoderSpec = "c8-p-c16-p-d64"
    input_shape: tuple = (1, 16, 16)
    # the similarity engine's emb_fmt; the shipped glyph encoders' activations, weights and embeddings stay
    # inside these ranges (docs/reference.md, "Few-shot glyph encoders")
    act_fmt: QFormat = QFormat(4, 12)
    weight_fmt: QFormat = QFormat(2, 14)
    acc_fmt: QFormat = QFormat(18, 26)
    rounding: Rounding = Rounding.HALF_EVEN
    mode: str = "proto"
    n_way: int = 5
    k_shot: int = 1
    lanes: int = 8
    split: int = 8
    readout: tuple = ()

    def __post_init__(self):
        shape = self.input_shape
        if isinstance(shape, list):
            shape = tuple(shape)
        spec = self.spec
        if isinstance(spec, EncoderSpec):
            if spec.input_shape != tuple(shape):
                raise UserError(f"spec {spec} is for inputs {spec.input_shape}, but input_shape is {shape!r}")
        else:
            spec = EncoderSpec.parse(spec, shape)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "input_shape", spec.input_shape)
        for name in ("act_fmt", "weight_fmt", "acc_fmt"):
            object.__setattr__(self, name, _fmt(getattr(self, name)))
        r = Rounding.parse(self.rounding)
        if r is Rounding.STOCHASTIC:
            raise UserError("rounding: the encoder rounds with 'half_even' or 'truncate', not 'stochastic'")
        object.__setattr__(self, "rounding", r)
        _choice("mode", self.mode, READOUTS)
        _check_int("lanes", self.lanes, 1, 64)
        if self.lanes & (self.lanes - 1):
            raise UserError(f"lanes must be a power of two (1, 2, 4, ..., 64), got {self.lanes}")
        _check_int("split", self.split, 1, 8)
        if self.split & (self.split - 1):
            raise UserError(f"split must be a power of two (1, 2, 4, 8), got {self.split}")
        for name in ("act_fmt", "weight_fmt", "acc_fmt"):
            if not getattr(self, name).signed:
                raise UserError(f"{name} must be signed, got {getattr(self, name)}")
        if self.weight_fmt.width > MAX_OPERAND_WIDTH:
            raise UserError(f"weight_fmt {self.weight_fmt} is {self.weight_fmt.width} bits; operands are at "
                            f"most {MAX_OPERAND_WIDTH}")
        if self.act_fmt.max_value < 1.0:
            raise UserError(f"act_fmt {self.act_fmt} cannot hold 1.0, the bias input; it needs at least 2 "
                            f"integer bits")
        need = self.act_fmt.frac_bits + self.weight_fmt.frac_bits
        if self.acc_fmt.frac_bits < need:
            raise UserError(f"acc_fmt {self.acc_fmt} has {self.acc_fmt.frac_bits} fraction bits; the products "
                            f"weight * act need {need}")
        if self.acc_fmt.frac_bits < self.act_fmt.frac_bits:
            raise UserError(f"acc_fmt {self.acc_fmt} has fewer fraction bits than act_fmt {self.act_fmt}")
        ro = self.readout
        if isinstance(ro, dict):
            ro = tuple(ro.items())
        if not isinstance(ro, (tuple, list)) or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in ro):
            raise UserError(f"readout must be a dict of MatchConfig fields, got {self.readout!r}")
        ro = tuple(sorted((str(k), str(v) if isinstance(v, (QFormat, Rounding)) else v) for k, v in ro))
        valid = {f.name for f in fields(MatchConfig)} - set(_DERIVED)
        for k, _ in ro:
            if k in _DERIVED:
                raise UserError(f"readout field {k!r} follows from the encoder config; set it there (mode, n_way, "
                                f"k_shot) or through act_fmt (emb_fmt) and the spec (dim)")
            if k not in valid:
                raise UserError(f"unknown readout field {k!r}; valid: {', '.join(sorted(valid))}")
        object.__setattr__(self, "readout", ro)
        self.match  # noqa: B018 - validates the read-out (its own one-line UserErrors)
        fa = self.acc_fmt.frac_bits
        for (li, layer, _), (_, cols) in zip(spec.weight_layers(), spec.augmented_shapes(), strict=True):
            worst = cols * (-self.weight_fmt.min_code) * (-self.act_fmt.min_code) << (fa - need)
            if worst > self.acc_fmt.max_code:
                need_int = self.acc_fmt.int_bits + (worst.bit_length() - (self.acc_fmt.width - 1))
                raise UserError(f"acc_fmt {self.acc_fmt} can overflow in layer {li} ({layer.kind}, {cols} products "
                                f"per output): the worst case needs Q{need_int}.{fa}")

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if isinstance(d.get("input_shape"), list):
            d["input_shape"] = tuple(d["input_shape"])
        return super().from_dict(d)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["spec"] = str(self.spec)
        out["readout"] = dict(self.readout)
        return out

    @property
    def match(self) -> MatchConfig:
        """The read-out's config: ``mode``, ``n_way``, ``k_shot``, ``dim = spec.dim``, ``emb_fmt = act_fmt``
        and the ``readout`` fields."""
        ro = dict(self.readout)
        if "lanes" not in ro:  # 16 read-out lanes (fewer for a smaller embedding): the encoder sets the pace
            ro["lanes"] = min(16, 1 << (self.spec.dim.bit_length() - 1))
        return MatchConfig(mode=self.mode, n_way=self.n_way, k_shot=self.k_shot, dim=self.spec.dim,
                           emb_fmt=self.act_fmt, **ro)

    @property
    def name(self) -> str:
        split = f"x{self.split}" if self.split > 1 else ""
        return f"fewshot-{self.mode}-{self.n_way}w{self.k_shot}s-{self.spec}-p{self.lanes}{split}"

    def useful_macs(self, n_query: int = 1) -> int:
        """Multiply-accumulates of one episode: the encodings of the ``n_way k_shot`` support samples and
        ``n_query`` queries, and the read-out's dot products of the queries."""
        n = self.n_way * self.k_shot + as_count("n_query", n_query)
        return n * self.spec.total_macs + n_query * self.match.useful_macs()


def quantize_encoder(params, cfg: EncoderConfig, overflow: Overflow | str = Overflow.SATURATE) -> list:
    """Float ``[(W, b), ...]`` to augmented ``weight_fmt`` codes ``[W | b]``, rounding half to even.

    A conv layer becomes the ``C_out x (9 C_in + 1)`` matrix (``W[o, c, ky, kx]`` at column
    ``c * 9 + ky * 3 + kx``, the bias last), a dense layer ``out x (in + 1)``. ``overflow="error"``
    rejects weights outside ``weight_fmt`` instead of saturating them.
    """
    params = check_params(params, cfg.spec)
    out = []
    for li, (w, b) in enumerate(params):
        aug = np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], axis=1)
        out.append(fx.from_float(aug, cfg.weight_fmt, Rounding.HALF_EVEN, overflow, what=f"encoder layer {li} weights"))
    return out


def dequantize_encoder(wq, cfg: EncoderConfig) -> Params:
    """Augmented codes back to float ``[(W, b), ...]`` of the spec's shapes (exact)."""
    wq = _check_wq(wq, cfg)
    out = []
    for q, (ws, _) in zip(wq, cfg.spec.param_shapes(), strict=True):
        f = fx.to_float(q, cfg.weight_fmt)
        out.append((f[:, :-1].reshape(ws).copy(), f[:, -1].copy()))
    return out


def quantize_images(x, cfg: EncoderConfig, what: str = "images") -> np.ndarray:
    """Input samples (float; ``(n, C, H, W)`` or flat ``(n, C H W)``) to ``act_fmt`` codes ``(n, C, H, W)``,
    half to even, saturating."""
    x = _as_images(as_float_array(what, x, ndims=(2, 4)), cfg.spec, what)
    return fx.from_float(x, cfg.act_fmt, Rounding.HALF_EVEN, Overflow.SATURATE, what=what)


def _check_wq(wq, cfg: EncoderConfig) -> list:
    want = cfg.spec.augmented_shapes()
    if not isinstance(wq, (list, tuple)) or len(wq) != len(want):
        raise UserError(f"encoder weights must be {len(want)} augmented code matrices for {cfg.spec}")
    out = []
    for i, (q, shape) in enumerate(zip(wq, want, strict=True)):
        q = np.asarray(q)
        if q.shape != shape:
            raise UserError(f"encoder layer {i} weights have shape {q.shape}; {cfg.spec} needs {shape}")
        out.append(cfg.weight_fmt.check(q, f"encoder layer {i} weights"))
    return out


def _layer(w: np.ndarray, a: np.ndarray, cfg: EncoderConfig) -> np.ndarray:
    """One rounding point: ``round(w @ [a; 1])`` into ``act_fmt``, saturating.

    ``a`` is feature-major ``(in, columns)``. The products are exact and summed exactly; the config checks
    that no sum can leave ``acc_fmt``, so this is :func:`metafab.reference.fixed.matmul` (the same bits,
    without its ``(m, k, n)`` intermediate) followed by :func:`metafab.reference.fixed.resize`. When every
    partial sum is an integer below ``2**53`` in magnitude (bounded by ``in * max|w| * max|a|``) the
    product runs as a float64 matrix product, which is then exact whatever the order of its additions;
    otherwise as an int64 one.
    """
    one = np.full((1, a.shape[1]), 1 << cfg.act_fmt.frac_bits, dtype=np.int64)
    aug = np.concatenate([a, one], axis=0)
    shift = cfg.acc_fmt.frac_bits - cfg.act_fmt.frac_bits - cfg.weight_fmt.frac_bits
    bound = aug.shape[0] * int(np.abs(w).max(initial=0)) * int(np.abs(aug).max(initial=0))
    if bound < 1 << 53:
        prod = (w.astype(np.float64) @ aug.astype(np.float64)).astype(np.int64)
    else:
        prod = w @ aug
    acc = fx.wrap(prod << shift, cfg.acc_fmt)
    return fx.resize(acc, cfg.acc_fmt, cfg.act_fmt, cfg.rounding, Overflow.SATURATE)


def encode_fixed(wq, images_codes, cfg: EncoderConfig) -> np.ndarray:
    """The embeddings of a batch in fixed point: ``(n, D)`` ``act_fmt`` (= the read-out's ``emb_fmt``) codes.

    ``images_codes``: ``act_fmt`` codes ``(n, C, H, W)`` or flat ``(n, C H W)`` (:func:`quantize_images`);
    ``wq``: the augmented codes of :func:`quantize_encoder`. A conv layer is
    ``round(W_aug @ [P; 1])`` over the patch columns of the whole batch, a dense layer
    ``round(W_aug @ [a; 1])``, each rounded once into ``act_fmt`` (module docstring); ReLU and max-pool are
    exact on codes. Every image is encoded on its own: the batch does not change a bit.
    """
    return encode_fixed_layers(wq, images_codes, cfg)[-1]


def encode_fixed_layers(wq, images_codes, cfg: EncoderConfig) -> list[np.ndarray]:
    """:func:`encode_fixed` with the codes after every layer of ``cfg.spec.layers``: ``(n, C, H, W)`` before
    the flatten, ``(n, features)`` after (for tests and for checking hardware layer by layer)."""
    wq = _check_wq(wq, cfg)
    spec = cfg.spec
    x = np.asarray(images_codes)
    if x.dtype.kind not in "iu":
        raise UserError(f"images must be {cfg.act_fmt} integer codes (quantize_images), got dtype {x.dtype}")
    a = cfg.act_fmt.check(_as_images(x, spec), "images")
    pi = 0
    outs = []
    for layer in spec.layers:
        if layer.kind == "conv3x3":
            n, c, h, w = a.shape
            cols = im2col(a).transpose(1, 0, 2).reshape(9 * c, n * h * w)  # columns: image, then y * W + x
            z = _layer(wq[pi], cols, cfg)
            a = z.reshape(-1, n, h, w).transpose(1, 0, 2, 3)
            pi += 1
        elif layer.kind == "relu":
            a = np.maximum(a, 0)
        elif layer.kind == "maxpool2x2":
            a = _pool_windows(a).max(axis=-1)
        elif layer.kind == "flatten":
            a = a.reshape(a.shape[0], -1)
        else:  # dense, feature-major as in maml_fixed.forward
            a = _layer(wq[pi], a.T, cfg).T
            pi += 1
        outs.append(np.ascontiguousarray(a))
    return outs


@dataclass(frozen=True)
class FewShotResult:
    """One episode through the fixed-point pipeline: what the engine answers and its intermediates.

    ``probs`` ``(Q, N)`` in the read-out's ``prob_fmt`` and ``pred`` ``(Q,)``; ``support`` ``(M, D)`` and
    ``query`` ``(Q, D)`` the embedding codes; ``readout`` the full
    :class:`~metafab.reference.match_fixed.Readout`.
    """

    probs: np.ndarray
    pred: np.ndarray
    support: np.ndarray
    query: np.ndarray
    readout: match_fixed.Readout


def fewshot_fixed(wq, support_images, support_labels, query_images, cfg: EncoderConfig) -> FewShotResult:
    """Bit-exact few-shot classification: encode the support and query images (``act_fmt`` codes), then
    :func:`metafab.reference.match_fixed.prepare` the support embeddings and
    :func:`~metafab.reference.match_fixed.readout` the queries with :attr:`EncoderConfig.match`."""
    mcfg = cfg.match
    s = encode_fixed(wq, support_images, cfg)
    q = encode_fixed(wq, query_images, cfg)
    prepared = match_fixed.prepare(s, support_labels, mcfg)
    r = match_fixed.readout(q, prepared, mcfg)
    return FewShotResult(r.probs, r.pred, s, q, r)


# ---------------------------------------------------------------------------
# weights files
# ---------------------------------------------------------------------------


#: The shipped glyph encoders (``metafab train glyph-encoder``): kind -> file in ``reference/data/``.
GLYPH_ENCODERS = {"conv": "glyph_encoder_conv_c8-p-c16-p-d64.npz", "dense": "glyph_encoder_dense_d128-d64.npz"}


@dataclass(frozen=True)
class EncoderWeights:
    """An encoder's spec, float64 parameters and provenance (``metadata``)."""

    spec: EncoderSpec
    params: Params
    metadata: dict


def to_bytes(spec, params, metadata: dict) -> bytes:
    """The ``.npz`` contents: ``W0, b0, ...`` and the JSON ``metadata`` (with ``spec`` and ``input_shape``)."""
    spec = _spec(spec)
    params = check_params(params, spec)
    meta = {**metadata, "spec": str(spec), "input_shape": list(spec.input_shape)}
    from metafab.reference.weights import archive_bytes

    return archive_bytes(params, meta)


def save_encoder(path, spec, params, metadata: dict) -> Path:
    """Write an encoder weights file (parent folders are created; same inputs, same bytes)."""
    return write_whole(path, to_bytes(spec, params, metadata), "encoder weights")


def _read(source, label: str) -> EncoderWeights:
    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays["metadata"]))
        spec = EncoderSpec.parse(meta["spec"], tuple(meta["input_shape"]))
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise UserError(f"{label} is not a metafab encoder weights file: {exc or 'it is empty'}") from None
    n = len(spec.param_shapes())
    try:
        params = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n)]
    except KeyError as exc:
        raise UserError(f"{label} lacks the member {exc} of encoder {spec}") from None
    return EncoderWeights(spec, check_params(params, spec, label), meta)


def load_encoder(path) -> EncoderWeights:
    """Read an encoder weights file written by :func:`save_encoder` (``metafab train glyph-encoder``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"encoder weights file {str(path)!r} does not exist")
    return _read(path, repr(str(path)))


def load_glyph_encoder(kind: str = "conv") -> EncoderWeights:
    """A shipped glyph encoder: ``"conv"`` (``c8-p-c16-p-d64``) or ``"dense"`` (``d128-d64``), D = 64."""
    if kind not in GLYPH_ENCODERS:
        raise UserError(f"glyph encoder must be one of {', '.join(GLYPH_ENCODERS)}, got {kind!r}")
    resource = importlib.resources.files("metafab.reference") / "data" / GLYPH_ENCODERS[kind]
    if not resource.is_file():
        raise UserError(f"the shipped glyph encoder {GLYPH_ENCODERS[kind]!r} is missing; reinstall metafab")
    with resource.open("rb") as f:
        return _read(io.BytesIO(f.read()), f"shipped encoder {GLYPH_ENCODERS[kind]!r}")
