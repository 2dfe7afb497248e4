"""Matching Networks read-out (Vinyals et al. 2016) in float64: cosine attention over a support set.

For a query embedding ``q`` and support embeddings ``s_1 .. s_M`` with labels
``y_1 .. y_M``::

    c_j    = cos(q, s_j) = q . s_j / (|q| |s_j|)
    a_j    = exp(c_j) / sum_k exp(c_k)                (softmax over the support set)
    p_n    = sum_{j : y_j = n} a_j                    (attention times one-hot labels)
    pred   = argmax_n p_n

Conventions: a zero vector (query or support) has cosine similarity 0 with
everything; ties in ``argmax`` go to the lowest class index.

References
----------
O. Vinyals, C. Blundell, T. Lillicrap, K. Kavukcuoglu, D. Wierstra,
"Matching Networks for One Shot Learning", NeurIPS 2016.
"""

from __future__ import annotations

import numpy as np

from metafab.reference.arrays import as_float_array
from metafab.reference.softmax import softmax
from metafab.reference.support_set import check_queries, check_support_set

__all__ = ["cosine_similarity", "attention", "readout"]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows divided by their Euclidean norm; zero rows stay zero."""
    norm = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def cosine_similarity(query, support) -> np.ndarray:
    """Cosine similarity of each query row to each support row.

    Parameters
    ----------
    query : array_like
        float ``(D,)`` or ``(Q, D)``.
    support : array_like
        float ``(M, D)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(M,)`` for one query, ``(Q, M)`` for a batch; 0 where either
        vector is zero.
    """
    s = as_float_array("support", support, ndims=(2,))
    q, single = check_queries(query, s.shape[1])
    sims = _unit_rows(q) @ _unit_rows(s).T
    return sims[0] if single else sims


def attention(query, support) -> np.ndarray:
    """Softmax over the support set of the cosine similarities: ``(M,)`` or ``(Q, M)``."""
    return softmax(cosine_similarity(query, support))


def readout(query, support, support_labels, n_classes):
    """Matching-network class probabilities and predicted class.

    Parameters
    ----------
    query : array_like
        float query embedding ``(D,)`` or a batch ``(Q, D)``.
    support : array_like
        float support embeddings ``(M, D)``, ``M >= 1``.
    support_labels : array_like of int
        ``(M,)`` class of each support embedding, in ``[0, n_classes)``; every
        class needs at least one support embedding.
    n_classes : int
        Number of classes ``N``.

    Returns
    -------
    probs : numpy.ndarray
        float64 ``(N,)`` (or ``(Q, N)``): attention summed per class; rows sum to 1.
    pred : int or numpy.ndarray
        The class of largest probability (lowest index on ties); an int for one
        query, an int64 ``(Q,)`` array for a batch.
    """
    s, labels, n = check_support_set(support, support_labels, n_classes)
    q, single = check_queries(query, s.shape[1])
    att = softmax(_unit_rows(q) @ _unit_rows(s).T)
    probs = att @ np.eye(n)[labels]
    pred = np.argmax(probs, axis=-1)
    if single:
        return probs[0], int(pred[0])
    return probs, pred
