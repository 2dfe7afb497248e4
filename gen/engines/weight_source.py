"""Where a MAML engine's initial weights come from: ``--weights auto|shipped|random|FILE``.

``FILE`` is a model made outside metafab or by ``metafab import`` / ``metafab train``: an ONNX graph, a
safetensors file or an ``.npz`` archive (:mod:`metafab.gen.model_import`). Unless the design's layers are
given (``--layers``, ``--config``, ``--set layers=...``), they are the model's. Both MAML engines
(regression and classification) read their weights through here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metafab.reference.errors import UserError

__all__ = ["WEIGHTS", "MODEL_SUFFIXES", "is_model_file", "weights_type", "check_weights", "add_weights_argument",
           "model_layers", "imported_params", "layers_text"]

#: The built-in sources; anything else must be a model file.
WEIGHTS = ("auto", "shipped", "random")
MODEL_SUFFIXES = (".onnx", ".safetensors", ".npz")


def layers_text(layers) -> str:
    return "-".join(str(int(n)) for n in layers)


def is_model_file(value) -> bool:
    """``value`` names a model file (not one of the built-in sources or words)."""
    return isinstance(value, str) and Path(value).suffix.lower() in MODEL_SUFFIXES


def weights_type(words: tuple[str, ...]):
    """An argparse type: one of ``words`` or the path of an existing model file."""

    def parse(text: str) -> str:
        if text in words:
            return text
        if Path(text).suffix.lower() not in MODEL_SUFFIXES:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither one of {', '.join(words)} nor a model file "
                f"({', '.join(MODEL_SUFFIXES)})")
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"model file {text!r} does not exist")
        return text

    parse.__name__ = "weights"  # argparse names the option's type in its messages
    return parse


def check_weights(value, words: tuple[str, ...] = WEIGHTS) -> str:
    """``value`` as a weights source (one of ``words`` or an existing model file), or a UserError."""
    try:
        return weights_type(words)(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"weights: {exc}") from None


def add_weights_argument(p, *, extra: tuple[str, ...] = (), help: str) -> None:
    """The ``--weights`` option of a MAML engine's command: a built-in source, ``extra`` words, or FILE."""
    words = (*WEIGHTS, *extra)
    p.add_argument("--weights", type=weights_type(words), default="auto", metavar="|".join(words) + "|FILE",
                   help=help + "; FILE: an ONNX, safetensors or .npz model (its layers become the design's "
                   "unless --layers is given; see metafab import)")


_CACHE: dict = {}


def _read(path: str, tensor_map: str | None):
    from metafab.gen.model_import import read_model

    if not Path(path).is_file():
        raise UserError(f"model file {str(path)!r} does not exist")
    key = (str(Path(path).resolve()), tensor_map)
    stat = Path(path).stat()
    if key not in _CACHE or _CACHE[key][0] != (stat.st_mtime_ns, stat.st_size):
        _CACHE[key] = ((stat.st_mtime_ns, stat.st_size), read_model(path, tensor_map=tensor_map))
    return _CACHE[key][1]


def model_layers(args) -> tuple[int, ...] | None:
    """The layers of the model that ``args.weights`` names, or None (a built-in source)."""
    value = getattr(args, "weights", None)
    if not is_model_file(value):
        return None
    return tuple(_read(value, getattr(args, "map", None)).layers)


def imported_params(cfg, path: str, *, tensor_map: str | None = None, classifier: bool = False):
    """The float parameters of the model file ``path`` for the design ``cfg`` and where they come from.

    A model whose layers are not the design's is a UserError naming both; so is a classifier's model that
    ends in a Softmax given to the regression engine (``classifier=False``): its outputs would be logits.
    """
    model = _read(path, tensor_map)
    if tuple(model.layers) != tuple(cfg.layers):
        raise UserError(f"the model in {path!r} has layers {layers_text(model.layers)}, the design "
                        f"{layers_text(cfg.layers)}; leave --layers out to take the model's")
    if model.softmax and not classifier:
        raise UserError(f"the model in {path!r} ends in a Softmax (a classifier): use the maml-cls engine")
    return [(w.copy(), b.copy()) for w, b in model.params], model.source
