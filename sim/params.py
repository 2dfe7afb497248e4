"""Bench parameters: the runner writes them to a JSON file and names it in ``METAFAB_BENCH``.

A file rather than the variable's value: a run of a thousand 64-word queries
is larger than one environment string may be (128 KiB on Linux).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["BENCH_ENV", "BENCH_OUT_ENV", "bench_params", "write_result"]

BENCH_ENV = "METAFAB_BENCH"
BENCH_OUT_ENV = "METAFAB_BENCH_OUT"


def bench_params() -> dict:
    """The parameters of the running bench."""
    return json.loads(Path(os.environ[BENCH_ENV]).read_text())


def write_result(result: dict) -> None:
    """Write the bench's JSON result where the runner reads it (nothing outside a runner)."""
    path = os.environ.get(BENCH_OUT_ENV)
    if path:
        Path(path).write_text(json.dumps(result, sort_keys=True))
