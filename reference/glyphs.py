"""Few-shot episodes from the shipped glyphs set: an Omniglot-like set of letters (no download).

The set (``data/glyphs16.npz``, made by ``metafab data glyphs``, see
``docs/datasets.md``) has one class per letter of 15 Unicode scripts and 20
grey 16x16 renders per class, each with its own font face, affine distortion
and stroke noise. The arrays are shipped, so results do not depend on the
installed fonts or Pillow; :data:`SHA256` is the checksum of their bytes.

As Omniglot splits by alphabet, the classes are split by script
(:data:`SCRIPT_SPLIT`): meta-train, meta-validation and meta-test share no
script, so no test letter is ever seen in training.

An N-way K-shot episode with Q queries per class draws N distinct classes of
the split in random order (episode label ``n`` is class ``classes[n]``), then
``K + Q`` distinct samples of each class: the first K are the support set, the
rest the queries. Rows are grouped by label, ``0`` first; pixels are float64
``ink / 255`` in ``[0, 1]``, flattened row-major to 256 features.
:func:`episodes` draws episode ``i`` from its own stream
``default_rng([seed, i])``, so episode ``i`` is the same whatever the count.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metafab.reference.arrays import as_count, as_generator
from metafab.reference.digits import Episode
from metafab.reference.errors import UserError
from metafab.reference.files import write_whole

__all__ = [
    "SPLITS",
    "SCRIPT_SPLIT",
    "SAMPLES",
    "SHIPPED",
    "SHA256",
    "GlyphSet",
    "load",
    "load_shipped",
    "to_bytes",
    "save",
    "array_digest",
    "EpisodeSampler",
    "EpisodeBatch",
    "episode_batch",
    "episodes",
    "prototype_baseline",
]

SPLITS = ("train", "validation", "test")

#: The split of every script (fixed; about 60 / 15 / 25 % of the classes).
SCRIPT_SPLIT = {
    "Canadian syllabics": "train",
    "Latin": "train",
    "Arabic": "train",
    "Cyrillic": "train",
    "Georgian": "validation",
    "Greek": "validation",
    "Armenian": "validation",
    "Hebrew": "validation",
    "Ogham": "validation",
    "IPA": "test",
    "Tifinagh": "test",
    "Lao": "test",
    "Old Cyrillic": "test",
    "N'Ko": "test",
    "Lisu": "test",
}

SAMPLES = 20
SHIPPED = "glyphs16.npz"
#: sha256 of the shipped arrays (:func:`array_digest`), not of the file.
SHA256 = "8550f3abb2d5e05bc732179bd283523025ac5cf4fb76266da3cc477747d0e96d"

_FIELDS = ("images", "codepoints", "scripts", "splits", "script_names", "seed")


@dataclass(frozen=True)
class GlyphSet:
    """The glyphs set.

    Attributes
    ----------
    images : numpy.ndarray
        uint8 ``(C, 20, S, S)`` renders, ink 255 on 0 (read-only).
    codepoints : numpy.ndarray
        int64 ``(C,)``: the letter of each class.
    scripts : numpy.ndarray
        int64 ``(C,)``: index into ``script_names``.
    splits : numpy.ndarray
        int64 ``(C,)``: index into :data:`SPLITS`.
    script_names : tuple of str
    seed : int
        The seed it was made with.
    """

    images: np.ndarray
    codepoints: np.ndarray
    scripts: np.ndarray
    splits: np.ndarray
    script_names: tuple[str, ...]
    seed: int

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def classes_of(self, split: str) -> np.ndarray:
        """int64 indices of the classes in ``split`` (one of :data:`SPLITS`)."""
        if split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return np.flatnonzero(self.splits == SPLITS.index(split))

    def counts(self) -> list[tuple[str, str, int]]:
        """``(script, split, classes)`` for every script, in script order."""
        return [(name, SPLITS[int(self.splits[self.scripts == s][0])], int(np.sum(self.scripts == s)))
                for s, name in enumerate(self.script_names) if np.any(self.scripts == s)]


def array_digest(arrays) -> str:
    """sha256 over the named arrays (dtype, shape and bytes of each, in a fixed order)."""
    h = hashlib.sha256()
    for name in _FIELDS:
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        if a.dtype.kind == "U":  # names: their UTF-8 text, whatever the array's string width
            h.update(f"{name}|text|".encode() + "\0".join(a.tolist()).encode("utf-8"))
            continue
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def to_bytes(arrays) -> bytes:
    """The ``.npz`` contents for the named arrays: deflate-compressed, fixed member dates (same arrays, same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in _FIELDS:
            member, a = io.BytesIO(), np.asarray(arrays[name])
            a = a if a.flags.c_contiguous else np.ascontiguousarray(a)  # (which would make a 0-D array 1-D)
            np.lib.format.write_array(member, a, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever the host
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buf.getvalue()


def save(path, arrays) -> Path:
    """Write the named arrays to ``path`` (:func:`to_bytes`; parent folders are created)."""
    return write_whole(path, to_bytes(arrays), "the glyphs set")


def _from_arrays(arrays, label: str) -> GlyphSet:
    missing = [k for k in _FIELDS if k not in arrays]
    if missing:
        raise UserError(f"{label} is not a glyphs set: it lacks {', '.join(missing)}")
    images = np.array(arrays["images"], dtype=np.uint8)
    if images.ndim != 4 or images.shape[1] != SAMPLES or images.shape[2] != images.shape[3]:
        raise UserError(f"{label}: images must be (classes, {SAMPLES}, size, size), got {images.shape}")
    out = {k: np.array(arrays[k]) for k in ("codepoints", "scripts", "splits")}
    for a in (images, *out.values()):
        a.flags.writeable = False
    return GlyphSet(images=images, script_names=tuple(str(s) for s in arrays["script_names"]),
                    seed=int(arrays["seed"]), **out)


def load(path) -> GlyphSet:
    """Read a glyphs set written by ``metafab data glyphs``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return _from_arrays({k: f[k] for k in f.files}, repr(str(path)))
    except FileNotFoundError:
        raise UserError(f"glyphs file {str(path)!r} does not exist") from None


@functools.lru_cache(maxsize=1)
def load_shipped(check: bool = True) -> GlyphSet:
    """The shipped 16x16 set; ``check`` compares its arrays with :data:`SHA256` (UserError if they differ)."""
    resource = importlib.resources.files("metafab.reference") / "data" / SHIPPED
    with resource.open("rb") as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if check and array_digest(arrays) != SHA256:
        raise UserError(f"the shipped {SHIPPED} does not match its checksum; reinstall metafab")
    return _from_arrays(arrays, f"shipped {SHIPPED}")


@dataclass(frozen=True, kw_only=True)
class EpisodeSampler:
    """Sampler of N-way K-shot episodes from one split of a glyphs set.

    Parameters
    ----------
    split : str
        ``"train"``, ``"validation"`` or ``"test"`` (default).
    n_way : int
        Classes per episode, 1 .. the classes of the split.
    k_shot : int
        Support samples per class, >= 1.
    n_query : int
        Query samples per class, >= 1, with ``k_shot + n_query <= 20``.
    data : GlyphSet or None
        The set (default: the shipped one).
    """

    split: str = "test"
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    data: GlyphSet | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.data is None:
            object.__setattr__(self, "data", load_shipped())
        pool = self.data.classes_of(self.split)
        as_count("n_way", self.n_way, minimum=1)
        if self.n_way > len(pool):
            raise UserError(f"n_way must be at most the {len(pool)} classes of the {self.split} split, "
                            f"got {self.n_way}")
        as_count("k_shot", self.k_shot, minimum=1)
        as_count("n_query", self.n_query, minimum=1)
        if self.k_shot + self.n_query > SAMPLES:
            raise UserError(f"k_shot + n_query must be at most {SAMPLES} (samples per class), "
                            f"got {self.k_shot} + {self.n_query}")

    @property
    def pixels(self) -> int:
        return self.data.size ** 2

    def sample(self, rng: np.random.Generator) -> Episode:
        """Draw one episode (draws: class order, then each class's samples in label order).

        ``Episode.classes`` holds class indices of the set (``data.codepoints[classes]`` are the letters).
        """
        rng = as_generator("rng", rng)
        pool = self.data.classes_of(self.split)
        chosen = rng.choice(pool, size=self.n_way, replace=False)
        k, q = self.k_shot, self.n_query
        picks = np.stack([rng.permutation(SAMPLES)[: k + q] for _ in chosen])  # (N, K+Q)
        x = self.data.images[chosen[:, None], picks].reshape(self.n_way, k + q, -1).astype(np.float64) / 255.0
        labels = np.arange(self.n_way, dtype=np.int64)
        return Episode(
            support=x[:, :k].reshape(-1, x.shape[-1]),
            support_labels=np.repeat(labels, k),
            query=x[:, k:].reshape(-1, x.shape[-1]),
            query_labels=np.repeat(labels, q),
            classes=chosen.astype(np.int64),
        )

    __call__ = sample


@dataclass(frozen=True)
class EpisodeBatch:
    """``T`` episodes stacked for meta-training (the shape :func:`metafab.reference.meta_train.meta_train`
    takes; the targets are labels).

    Attributes
    ----------
    x_support, x_query : numpy.ndarray
        float64 ``(T, N*K, pixels)`` and ``(T, N*Q, pixels)``, grey levels in ``[0, 1]``.
    y_support, y_query : numpy.ndarray
        int64 ``(T, N*K)`` and ``(T, N*Q)``: episode labels ``0 .. N-1``.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray


def episode_batch(sampler: EpisodeSampler, rng: np.random.Generator, n_tasks: int) -> EpisodeBatch:
    """``n_tasks`` episodes of ``sampler`` drawn from ``rng`` one after the other, stacked."""
    eps = [sampler.sample(rng) for _ in range(as_count("n_tasks", n_tasks, minimum=1))]
    return EpisodeBatch(np.stack([e.support for e in eps]), np.stack([e.support_labels for e in eps]),
                        np.stack([e.query for e in eps]), np.stack([e.query_labels for e in eps]))


def episodes(sampler: EpisodeSampler, n: int, seed: int):
    """``n`` episodes; episode ``i`` comes from ``default_rng([seed, i])`` (the same whatever ``n`` is)."""
    as_count("n", n, minimum=0)
    as_count("seed", seed, minimum=0)
    for i in range(n):
        yield sampler.sample(np.random.default_rng([seed, i]))


def prototype_baseline(*, n_way: int = 5, k_shot: int = 1, n_query: int = 15, n_episodes: int = 1000,
                       seed: int = 0, split: str = "test", data: GlyphSet | None = None) -> tuple[float, float]:
    """Accuracy of the nearest class prototype on raw pixels over :func:`episodes` (float64).

    Each episode's prototypes are the class means of its support pixels
    (:func:`metafab.reference.proto.prototypes`); a query goes to the nearest
    one in squared Euclidean distance. Returns ``(mean, half-width)`` in
    percent: the mean of the per-episode accuracies and the half-width of its
    95 % normal interval, ``1.96 * std / sqrt(n_episodes)``.
    """
    from metafab.reference import proto

    as_count("n_episodes", n_episodes, minimum=2)
    sampler = EpisodeSampler(split=split, n_way=n_way, k_shot=k_shot, n_query=n_query, data=data)
    acc = []
    for ep in episodes(sampler, n_episodes, seed):
        _, pred = proto.readout(ep.query, proto.prototypes(ep.support, ep.support_labels, n_way))
        acc.append(np.mean(pred == ep.query_labels))
    acc = 100.0 * np.asarray(acc)
    return float(acc.mean()), float(1.96 * acc.std(ddof=1) / np.sqrt(len(acc)))
