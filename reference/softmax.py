"""Softmax and log-softmax along the last axis in float64, without overflow.

The maximum of each row is subtracted before ``exp``, so every exponent is
``<= 0`` and no overflow (or warning) can occur for finite inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "log_softmax"]


def softmax(scores: np.ndarray) -> np.ndarray:
    """``exp(s_i) / sum_j exp(s_j)`` along the last axis."""
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """``s_i - log(sum_j exp(s_j))`` along the last axis."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
