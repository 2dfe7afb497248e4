"""A user's own workload (``--input FILE`` on ``sim``, ``verify`` and ``run``): tasks, episodes, support sets.

Two file kinds, the same fields:

- **JSON**: a list of objects, one per task or episode, each with the engine's fields as (nested) lists
  of real numbers (labels as integers);
- **npz** (:func:`numpy.savez`): one array per field whose first axis runs over the tasks or episodes
  (``xs`` of shape ``(T, K, n_in)``, ...).

Every array is checked against the design (its shape, labels in range, finite numbers); a mistake is one
line naming the file, the item, the field and what the design needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metafab.reference.errors import UserError

__all__ = ["read_items", "INPUT_HELP"]

#: What ``--input`` takes, per engine (for ``--help``).
INPUT_HELP = {
    "maml": 'tasks: JSON list of {"xs": [[..]] (K x n_in), "ys": [[..]] (K x n_out), "xq": [[..]] (Q x n_in), '
            'optional "yq" (Q x n_out, for the query MSE)}, or an .npz of xs, ys, xq[, yq] with a leading task axis',
    "maml-cls": 'episodes: JSON list of {"xs": [[..]] (K x n_in), "labels": [..] (K), "xq": [[..]] (Q x n_in), '
                'optional "query_labels" (Q, for the accuracy)}, or an .npz of those with a leading episode axis',
    "match": 'episodes: JSON list of {"support": [[..]] (N K x D), "labels": [..], "queries": [[..]] (n x D), '
             'optional "query_labels"}, or an .npz of those with a leading episode axis',
}


def _load(path: str, what: str, names: tuple[str, ...]) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file {path!r} does not exist")
    if p.suffix.lower() == ".npz":
        import zipfile

        try:
            with p.open("rb") as f, np.load(f, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(f"cannot read {what} file {path!r}: {str(exc).splitlines()[0] if str(exc) else exc}") \
                from None
        present = [n for n in names if n in arrays]
        if not present:
            raise UserError(f"{what} file {path!r} holds {', '.join(sorted(arrays)) or 'no arrays'}; "
                            f"it needs {', '.join(names)}")
        lengths = {n: len(arrays[n]) if arrays[n].ndim else 0 for n in present}
        if len(set(lengths.values())) != 1:
            raise UserError(f"{what} file {path!r}: the arrays' first axes differ "
                            f"({', '.join(f'{k} {v}' for k, v in lengths.items())}); each runs over the {what}s")
        count = next(iter(lengths.values()))
        return [{n: arrays[n][i] for n in present} for i in range(count)]
    if p.suffix.lower() != ".json":
        raise UserError(f"{what} file {path!r}: unknown suffix {p.suffix!r}; valid: .json, .npz")
    from metafab.gen.engines.base import read_json_objects

    return read_json_objects(path, what, ", ".join(names))


def read_items(path: str, what: str, fields: dict) -> list[dict]:
    """The items of a user's file as dicts of arrays, each checked against ``fields``.

    ``fields``: name -> ``(shape, kind, required)`` with ``shape`` a tuple (``None`` for a free length),
    ``kind`` ``"real"`` or ``("label", n)`` (integers ``0..n-1``). A missing optional field is absent
    from the item's dict. Raises a one-line UserError naming the file, item and field.
    """
    items = _load(path, what, tuple(fields))
    if not items:
        raise UserError(f"{what} file {path!r} holds no {what}s")
    out = []
    for n, item in enumerate(items):
        got = {}
        for name, (shape, kind, required) in fields.items():
            if name not in item:
                if required:
                    raise UserError(f"{what} {n} in {path!r} has no {name!r}; it needs "
                                    f"{', '.join(k for k, v in fields.items() if v[2])}")
                continue
            try:
                a = np.asarray(item[name], dtype=np.float64)
            except (ValueError, TypeError):
                raise UserError(f"{what} {n} in {path!r}: {name} is not an array of numbers") from None
            want = tuple(len(a) if s is None else s for s in shape) if a.ndim == len(shape) else shape
            if a.shape != want:
                need = "x".join("n" if s is None else str(s) for s in shape)
                raise UserError(f"{what} {n} in {path!r}: {name} has shape {a.shape}, the design needs {need}")
            if not np.isfinite(a).all():
                raise UserError(f"{what} {n} in {path!r}: {name} holds NaN or infinite values")
            if kind != "real":
                classes = kind[1]
                if (a != np.round(a)).any() or (a.size and (a.min() < 0 or a.max() >= classes)):
                    raise UserError(f"{what} {n} in {path!r}: {name} must be class labels 0..{classes - 1}")
                a = a.astype(np.int64)
            got[name] = a
        out.append(got)
    return out
