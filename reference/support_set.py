"""Checks shared by the similarity read-outs: queries, a labelled support set, class counts."""

from __future__ import annotations

import numpy as np

from metafab.reference.arrays import as_count, as_float_array, as_labels
from metafab.reference.errors import UserError

__all__ = ["check_queries", "check_support_set"]


def check_queries(query, dim: int | None = None, name: str = "query") -> tuple[np.ndarray, bool]:
    """Return queries as float64 ``(Q, D)`` and whether a single ``(D,)`` query was given."""
    q = as_float_array(name, query, ndims=(1, 2))
    single = q.ndim == 1
    q = q[None, :] if single else q
    if dim is not None and q.shape[-1] != dim:
        raise UserError(
            f"{name} must have dimension {dim} like the support set, got shape {np.shape(query)}"
        )
    return q, single


def check_support_set(
    support, support_labels, n_classes, *, name: str = "support"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a labelled support set in which every class has at least one sample.

    Returns
    -------
    support : numpy.ndarray
        float64 ``(M, D)``.
    labels : numpy.ndarray
        int64 ``(M,)`` in ``[0, n_classes)``.
    n_classes : int

    Raises
    ------
    UserError
        For an empty or non-2-D support set, NaN/inf, labels of the wrong shape
        or out of range, or a class without any support sample.
    """
    n_classes = as_count("n_classes", n_classes, minimum=1)
    s = as_float_array(name, support, ndims=(2,))
    labels = as_labels(f"{name}_labels", support_labels, n_classes=n_classes, length=s.shape[0])
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise UserError(
            f"{name}_labels must give every class in [0, {n_classes - 1}] at least one sample, "
            f"classes {missing} have none"
        )
    return s, labels, n_classes
