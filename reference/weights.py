"""Weight files: save and load MLP parameters with their provenance, byte for byte reproducibly.

Format
------
A ``.npz`` archive (readable by :func:`numpy.load` with ``allow_pickle=False``)
holding ``W0, b0, W1, b1, ...`` as float64 ``.npy`` members and ``metadata``,
a 0-D unicode array with a JSON object (sorted keys) that records how the
weights were made: layers, seed, iterations, the reproducing command, the
learning rates, the numpy version. Members are stored uncompressed with a fixed
timestamp (1980-01-01) and fixed permissions, so the same parameters and
metadata always give the same bytes.

The meta-trained defaults ship in ``metafab/reference/data/`` and load with
:func:`load_sinusoid_init`, :func:`load_sinusoid_pretrained` and
:func:`load_digits_embedding`.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metafab.reference import mlp
from metafab.reference.errors import UserError
from metafab.reference.files import write_whole

__all__ = [
    "SINUSOID_INIT",
    "SINUSOID_INIT_K5",
    "SINUSOID_PRETRAINED",
    "DIGITS_EMBEDDING",
    "Weights",
    "to_bytes",
    "archive_bytes",
    "save",
    "load",
    "load_shipped",
    "load_sinusoid_init",
    "load_sinusoid_pretrained",
    "load_digits_embedding",
    "GLYPH_CLASSIFIERS",
    "glyph_classifier_file",
    "load_glyph_classifier",
]

#: Shipped file names (in ``metafab/reference/data/``).
SINUSOID_INIT = "sinusoid_maml_1-40-40-1.npz"
SINUSOID_INIT_K5 = "sinusoid_maml_1-40-40-1_k5.npz"
SINUSOID_PRETRAINED = "sinusoid_joint_1-40-40-1.npz"
DIGITS_EMBEDDING = "digits_proto_64-128-64.npz"
#: The shipped glyph classifiers (``metafab train glyphs``): method name -> (outer method, ANIL).
GLYPH_CLASSIFIERS = {"maml": ("maml", False), "fomaml": ("fomaml", False), "anil": ("maml", True),
                     "reptile": ("reptile", False), "pretrained": ("pretrain", False)}
GLYPH_LAYERS = "256-128-64-64-5"

_EPOCH = (1980, 1, 1, 0, 0, 0)

Params = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Weights:
    """Parameters and their provenance.

    Attributes
    ----------
    params : list of (W, b)
        float64 MLP parameters.
    metadata : dict
        JSON-compatible description of how they were made.
    """

    params: Params
    metadata: dict


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # (would turn a 0-D array into 1-D)
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def to_bytes(params, metadata: dict) -> bytes:
    """The ``.npz`` file contents for ``params`` and ``metadata`` (see the module docstring)."""
    params, shape = mlp.check_params(params)
    if shape.n_tasks is not None:
        raise UserError("params must be one network, not task-stacked")
    return archive_bytes(params, metadata)


def archive_bytes(params, metadata: dict) -> bytes:
    """``W0, b0, ...`` and the JSON ``metadata`` as reproducible ``.npz`` bytes (no check of the params'
    shapes: the callers check them; the encoder files use it too)."""
    try:
        text = json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"metadata must be JSON-compatible: {exc}") from exc
    members = []
    for i, (w, b) in enumerate(params):
        members += [(f"W{i}", w), (f"b{i}", b)]
    members.append(("metadata", np.array(text)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in members:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever the host
            archive.writestr(info, _npy_bytes(array))
    return buf.getvalue()


def save(path, params, metadata: dict) -> Path:
    """Write ``params`` and ``metadata`` to ``path`` (parent directories are created)."""
    return write_whole(path, to_bytes(params, metadata), "weights")


def _read(source, label: str) -> Weights:
    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{label} is not a metafab weights file: {exc or 'it is empty'}") from None
    n_layers = sum(1 for name in arrays if name.startswith("W"))
    try:
        params = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n_layers)]
        text = arrays["metadata"]
        if text.shape != () or text.dtype.kind != "U":
            raise ValueError("metadata")
        metadata = json.loads(str(text))
    except (KeyError, ValueError) as exc:
        raise UserError(f"{label} is not a metafab weights file: missing or bad {exc}") from exc
    params, _ = mlp.check_params(params, label)
    return Weights(params=params, metadata=metadata)


def load(path) -> Weights:
    """Read a weights file written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist")
    return _read(path, repr(str(path)))


def load_shipped(name: str) -> Weights:
    """Read one of the weights files shipped in ``metafab.reference``'s ``data/`` folder."""
    resource = importlib.resources.files("metafab.reference") / "data" / name
    if not resource.is_file():
        raise UserError(f"no shipped weights named {name!r}; shipped: {_shipped_names()}")
    with resource.open("rb") as f:
        return _read(io.BytesIO(f.read()), f"shipped weights {name!r}")


def _shipped_names() -> list[str]:
    data = importlib.resources.files("metafab.reference") / "data"
    return sorted(p.name for p in data.iterdir() if p.name.endswith(".npz"))


def load_sinusoid_init(k_shot: int = 10) -> Params:
    """The shipped MAML-trained initial parameters of the 1-40-40-1 sinusoid regressor.

    Parameters
    ----------
    k_shot : {10, 5}
        Support points per task the init was meta-trained with (10 is the default design).
    """
    files = {10: SINUSOID_INIT, 5: SINUSOID_INIT_K5}
    if k_shot not in files or isinstance(k_shot, bool):
        raise UserError(f"k_shot must be one of {sorted(files)} (shipped inits), got {k_shot!r}")
    return load_shipped(files[k_shot]).params


def load_sinusoid_pretrained() -> Params:
    """The shipped "pretrained" baseline: the same net regressed on all sinusoid tasks jointly."""
    return load_shipped(SINUSOID_PRETRAINED).params


def load_digits_embedding() -> Params:
    """The shipped prototypical-loss embedding network for 8x8 digits (64 pixels in, D out)."""
    return load_shipped(DIGITS_EMBEDDING).params


def glyph_classifier_file(method: str, k_shot: int) -> str:
    """File name of the shipped glyph classifier meta-trained by ``method`` (``maml``, ``fomaml``, ``anil``
    or ``reptile``) on 5-way ``k_shot``-shot episodes (1 or 5), or of the ``pretrained`` baseline."""
    if method not in GLYPH_CLASSIFIERS:
        raise UserError(f"glyph classifier method must be one of {', '.join(GLYPH_CLASSIFIERS)}, got {method!r}")
    if isinstance(k_shot, bool) or k_shot not in (1, 5):
        raise UserError(f"k_shot must be 1 or 5 (shipped glyph classifiers), got {k_shot!r}")
    outer, anil = GLYPH_CLASSIFIERS[method]
    if outer == "pretrain":  # one classifier over every meta-train class, for any shot count
        return f"glyphs_pretrain_{GLYPH_LAYERS}.npz"
    return f"glyphs_{outer}{'_anil' if anil else ''}_{GLYPH_LAYERS}_5w{k_shot}s.npz"


def load_glyph_classifier(method: str = "anil", k_shot: int = 1) -> Weights:
    """A shipped glyph classifier (parameters and metadata; see :func:`glyph_classifier_file`)."""
    return load_shipped(glyph_classifier_file(method, k_shot))
