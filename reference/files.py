"""Writing a generated file whole or not at all (weights, data sets)."""

from __future__ import annotations

import os
from pathlib import Path

from metafab.reference.errors import UserError

__all__ = ["write_whole"]


def write_whole(path, data: bytes, what: str) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, so that a reader never sees half a
    file (parent folders are created); a UserError naming ``what`` is written when that fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {what} to {str(path)!r}: {exc.strerror}") from exc
    return path
