"""Few-shot episodes from scikit-learn's bundled 8x8 handwritten digits (no download).

The data is ``sklearn.datasets.load_digits()``: 1797 images of the digits 0-9,
8x8 pixels of intensity 0..16, about 180 per class. Pixels are scaled to
``[0, 1]`` (divided by 16) and flattened to 64 float64 features.

Class split: meta-training draws episodes only from the digits
:data:`META_TRAIN_CLASSES` = 0-4 and meta-testing only from
:data:`META_TEST_CLASSES` = 5-9, so no test class (and no test image) is ever
seen in training. With ten classes and 5-way tests this is the only way to
keep the two disjoint: meta-training episodes are therefore always 5-way over
the same five digits, and only their samples and label order vary.

An N-way K-shot episode with Q queries per class draws N distinct classes of
the pool in random order (episode label ``n`` is digit ``classes[n]``), then
``K + Q`` distinct images of each class: the first K are the support set, the
rest the queries. Support and query rows are grouped by label, ``0`` first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from metafab.reference.arrays import as_count, as_generator
from metafab.reference.errors import UserError

__all__ = [
    "META_TRAIN_CLASSES",
    "META_TEST_CLASSES",
    "PIXELS",
    "Episode",
    "EpisodeSampler",
    "images",
]

META_TRAIN_CLASSES = (0, 1, 2, 3, 4)
META_TEST_CLASSES = (5, 6, 7, 8, 9)
PIXELS = 64


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64) / 16.0
    y = np.asarray(data.target, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def images() -> tuple[np.ndarray, np.ndarray]:
    """All digit images and labels.

    Returns
    -------
    x : numpy.ndarray
        float64 ``(1797, 64)`` pixels in ``[0, 1]``, row-major 8x8 (read-only).
    y : numpy.ndarray
        int64 ``(1797,)`` digit of each image (read-only).
    """
    return _load()


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot episode.

    Attributes
    ----------
    support : numpy.ndarray
        float64 ``(N*K, 64)``.
    support_labels : numpy.ndarray
        int64 ``(N*K,)`` episode labels ``0 .. N-1``.
    query : numpy.ndarray
        float64 ``(N*Q, 64)``.
    query_labels : numpy.ndarray
        int64 ``(N*Q,)``.
    classes : numpy.ndarray
        int64 ``(N,)``: the digit behind each episode label.
    """

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    classes: np.ndarray

    @property
    def n_way(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, kw_only=True)
class EpisodeSampler:
    """Sampler of N-way K-shot episodes from a pool of digit classes.

    Parameters
    ----------
    classes : tuple of int
        The digit classes episodes are drawn from (default: the meta-test digits 5-9).
    n_way : int
        Classes per episode, 1 .. ``len(classes)``.
    k_shot : int
        Support images per class, >= 1.
    n_query : int
        Query images per class, >= 1.
    """

    classes: tuple[int, ...] = META_TEST_CLASSES
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15

    def __post_init__(self):
        pool = tuple(self.classes)
        if not pool or len(set(pool)) != len(pool) or any(c not in range(10) for c in pool):
            raise UserError(f"classes must be distinct digits 0-9, got {self.classes!r}")
        as_count("n_way", self.n_way, minimum=1)
        if self.n_way > len(pool):
            raise UserError(
                f"n_way must be at most the {len(pool)} classes of the pool, got {self.n_way}"
            )
        as_count("k_shot", self.k_shot, minimum=1)
        as_count("n_query", self.n_query, minimum=1)
        _, y = images()
        smallest = int(min(np.sum(y == c) for c in pool))
        if self.k_shot + self.n_query > smallest:
            raise UserError(
                f"k_shot + n_query must be at most {smallest} (images in the smallest class), "
                f"got {self.k_shot} + {self.n_query}"
            )

    def sample(self, rng: np.random.Generator) -> Episode:
        """Draw one episode (draws: class order, then each class's images in label order)."""
        rng = as_generator("rng", rng)
        x, y = images()
        chosen = rng.choice(np.asarray(self.classes), size=self.n_way, replace=False)
        k = self.k_shot
        support, query = [], []
        for digit in chosen:
            idx = rng.choice(np.flatnonzero(y == digit), size=k + self.n_query, replace=False)
            support.append(idx[:k])
            query.append(idx[k:])
        labels = np.arange(self.n_way, dtype=np.int64)
        return Episode(
            support=x[np.concatenate(support)],
            support_labels=np.repeat(labels, k),
            query=x[np.concatenate(query)],
            query_labels=np.repeat(labels, self.n_query),
            classes=chosen.astype(np.int64),
        )

    __call__ = sample
