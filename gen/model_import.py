"""Model import: read an MLP made outside metafab (ONNX, safetensors, npz) as float64 parameters.

The engines compute one network shape: hidden layers ``relu(W a + b)`` and a
linear output layer (a classifier's logits then go through a softmax). This
module reads such a network from a file written by another tool and returns
its parameters in the convention of :mod:`metafab.reference.mlp`: a list of
``(W, b)`` with ``W`` of shape ``(out, in)`` and ``b`` of shape ``(out,)``,
float64.

Formats
-------
``.onnx``
    A graph that is a chain from its one input to its one output of
    ``Gemm`` or ``MatMul`` (+ ``Add``) linear layers with one ``Relu``
    between two of them; ``Flatten`` / ``Reshape`` only before the first
    linear layer, ``Softmax`` only as the last node, ``Identity`` and
    ``Dropout`` anywhere (ignored). Weights must be initializers.
``.safetensors``
    PyTorch ``nn.Sequential`` of ``nn.Linear`` names (``0.weight``,
    ``0.bias``, ``2.weight``, ... with one optional common prefix such as
    ``net.``), or any names through a tensor map.
``.npz``
    metafab's own weight files (:mod:`metafab.reference.weights`) and plain
    archives of ``W0, b0, W1, b1, ...``, or any names through a tensor map.

A tensor map is a string ``"W0=fc1.weight,b0=fc1.bias,W1=fc2.weight"``: layer
``l``'s weight ``W_l`` (shape ``(out, in)``) and bias ``b_l`` (optional: a
zero bias) by their names in the file.

Every problem is a one-line :class:`~metafab.reference.errors.UserError` that
names the file, node or tensor and says what would be valid.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference import maml_fixed, mlp
from metafab.reference import weights as weights_mod
from metafab.reference.errors import UserError
from metafab.reference.fixed import QFormat

__all__ = [
    "FORMATS",
    "ImportedModel",
    "read_model",
    "parse_tensor_map",
    "quantisation_report",
    "fit_formats",
    "write_imported",
]

#: The file formats :func:`read_model` reads (by file suffix ``.onnx``, ``.safetensors``, ``.npz``).
FORMATS = ("onnx", "safetensors", "npz")

_SUFFIXES = {f".{f}": f for f in FORMATS}

#: The ONNX operators :func:`read_model` takes.
ONNX_SUPPORTED = ("Gemm", "MatMul+Add", "Relu", "Flatten", "Reshape", "Softmax")
_ONNX_IGNORED = ("Identity", "Dropout")
_ONNX_ENCODER = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                 "LpPool")
#: Activation-format headroom of :func:`fit_formats` over the largest activation seen.
ACT_HEADROOM = 1.1

_SHOW_NAMES = 6


@dataclass(frozen=True)
class ImportedModel:
    """An MLP read from a file by :func:`read_model`.

    Attributes
    ----------
    params : list of (W, b)
        float64 parameters, ``W`` of shape ``(out, in)``, ``b`` of shape ``(out,)``.
    layers : tuple of int
        Layer widths ``(n_in, h1, ..., n_out)``.
    softmax : bool
        The graph ends with a Softmax (a classifier, for the ``maml-cls`` engine).
    source : str
        Where the model came from, e.g. ``"ONNX model.onnx (3 Gemm, 2 Relu)"``.
    names : tuple of (str, str)
        Per layer, the names of its weight and bias tensors in the file (``""`` for a missing bias).
    notes : tuple of str
        What the import assumed or ignored, e.g. ``"layer 1 has no bias: zeros"``.
    """

    params: list
    layers: tuple[int, ...]
    softmax: bool
    source: str
    names: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------
# shared checks
# ---------------------------------------------------------------------------


def _one_line(text) -> str:
    """The first line of an exception's text, shortened (library messages can be long)."""
    s = str(text).strip().splitlines()[0] if str(text).strip() else ""
    s = s or "it is empty or damaged"
    return s if len(s) <= 160 else s[:157] + "..."


def _cannot_read(fmt: str, path: Path, reason) -> UserError:
    return UserError(f"cannot read {fmt} file {str(path)!r}: {_one_line(reason)}")


def _show(names) -> str:
    """Up to six names, quoted, and how many there are in all."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:_SHOW_NAMES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOW_NAMES else "")


def _is_float_dtype(dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    # bfloat16 and the float8 types of ml_dtypes (onnx and safetensors read them) are numpy 'V' dtypes
    return dtype.kind == "V" and dtype.name.startswith(("bfloat16", "float8", "float6", "float4"))


def _as_tensor(name: str, array, role: str) -> np.ndarray:
    """A file tensor as float64, checked: a float dtype, finite, 2-D (weight) or 1-D (bias)."""
    a = np.asarray(array)
    if not _is_float_dtype(a.dtype):
        kinds = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}
        kind = kinds.get(a.dtype.kind, "non-numeric")
        raise UserError(
            f"tensor {name!r} has {kind} dtype {a.dtype}; weights and biases must be floating point "
            f"(float16, bfloat16, float32 or float64)"
        )
    a = a.astype(np.float64)
    want = 2 if role == "weight" else 1
    if a.ndim != want:
        shape = "(out, in)" if role == "weight" else "(out,)"
        raise UserError(f"{role} tensor {name!r} has shape {a.shape}; a {role} must be {want}-D {shape}")
    if a.size == 0:
        raise UserError(f"{role} tensor {name!r} has shape {a.shape}; a layer needs at least one input and output")
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise UserError(f"tensor {name!r} holds {bad} NaN or infinite value(s) of {a.size}; weights must be finite")
    return a


@dataclass
class _Layer:
    wname: str
    w: np.ndarray            # (out, in) float64
    wshape: tuple            # the weight's shape in the file (for messages)
    bname: str = ""
    b: np.ndarray | None = None


def _assemble(entries: list[_Layer], *, source: str, softmax: bool, notes: list[str]) -> ImportedModel:
    """Check bias lengths and chained widths, fill missing biases, and build the model."""
    if not entries:
        raise UserError(f"{source} holds no linear layer")
    params, names = [], []
    notes = list(notes)
    for i, e in enumerate(entries):
        n_out, n_in = e.w.shape
        if i:
            prev = entries[i - 1]
            if n_in != prev.w.shape[0]:
                raise UserError(
                    f"layer {i} weight {e.wname!r} of shape {e.wshape} takes {n_in} inputs, but layer {i - 1} "
                    f"weight {prev.wname!r} of shape {prev.wshape} gives {prev.w.shape[0]} outputs; "
                    f"the layer widths must chain"
                )
        if e.b is None:
            b = np.zeros(n_out)
            notes.append(f"layer {i} has no bias: zeros")
        else:
            b = e.b
            if b.shape != (n_out,):
                raise UserError(
                    f"bias tensor {e.bname!r} has shape {b.shape}; layer {i} (weight {e.wname!r} of shape "
                    f"{e.wshape}) has {n_out} outputs, so the bias must be ({n_out},)"
                )
        params.append((np.ascontiguousarray(e.w, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)))
        names.append((e.wname, e.bname if e.b is not None else ""))
    params, shape = mlp.check_params(params, "imported params")
    return ImportedModel(params=params, layers=shape.layers, softmax=bool(softmax), source=source,
                         names=tuple(names), notes=tuple(notes))


# ---------------------------------------------------------------------------
# tensor maps and naming conventions (safetensors, npz)
# ---------------------------------------------------------------------------

_MAP_KEY = re.compile(r"^([Wb])(\d+)$")
_SEQ_NAME = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<kind>weight|bias)$")
_PLAIN_NAME = re.compile(r"^([Wb])(\d+)$")


def parse_tensor_map(text: str) -> dict[int, tuple[str, str | None]]:
    """Parse ``"W0=fc1.weight,b0=fc1.bias,W1=fc2.weight"``.

    Parameters
    ----------
    text : str
        Comma-separated ``W<l>=<name>`` and ``b<l>=<name>`` entries; ``l``
        counts from 0 without gaps, a ``b<l>`` may be left out (zero bias).

    Returns
    -------
    dict
        Layer index -> ``(weight name, bias name or None)``, in layer order.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"tensor map must be a string like 'W0=fc1.weight,b0=fc1.bias,W1=fc2.weight', got {text!r}")
    ws: dict[int, str] = {}
    bs: dict[int, str] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, eq, name = entry.partition("=")
        key, name = key.strip(), name.strip()
        m = _MAP_KEY.match(key)
        if not eq or not m or not name:
            raise UserError(
                f"tensor map entry {entry!r} must look like 'W0=<weight name>' or 'b0=<bias name>' "
                f"(W<l>/b<l>, l = 0, 1, ...)"
            )
        target = ws if m.group(1) == "W" else bs
        layer = int(m.group(2))
        if layer in target:
            raise UserError(f"tensor map names {key} twice ({target[layer]!r} and {name!r})")
        target[layer] = name
    if not ws:
        raise UserError(f"tensor map {text!r} names no weight; give W0=<name>, W1=<name>, ...")
    missing = [i for i in range(max(ws) + 1) if i not in ws]
    if missing:
        raise UserError(
            f"tensor map names weights {', '.join(f'W{i}' for i in sorted(ws))} but not W{missing[0]}; "
            f"layers count from W0 without gaps"
        )
    extra = sorted(set(bs) - set(ws))
    if extra:
        raise UserError(f"tensor map names b{extra[0]} but no W{extra[0]}; a bias needs its layer's weight")
    return {i: (ws[i], bs.get(i)) for i in sorted(ws)}


def _layers_from_map(tensors: dict, mapping: dict, fmt: str, path: Path) -> tuple[list[_Layer], list[str]]:
    entries, notes = [], []
    for wname, bname in mapping.values():
        for name in (wname, bname):
            if name is not None and name not in tensors:
                raise UserError(
                    f"tensor map names {name!r}, which {fmt} file {str(path)!r} does not hold; "
                    f"its tensors: {_show(sorted(tensors))}"
                )
        w = _as_tensor(wname, tensors[wname], "weight")
        b = None if bname is None else _as_tensor(bname, tensors[bname], "bias")
        entries.append(_Layer(wname, w, w.shape, bname or "", b))
    used = {n for pair in mapping.values() for n in pair if n is not None}
    unused = sorted(set(tensors) - used)
    if unused:
        notes.append(f"{len(unused)} tensor(s) of the file not in the tensor map ignored: {_show(unused)}")
    return entries, notes


def _convention_error(tensors, fmt: str, path: Path, detail: str = "") -> UserError:
    return UserError(
        f"cannot tell the layers of {fmt} file {str(path)!r} from its tensor names ({_show(sorted(tensors))})"
        f"{': ' + detail if detail else ''}; expected nn.Sequential names '<prefix><i>.weight' and "
        f"'<prefix><i>.bias', or W0, b0, W1, b1, ...; otherwise pass a tensor map: metafab import "
        f"--map W0=fc1.weight,b0=fc1.bias,W1=fc2.weight,b1=fc2.bias (tensor_map= in Python)"
    )


def _layers_by_convention(tensors: dict, fmt: str, path: Path) -> tuple[list[_Layer], list[str], str]:
    """Layers by the plain ``W0, b0, ...`` or the nn.Sequential naming; returns (layers, notes, convention)."""
    if not tensors:
        raise UserError(f"{fmt} file {str(path)!r} holds no tensors")
    names = list(tensors)
    plain = [_PLAIN_NAME.match(n) for n in names]
    if all(plain):
        ws = {int(m.group(2)): m.group(0) for m in plain if m.group(1) == "W"}
        bs = {int(m.group(2)): m.group(0) for m in plain if m.group(1) == "b"}
        gaps = [i for i in range(max(ws, default=-1) + 1) if i not in ws]
        if not ws or gaps:
            raise _convention_error(tensors, fmt, path, f"there is no W{gaps[0] if gaps else 0}")
        orphan = sorted(set(bs) - set(ws))
        if orphan:
            raise _convention_error(tensors, fmt, path, f"b{orphan[0]} has no W{orphan[0]}")
        mapping = {i: (ws[i], bs.get(i)) for i in sorted(ws)}
        entries, notes = _layers_from_map(tensors, mapping, fmt, path)
        return entries, notes, "W0, b0, ... names"
    seq = [_SEQ_NAME.match(n) for n in names]
    if not all(seq):
        bad = [n for n, m in zip(names, seq, strict=True) if not m]
        raise _convention_error(tensors, fmt, path, f"{bad[0]!r} fits neither")
    prefixes = sorted({m.group("prefix") for m in seq})
    if len(prefixes) > 1:
        raise _convention_error(tensors, fmt, path, f"they use different prefixes {_show(prefixes)}")
    prefix = prefixes[0]
    ws = {int(m.group("index")): m.group(0) for m in seq if m.group("kind") == "weight"}
    bs = {int(m.group("index")): m.group(0) for m in seq if m.group("kind") == "bias"}
    orphan = sorted(set(bs) - set(ws))
    if orphan:
        raise UserError(
            f"{fmt} file {str(path)!r} holds bias {bs[orphan[0]]!r} but no weight "
            f"{prefix}{orphan[0]}.weight; pass a tensor map to say which tensors form the layers"
        )
    entries, notes = [], []
    for i in sorted(ws):  # by the integer index: 2 before 10
        w = _as_tensor(ws[i], tensors[ws[i]], "weight")
        b = _as_tensor(bs[i], tensors[bs[i]], "bias") if i in bs else None
        entries.append(_Layer(ws[i], w, w.shape, bs.get(i, ""), b))
    return entries, notes, "nn.Sequential names"


def _from_tensors(tensors: dict, fmt: str, path: Path, tensor_map: str | None, label: str) -> ImportedModel:
    notes = [f"{fmt} holds no graph: ReLU assumed between the layers and a linear output layer"]
    if tensor_map is not None:
        entries, more = _layers_from_map(tensors, parse_tensor_map(tensor_map), fmt, path)
        convention = "tensor map"
    else:
        entries, more, convention = _layers_by_convention(tensors, fmt, path)
    return _assemble(entries, source=f"{label} {path.name} ({convention})", softmax=False, notes=notes + more)


# ---------------------------------------------------------------------------
# safetensors and npz
# ---------------------------------------------------------------------------


def _read_safetensors(path: Path, tensor_map: str | None) -> ImportedModel:
    import safetensors
    import safetensors.numpy

    try:
        tensors = safetensors.numpy.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as exc:
        raise _cannot_read("safetensors", path, exc) from None
    return _from_tensors(tensors, "safetensors", path, tensor_map, "safetensors")


def _read_npz(path: Path, tensor_map: str | None) -> ImportedModel:
    try:
        # an open file of our own: numpy leaves the file it opened unclosed when the zip is damaged
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                tensors = None
            else:
                with loaded as archive:
                    tensors = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise _cannot_read("npz", path, exc) from None
    if tensors is None:
        raise _cannot_read("npz", path, "it holds one .npy array, not an npz archive of named arrays")
    if "metadata" in tensors and tensor_map is None:
        w = weights_mod.load(path)
        meta = w.metadata if isinstance(w.metadata, dict) else {}
        softmax = meta.get("softmax")
        if not isinstance(softmax, bool):
            softmax = str(meta.get("kind", "")).endswith("classifier")
        origin = meta.get("imported_from") or meta.get("kind")
        source = f"metafab weights {path.name}" + (f" ({origin})" if origin else "")
        entries = [_Layer(f"W{i}", wi, wi.shape, f"b{i}", bi) for i, (wi, bi) in enumerate(w.params)]
        notes = [str(n) for n in meta["notes"]] if isinstance(meta.get("notes"), list) else []
        return _assemble(entries, source=source, softmax=softmax, notes=notes)
    tensors.pop("metadata", None)
    return _from_tensors(tensors, "npz", path, tensor_map, "npz")


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------


class _Onnx:
    """Walks an ONNX graph's chain of nodes and collects its linear layers."""

    def __init__(self, model, path: Path):
        from onnx import numpy_helper

        self.path = path
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {}
        for t in self.graph.initializer:
            try:
                self.consts[t.name] = numpy_helper.to_array(t)
            except (ValueError, TypeError, OSError) as exc:
                raise _cannot_read("onnx", path, f"initializer {t.name!r}: {_one_line(exc)}") from None
        for node in self.graph.node:
            if node.op_type == "Constant":
                self._constant(node)
        self.inputs = [i for i in self.graph.input if i.name not in self.consts]
        self.input_names = {i.name for i in self.inputs}

    def _constant(self, node):
        from onnx import numpy_helper

        for attr in node.attribute:
            if attr.name == "value":
                value = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_float", "value_int"):
                value = np.array(attr.f if attr.name == "value_float" else attr.i)
            elif attr.name in ("value_floats", "value_ints"):
                value = np.array(list(attr.floats if attr.name == "value_floats" else attr.ints))
            else:
                continue
            self.consts[node.output[0]] = value
            return
        raise UserError(f"node {_label(node, 0)!r} (Constant) has no tensor value attribute the import can read")

    def const(self, node_label: str, op: str, name: str, role: str) -> np.ndarray:
        if name in self.consts:
            return self.consts[name]
        if name in self.input_names:
            raise UserError(
                f"node {node_label!r} ({op}): {role} {name!r} comes from a graph input, not an initializer; "
                f"export the model with its weights as initializers (constants)"
            )
        raise UserError(
            f"node {node_label!r} ({op}): {role} {name!r} is computed by another node, not an initializer; "
            f"only constant weights can be imported"
        )


def _label(node, i: int) -> str:
    return node.name or f"{node.op_type}_{i}"


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _onnx_bias(g: _Onnx, label: str, op: str, name: str) -> np.ndarray:
    b = g.const(label, op, name, "bias")
    b = np.asarray(b)
    if b.ndim >= 2 and all(d == 1 for d in b.shape[:-1]):
        b = b.reshape(-1)  # (1, out) broadcasts like (out,)
    return _as_tensor(name, b, "bias")


def _read_onnx(path: Path, tensor_map: str | None) -> ImportedModel:
    import onnx
    from google.protobuf.message import Error as ProtobufError

    if tensor_map is not None:
        raise UserError("a tensor map applies to safetensors and npz files; an ONNX graph names its own weights")
    try:
        model = onnx.load(str(path))
    except (ProtobufError, OSError, ValueError, RuntimeError) as exc:
        raise _cannot_read("onnx", path, exc) from None
    if not model.graph.node:
        raise _cannot_read("onnx", path, "it holds no graph nodes (empty or truncated)")
    g = _Onnx(model, path)
    graph = g.graph
    if not g.inputs:
        raise UserError(f"ONNX graph of {str(path)!r} has no input (every graph input is an initializer)")
    if len(graph.output) != 1:
        raise UserError(
            f"ONNX graph of {str(path)!r} has {len(graph.output)} outputs ({_show(o.name for o in graph.output)}); "
            f"the engines give one output vector"
        )
    supported = ", ".join(ONNX_SUPPORTED)
    # the data input is the one the first node reads (others may be weights fed as inputs: named below)
    first = next((n for n in graph.node if n.op_type != "Constant"), None)
    data_in = next((i for i in g.inputs if first is not None and first.input and i.name == first.input[0]),
                   g.inputs[0])
    in_name, out_name = data_in.name, graph.output[0].name
    cur = in_name
    entries: list[_Layer] = []
    notes: list[str] = []
    counts: dict[str, int] = {}
    relus: list[str] = []        # Relu nodes since the last linear layer
    last_linear = ""             # label of the node of the last linear layer
    bias_open = False            # the last linear layer may still take an Add bias
    softmax_node = ""
    reshaped = False

    def reads(node, label, idx=0):
        if len(node.input) <= idx or node.input[idx] != cur:
            got = node.input[idx] if len(node.input) > idx else "nothing"
            raise UserError(
                f"the ONNX graph is not a chain from input {in_name!r} to output {out_name!r}: node {label!r} "
                f"({node.op_type}) reads {got!r}, not {cur!r} (the output of the node before)"
            )

    def linear(node, label, w, wname, wshape):
        nonlocal last_linear, bias_open
        if softmax_node:
            raise UserError(f"node {softmax_node!r} (Softmax) must be the last node; node {label!r} "
                            f"({node.op_type}) follows it")
        if entries and len(relus) != 1:
            if not relus:
                raise UserError(
                    f"node {label!r} ({node.op_type}) follows linear layer node {last_linear!r} with no Relu "
                    f"between them; the engines put exactly one Relu between two linear layers"
                )
            raise UserError(
                f"{len(relus)} Relu nodes ({_show(relus)}) between linear layer nodes {last_linear!r} and "
                f"{label!r}; the engines put exactly one Relu between two linear layers"
            )
        entries.append(_Layer(wname, w, wshape))
        relus.clear()
        last_linear = label
        bias_open = True

    for i, node in enumerate(graph.node):
        op = node.op_type
        if op == "Constant":
            continue
        label = _label(node, i)
        counts[op] = counts.get(op, 0) + 1
        if op in _ONNX_ENCODER:
            raise UserError(
                f"node {label!r} ({op}): convolution and pooling are encoder operators; the engines of this "
                f"version (maml, maml-cls) take dense layers only (supported: {supported})"
            )
        if op == "Gemm":
            reads(node, label)
            a = _attrs(node)
            if a.get("transA", 0):
                raise UserError(f"node {label!r} (Gemm) has transA=1; only transA=0 (inputs as rows) is supported")
            has_c = len(node.input) > 2 and node.input[2] != ""
            for key in ("alpha", "beta") if has_c else ("alpha",):
                if float(a.get(key, 1.0)) != 1.0:
                    raise UserError(
                        f"node {label!r} (Gemm) has {key}={a[key]}; only alpha=1.0 and beta=1.0 are supported "
                        f"(fold the scale into the weights)"
                    )
            wname = node.input[1]
            raw = _as_tensor(wname, g.const(label, op, wname, "weight"), "weight")
            w = raw if a.get("transB", 0) else raw.T
            linear(node, label, w, wname, raw.shape)
            if has_c:
                entries[-1].bname = node.input[2]
                entries[-1].b = _onnx_bias(g, label, op, node.input[2])
                bias_open = False
        elif op == "MatMul":
            reads(node, label)
            wname = node.input[1]
            raw = _as_tensor(wname, g.const(label, op, wname, "weight"), "weight")
            linear(node, label, raw.T, wname, raw.shape)
        elif op == "Add":
            if cur not in node.input[:2]:
                reads(node, label)
            other = node.input[1] if node.input[0] == cur else node.input[0]
            if not bias_open or relus:
                raise UserError(
                    f"node {label!r} (Add) adds {other!r} where no linear layer takes a bias; an Add is supported "
                    f"only as the bias right after a MatMul (or a Gemm without C)"
                )
            entries[-1].bname = other
            entries[-1].b = _onnx_bias(g, label, op, other)
            bias_open = False
        elif op == "Relu":
            reads(node, label)
            if not entries:
                raise UserError(f"node {label!r} (Relu) comes before the first linear layer; the engines' first "
                                f"layer is linear (supported: {supported})")
            if softmax_node:
                raise UserError(f"node {softmax_node!r} (Softmax) must be the last node; node {label!r} (Relu) "
                                f"follows it")
            relus.append(label)
            bias_open = False
        elif op in ("Flatten", "Reshape"):
            reads(node, label)
            if entries:
                raise UserError(
                    f"node {label!r} ({op}) comes after the first linear layer {entries[0].wname!r} (node "
                    f"{last_linear!r}); the engines take a flat input vector, so Flatten and Reshape are supported "
                    f"only before the first linear layer"
                )
            reshaped = True
            notes.append(f"node {label!r} ({op}) ignored: the engine's input is a flat vector")
        elif op == "Softmax":
            reads(node, label)
            if not entries:
                raise UserError(f"node {label!r} (Softmax) comes before any linear layer; it may only end the graph")
            softmax_node = label
            bias_open = False
        elif op in _ONNX_IGNORED:
            reads(node, label)
            if op == "Dropout":
                notes.append(f"node {label!r} (Dropout) ignored: inference")
        else:
            raise UserError(f"node {label!r} (op {op}) is not supported; supported: {supported}")
        cur = node.output[0]

    if cur != out_name:
        raise UserError(
            f"the ONNX graph is not a chain from input {in_name!r} to output {out_name!r}: its last node writes "
            f"{cur!r}"
        )
    if not entries:
        raise UserError(f"ONNX graph of {str(path)!r} has no linear layer (Gemm or MatMul)")
    if len(g.inputs) != 1:
        raise UserError(
            f"ONNX graph of {str(path)!r} has {len(g.inputs)} inputs ({_show(i.name for i in g.inputs)}); "
            f"the engines take one input vector"
        )
    if relus:
        raise UserError(
            f"node {relus[-1]!r} (Relu) follows the last linear layer node {last_linear!r}; the engine's output "
            f"layer is linear (remove that Relu)"
        )
    _check_onnx_input(data_in, entries[0], reshaped)
    source = f"ONNX {path.name} ({', '.join(f'{n} {op}' for op, n in counts.items())})"
    return _assemble(entries, source=source, softmax=bool(softmax_node), notes=notes)


def _check_onnx_input(value_info, first: _Layer, reshaped: bool) -> None:
    """The graph input's known width must be the first layer's input width."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if not dims:
        return
    shape = tuple(d if d is not None else "?" for d in dims)
    if reshaped:  # a Flatten/Reshape feeds the first layer: all features but the batch axis
        feats = dims[1:] if len(dims) > 1 else dims
        if any(d is None for d in feats):
            return
        width = int(np.prod(feats))
    else:
        if dims[-1] is None:
            return
        width = dims[-1]
    n_in = first.w.shape[1]
    if width != n_in:
        raise UserError(
            f"graph input {value_info.name!r} of shape {shape} gives {width} features, but the first layer's "
            f"weight {first.wname!r} of shape {first.wshape} takes {n_in} inputs"
        )


# ---------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------

_READERS = {"onnx": _read_onnx, "safetensors": _read_safetensors, "npz": _read_npz}


def read_model(path, *, tensor_map: str | None = None) -> ImportedModel:
    """Read an MLP from an ONNX, safetensors or npz file.

    Parameters
    ----------
    path : str or os.PathLike
        The model file; its suffix (``.onnx``, ``.safetensors``, ``.npz``) selects the format.
    tensor_map : str, optional
        ``"W0=<name>,b0=<name>,W1=<name>,..."``: which tensors of a
        safetensors or npz file are the layers' weights (shape ``(out, in)``)
        and biases (optional). Without it the names must follow the
        nn.Sequential (``<prefix><i>.weight``) or ``W0, b0, ...`` convention.

    Returns
    -------
    ImportedModel
        The float64 parameters, layer widths, whether the graph ends in a
        Softmax, where they came from and what the import assumed.

    Raises
    ------
    UserError
        One line naming the file, node or tensor at fault and what is valid.
    """
    p = Path(path)
    fmt = _SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise UserError(
            f"cannot import {str(p)!r}: unknown model file suffix {p.suffix or '(none)'!r}; "
            f"valid: {', '.join(_SUFFIXES)}"
        )
    if not p.exists():
        raise UserError(f"model file {str(p)!r} does not exist")
    if not p.is_file():
        raise UserError(f"model file {str(p)!r} is not a file")
    return _READERS[fmt](p, tensor_map)


def _check_cfg(model: ImportedModel, cfg) -> None:
    if tuple(cfg.layers) != tuple(model.layers):
        raise UserError(
            f"config layers {'-'.join(map(str, cfg.layers))} do not match the model's layers "
            f"{'-'.join(map(str, model.layers))}; build the config with layers={model.layers}"
        )


def _sample_inputs(model: ImportedModel, cfg, samples: int, seed: int,
                   input_range=None) -> tuple[np.ndarray, float, tuple[float, float]]:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed!r}")
    if input_range is None:
        lim = float(min(cfg.act_fmt.max_value, 4.0))
        lo, hi = -lim, lim
    else:
        lo, hi = (float(v) for v in input_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise UserError(f"input range must be two finite numbers LO < HI, got {input_range!r}")
    x = np.random.default_rng(seed).uniform(lo, hi, size=(samples, model.layers[0]))
    return x, max(abs(lo), abs(hi)), (lo, hi)


def _clipped(values: np.ndarray, fmt: QFormat) -> np.ndarray:
    """Which values round (half to even) to a code outside ``fmt``: the ones saturation clips."""
    s = np.rint(np.ldexp(values, fmt.frac_bits))
    return (s < fmt.min_code) | (s > fmt.max_code)


def quantisation_report(model: ImportedModel, cfg, *, samples: int = 256, seed: int = 0, input_range=None) -> dict:
    """What quantising ``model`` to ``cfg``'s fixed-point formats does to it.

    Parameters
    ----------
    model : ImportedModel
        From :func:`read_model`.
    cfg : MamlConfig or MamlClsConfig
        Its ``layers`` must be ``model.layers``.
    samples, seed : int
        The sample batch: ``samples`` inputs drawn uniformly within
        ``+-min(act_fmt.max_value, 4.0)`` by ``numpy.random.default_rng(seed)``.

    Returns
    -------
    dict
        JSON-compatible: ``layers`` (per layer ``count``, ``saturated`` and
        ``to_zero`` in ``master_fmt``, ``saturated_weight_fmt``,
        ``max_abs_error`` of the dequantised values), ``total`` (the same over
        all layers), ``agreement`` (float model vs the fixed-point forward
        :func:`metafab.reference.maml_fixed.forward` on the batch:
        ``max_abs_error``, ``rms_error``, ``output_range`` and
        ``saturated_outputs`` of the float model, ``saturated_hidden``, and
        ``argmax_agreement`` for a softmax model) and ``formats`` (the
        config's master, weight and activation formats as strings).
    """
    _check_cfg(model, cfg)
    wq = maml_fixed.quantize_params(model.params, cfg)
    deq = maml_fixed.dequantize_params(wq, cfg)
    layers = []
    for li, ((w, b), (wd, bd), codes) in enumerate(zip(model.params, deq, wq, strict=True)):
        v = np.concatenate([w.ravel(), b.ravel()])
        vd = np.concatenate([wd.ravel(), bd.ravel()])
        c = np.concatenate([codes[:, :-1].ravel(), codes[:, -1].ravel()])
        wname, bname = model.names[li] if li < len(model.names) else (f"W{li}", f"b{li}")
        layers.append({
            "layer": li,
            "weight": wname,
            "bias": bname,
            "count": int(v.size),
            "saturated": int(np.count_nonzero(_clipped(v, cfg.master_fmt))),
            "saturated_weight_fmt": int(np.count_nonzero(_clipped(v, cfg.weight_fmt))),
            "to_zero": int(np.count_nonzero((v != 0) & (c == 0))),
            "max_abs_error": float(np.max(np.abs(vd - v))),
        })
    total = {key: int(sum(layer[key] for layer in layers))
             for key in ("count", "saturated", "saturated_weight_fmt", "to_zero")}
    total["max_abs_error"] = float(max(layer["max_abs_error"] for layer in layers))

    x, lim, rng_ = _sample_inputs(model, cfg, samples, seed, input_range)
    trace = mlp.forward_trace(model.params, x)
    y = trace.output
    y_codes, _ = maml_fixed.forward(wq, maml_fixed.quantize_inputs(x, cfg), cfg)
    yq = fx.to_float(y_codes, cfg.act_fmt)
    err = yq - y
    act = cfg.act_fmt
    hidden = [np.maximum(z, 0.0) for z in trace.pre[:-1]]
    agreement = {
        "samples": int(samples),
        "input_range": list(rng_),
        "max_abs_error": float(np.max(np.abs(err))),
        "rms_error": float(np.sqrt(np.mean(err**2))),
        "output_range": [float(y.min()), float(y.max())],
        "saturated_outputs": int(np.count_nonzero((y < act.min_value) | (y > act.max_value))),
        "saturated_hidden": int(sum(np.count_nonzero(h > act.max_value) for h in hidden)),
    }
    if model.softmax:
        agreement["argmax_agreement"] = float(np.mean(np.argmax(y, axis=1) == np.argmax(yq, axis=1)))
    return {
        "layers": layers,
        "total": total,
        "agreement": agreement,
        "formats": {name: str(getattr(cfg, name)) for name in ("master_fmt", "weight_fmt", "act_fmt")},
    }


def _fewest_int_bits(width: int, fits, what: str, need: float) -> QFormat:
    for int_bits in range(0, width + 1):
        fmt = QFormat(int_bits, width - int_bits)
        if fits(fmt):
            return fmt
    raise UserError(
        f"{what} {need:.6g} does not fit any signed {width}-bit format (the widest range is "
        f"{QFormat(width, 0).min_value:g}..{QFormat(width, 0).max_value:g}); use a wider format"
    )


def fit_formats(model: ImportedModel, cfg, *, samples: int = 256, seed: int = 0, input_range=None) -> dict:
    """Propose fixed-point formats of ``cfg``'s widths that hold ``model``'s range.

    The master and weight formats get the fewest integer bits in which every
    weight and bias quantises without saturation; the activation format the
    fewest in which the largest activation of every layer (hidden after the
    ReLU, and the output) of the float forward on the sample batch fits with
    10 % headroom, 1.0 (the bias input) and the sample inputs' bound (the
    inputs travel in the activation format too). The accumulator keeps its width
    and gets the fraction bits the new products need (unchanged when it
    already has them).

    Parameters
    ----------
    model : ImportedModel
        From :func:`read_model`.
    cfg : MamlConfig or MamlClsConfig
        Its ``layers`` must be ``model.layers``; its formats give the widths.
    samples, seed : int
        The sample batch, as :func:`quantisation_report` draws it (within
        ``+-min(cfg.act_fmt.max_value, 4.0)``).

    Returns
    -------
    dict
        ``master_fmt``, ``weight_fmt``, ``act_fmt``, ``acc_fmt`` as format
        strings (``"Q4.12"``) that ``cfg.replace(**...)`` accepts, and
        ``why``: the largest values, the activation headroom, per-layer
        maxima, and ``config_check`` (``"ok"`` or why ``cfg.replace`` with
        the proposal fails).
    """
    _check_cfg(model, cfg)
    values = np.concatenate([np.concatenate([w.ravel(), b.ravel()]) for w, b in model.params])
    max_w = float(np.max(np.abs(values)))

    def weights_fit(fmt):
        return not _clipped(values, fmt).any()

    weight = _fewest_int_bits(cfg.weight_fmt.width, weights_fit, "max |weight|", max_w)
    if cfg.master_fmt == cfg.weight_fmt:
        master = weight
    else:
        master = _fewest_int_bits(cfg.master_fmt.width, weights_fit, "max |weight|", max_w)
        if master.int_bits < weight.int_bits:  # master_fmt must contain weight_fmt
            master = QFormat(weight.int_bits, cfg.master_fmt.width - weight.int_bits)

    x, lim, rng_ = _sample_inputs(model, cfg, samples, seed, input_range)
    trace = mlp.forward_trace(model.params, x)
    per_layer = [float(np.max(np.maximum(z, 0.0))) for z in trace.pre[:-1]] + [float(np.max(np.abs(trace.output)))]
    max_act = max(per_layer)
    need_act = max(ACT_HEADROOM * max_act, 1.0, lim)  # the inputs are act_fmt codes too
    act = _fewest_int_bits(cfg.act_fmt.width, lambda f: f.max_value >= need_act, "max |activation| with headroom",
                           need_act)

    grad = cfg.grad_fmt
    need_frac = max(act.frac_bits + weight.frac_bits, weight.frac_bits + grad.frac_bits,
                    grad.frac_bits + act.frac_bits, master.frac_bits, cfg.acc_fmt.frac_bits)
    prob = getattr(cfg, "prob_fmt", None)
    if prob is not None:
        need_frac = max(need_frac, prob.frac_bits + cfg.lr_fmt.frac_bits)
    acc = QFormat(max(cfg.acc_fmt.width - need_frac, 1), need_frac)

    proposal = {"master_fmt": str(master), "weight_fmt": str(weight), "act_fmt": str(act), "acc_fmt": str(acc)}
    try:
        cfg.replace(**proposal)
        check = "ok"
    except UserError as exc:
        check = str(exc)
    proposal["why"] = {
        "max_abs_weight": max_w,
        "max_abs_activation": max_act,
        "max_abs_activation_per_layer": per_layer,
        "activation_headroom": ACT_HEADROOM,
        "activation_needed": need_act,
        "input_range": list(rng_),
        "samples": int(samples),
        "config_check": check,
    }
    return proposal


def write_imported(model: ImportedModel, path) -> Path:
    """Write ``model`` as a metafab weights file (:func:`metafab.reference.weights.save`).

    Parameters
    ----------
    model : ImportedModel
        From :func:`read_model`.
    path : str or os.PathLike
        The ``.npz`` file to write (parent folders are created).

    Returns
    -------
    pathlib.Path
        The written file; its metadata records ``imported_from``, ``layers``,
        ``softmax``, ``names`` and ``notes``, and :func:`read_model` reads it back.
    """
    metadata = {
        "kind": "imported",
        "imported_from": model.source,
        "layers": list(model.layers),
        "softmax": bool(model.softmax),
        "names": [list(pair) for pair in model.names],
        "notes": list(model.notes),
    }
    return weights_mod.save(path, model.params, metadata)
