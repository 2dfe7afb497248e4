"""Checked conversion of user-supplied values into float64 arrays, labels and counts.

Every public function of the float64 reference passes its inputs through here,
so that a bad value fails at once with a :class:`UserError` that names the
argument, says what was received and what would be valid.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from metafab.reference.errors import UserError

__all__ = ["as_float_array", "as_labels", "as_count", "as_rate", "as_generator"]


def _shape_words(ndims: tuple[int, ...]) -> str:
    return " or ".join(f"{n}-D" for n in ndims)


def as_float_array(name: str, value, *, ndims: tuple[int, ...]) -> np.ndarray:
    """Return ``value`` as a float64 array with one of the allowed dimensionalities.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    value : array_like
        Real numbers (bool, integer or floating point).
    ndims : tuple of int
        Allowed numbers of dimensions.

    Returns
    -------
    numpy.ndarray
        float64 array (a copy only if a conversion was needed).

    Raises
    ------
    UserError
        If ``value`` is not numeric, has the wrong number of dimensions, has a
        zero-length axis, or holds NaN or infinity.
    """
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise UserError(f"{name} must be an array of real numbers, got {value!r:.80}") from exc
    if raw.dtype.kind not in "biuf":
        raise UserError(f"{name} must hold real numbers, got dtype {raw.dtype}")
    arr = raw.astype(np.float64, copy=False)
    if arr.ndim not in ndims:
        raise UserError(f"{name} must be {_shape_words(ndims)}, got shape {arr.shape}")
    if arr.size == 0:
        raise UserError(f"{name} must not be empty, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(f"{name} must be finite, got {arr[where]} at index {where}")
    return arr


def as_labels(name: str, value, *, n_classes: int, length: int) -> np.ndarray:
    """Return class labels as an int64 vector of ``length`` entries in ``[0, n_classes)``.

    Raises
    ------
    UserError
        If the labels are not integers, have the wrong shape, or lie outside
        ``[0, n_classes)``.
    """
    raw = np.asarray(value)
    if raw.dtype.kind not in "iu":
        raise UserError(f"{name} must be integer class labels, got dtype {raw.dtype}")
    if raw.shape != (length,):
        raise UserError(f"{name} must have shape ({length},) to match the data, got {raw.shape}")
    out_of_range = (raw < 0) | (raw >= n_classes)
    if out_of_range.any():
        bad = raw[out_of_range][0]
        raise UserError(
            f"{name} must lie in [0, {n_classes - 1}] (n_classes={n_classes}), got {bad}"
        )
    return raw.astype(np.int64)


def as_count(name: str, value, *, minimum: int = 0) -> int:
    """Return ``value`` as a Python int ``>= minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_rate(name: str, value, *, positive: bool = False) -> float:
    """Return ``value`` as a finite float ``>= 0`` (``> 0`` when ``positive``)."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a finite number {bound}, got {value!r}")
    rate = float(value)
    if not math.isfinite(rate) or rate < 0 or (positive and rate == 0):
        raise UserError(f"{name} must be a finite number {bound}, got {value!r}")
    return rate


def as_generator(name: str, value) -> np.random.Generator:
    """Return ``value`` if it is a :class:`numpy.random.Generator`."""
    if not isinstance(value, np.random.Generator):
        raise UserError(
            f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(value).__name__}"
        )
    return value
