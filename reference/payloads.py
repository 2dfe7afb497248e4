"""Payload encoding of every engine: the words of LOAD and RUN requests and of RUN responses.

One module for each direction of every engine's packets, used alike by the
cocotb benches, the host driver, the board tops' preloads, the manifests and
the tests (the packet framing itself is :mod:`metafab.reference.protocol`;
the lengths are the configs' ``load_words`` / ``run_words`` / ``result_words``).
Every code is a two's-complement integer in the format the config names for
its role; a 32-bit word holds one code, sign-extended, unless a config packs
more (``MatchConfig.query_pack``).
"""

from __future__ import annotations

import numpy as np

from metafab.reference.config import MamlConfig, MatchConfig
from metafab.reference.protocol import pack_codes, to_words

__all__ = [
    "maml_weight_codes",
    "maml_load_words",
    "maml_run_words",
    "maml_weights_from_words",
    "maml_cls_run_words",
    "match_load_words",
    "match_run_words",
    "FEWSHOT_PIXELS_PER_WORD",
    "fewshot_image_words",
    "fewshot_encoder_words",
    "fewshot_load_words",
    "fewshot_run_words",
]


def maml_weight_codes(wq) -> list[int]:
    """The augmented master-format weight codes ``[W | b]`` in protocol order (layer by layer, row-major),
    as signed integers."""
    return [int(v) for w in wq for v in np.asarray(w).reshape(-1)]


def maml_load_words(wq) -> list[int]:
    """MAML LOAD payload: :func:`maml_weight_codes` as 32-bit words."""
    return to_words(maml_weight_codes(wq))


def maml_weights_from_words(cfg: MamlConfig, words) -> list[np.ndarray]:
    """The inverse of :func:`maml_load_words`: protocol-order codes back to augmented weight matrices."""
    out, at = [], 0
    flat = np.asarray(words, dtype=np.int64)
    for o, i in cfg.weight_shapes:
        out.append(flat[at: at + o * i].reshape(o, i))
        at += o * i
    return out


def maml_run_words(xs, ys, xq) -> list[int]:
    """MAML RUN payload of one task's act-format codes: support pairs ``(x, y)`` sample by sample, then
    the query inputs."""
    xs, ys, xq = (np.asarray(a, dtype=np.int64) for a in (xs, ys, xq))
    support = np.concatenate([xs, ys], axis=1).reshape(-1)
    return to_words(np.concatenate([support, xq.reshape(-1)]))


def maml_cls_run_words(xs, labels, xq) -> list[int]:
    """Classification RUN payload of one episode: per support sample its act-format input codes, then
    its class label (one word), then the query inputs."""
    xs, labels, xq = (np.asarray(a, dtype=np.int64) for a in (xs, labels, xq))
    support = np.concatenate([xs, labels.reshape(-1, 1)], axis=1).reshape(-1)
    return to_words(np.concatenate([support, xq.reshape(-1)]))


def match_load_words(support, labels) -> list[int]:
    """Similarity LOAD payload of a support set: per support row its label, then its ``D`` emb_fmt codes."""
    out = []
    for row, lab in zip(np.asarray(support, dtype=np.int64), np.asarray(labels, dtype=np.int64), strict=True):
        out.append(int(lab))
        out += to_words(row)
    return out


def match_run_words(query, cfg: MatchConfig) -> list[int]:
    """Similarity RUN payload of one query: its ``D`` emb_fmt codes, ``cfg.query_pack`` to a word."""
    return pack_codes(np.asarray(query, dtype=np.int64).reshape(-1), cfg.query_pack)


#: Pixel codes (16-bit fields) in one payload word of the few-shot engine's LOAD and RUN.
FEWSHOT_PIXELS_PER_WORD = 2


def fewshot_image_words(n_pixels: int) -> int:
    """Payload words of one image of ``n_pixels`` codes (:func:`fewshot_run_words`)."""
    return -(-int(n_pixels) // FEWSHOT_PIXELS_PER_WORD)


def fewshot_encoder_words(wq) -> list[int]:
    """Few-shot LOAD_ENCODER payload: the augmented ``weight_fmt`` codes of every conv / dense layer
    (:func:`metafab.reference.encoder.quantize_encoder`), layer by layer, row-major, one per word."""
    return to_words(np.concatenate([np.asarray(w, dtype=np.int64).reshape(-1) for w in wq]))


def fewshot_run_words(image) -> list[int]:
    """Few-shot RUN payload of one query image: its ``C H W`` act_fmt codes (row-major), two per word."""
    return pack_codes(np.asarray(image, dtype=np.int64).reshape(-1), FEWSHOT_PIXELS_PER_WORD)


def fewshot_load_words(images, labels) -> list[int]:
    """Few-shot LOAD payload of a support set: per support image its label, then its codes two per word."""
    out = []
    for im, lab in zip(np.asarray(images, dtype=np.int64), np.asarray(labels, dtype=np.int64), strict=True):
        out.append(int(lab))
        out += fewshot_run_words(im)
    return out
