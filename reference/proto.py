"""Prototypical Networks (Snell et al. 2017) in float64: class prototypes and distance read-out.

A class prototype is the mean of the support embeddings of that class;
a query ``q`` is scored by the negative squared Euclidean distance to each
prototype ``c_n``::

    p_n  = exp(-|q - c_n|^2) / sum_m exp(-|q - c_m|^2)
    pred = argmax_n p_n          (ties go to the lowest class index)

:func:`loss_and_grads` is the episodic training loss (mean cross-entropy of the
query labels under ``p``) with its analytic gradient, used to meta-train the
embedding network.

References
----------
J. Snell, K. Swersky, R. Zemel, "Prototypical Networks for Few-shot
Learning", NeurIPS 2017.
"""

from __future__ import annotations

import numpy as np

from metafab.reference.arrays import as_float_array, as_labels
from metafab.reference.softmax import log_softmax, softmax
from metafab.reference.support_set import check_queries, check_support_set

__all__ = ["prototypes", "squared_distances", "readout", "loss_and_grads"]


def prototypes(support, support_labels, n_classes) -> np.ndarray:
    """Class means of the support embeddings.

    Parameters
    ----------
    support : array_like
        float ``(M, D)`` support embeddings.
    support_labels : array_like of int
        ``(M,)`` labels in ``[0, n_classes)``; every class needs a sample.
    n_classes : int
        Number of classes ``N``.

    Returns
    -------
    numpy.ndarray
        float64 ``(N, D)``: row ``n`` is the mean of the support rows labelled ``n``.
    """
    s, labels, n = check_support_set(support, support_labels, n_classes)
    return _class_means(s, labels, n)


def _class_means(s: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    one_hot = np.eye(n)[labels]  # (M, N)
    return (one_hot.T @ s) / one_hot.sum(axis=0)[:, None]


def squared_distances(query: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """``|q_i - c_n|^2`` for float64 ``(Q, D)`` queries and ``(N, D)`` prototypes: ``(Q, N)``."""
    diff = query[:, None, :] - protos[None, :, :]
    return np.einsum("qnd,qnd->qn", diff, diff)


def readout(query, prototypes):
    """Prototypical-network class probabilities and predicted class.

    Parameters
    ----------
    query : array_like
        float query embedding ``(D,)`` or a batch ``(Q, D)``.
    prototypes : array_like
        float ``(N, D)`` class prototypes (see :func:`prototypes`).

    Returns
    -------
    probs : numpy.ndarray
        float64 ``(N,)`` (or ``(Q, N)``): softmax of minus the squared distances.
    pred : int or numpy.ndarray
        The nearest prototype (lowest index on ties); an int for one query, an
        int64 ``(Q,)`` array for a batch.
    """
    c = as_float_array("prototypes", prototypes, ndims=(2,))
    q, single = check_queries(query, c.shape[1])
    probs = softmax(-squared_distances(q, c))
    pred = np.argmax(probs, axis=-1)
    if single:
        return probs[0], int(pred[0])
    return probs, pred


def loss_and_grads(support, support_labels, query, query_labels, n_classes):
    """Prototypical loss of one episode and its gradient with respect to the embeddings.

    ``loss = -mean_i log p_{y_i}(q_i)`` with ``p`` as in :func:`readout` and
    the prototypes computed from the support set.

    Returns
    -------
    loss : float
    d_support : numpy.ndarray
        float64 ``(M, D)``: dloss/dsupport.
    d_query : numpy.ndarray
        float64 ``(Q, D)``: dloss/dquery.
    """
    s, labels, n = check_support_set(support, support_labels, n_classes)
    q, _ = check_queries(query, s.shape[1])
    q_labels = as_labels("query_labels", query_labels, n_classes=n, length=q.shape[0])
    one_hot = np.eye(n)[labels]
    counts = one_hot.sum(axis=0)
    c = (one_hot.T @ s) / counts[:, None]
    logits = -squared_distances(q, c)  # (Q, N)
    target = np.eye(n)[q_labels]
    loss = -float(np.mean(np.sum(target * log_softmax(logits), axis=-1)))
    g = (softmax(logits) - target) / q.shape[0]  # dloss/dlogits
    # logits_in = -|q_i - c_n|^2: d/dq_i = -2 (q_i - c_n), d/dc_n = 2 (q_i - c_n)
    d_query = -2.0 * (g.sum(axis=1)[:, None] * q - g @ c)
    d_protos = 2.0 * (g.T @ q - g.sum(axis=0)[:, None] * c)
    d_support = one_hot @ (d_protos / counts[:, None])
    return loss, d_support, d_query
