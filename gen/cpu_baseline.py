"""The CPU baseline: the engine's computation as plain C (float32), compiled here, timed in-process.

What a performance-minded user would otherwise run on one core of the host:
each engine renders its computation for a config as a C function ``run(in,
out)`` (:meth:`Engine.cpu_kernel`, templates ``gen/templates/*_cpu.c.j2``);
this module compiles it with the system C compiler at ``-O3 -march=native``
into a shared library (cached under the build folder by source and
compiler), checks its outputs against the float64 reference within the
kernel's stated tolerance, and times ``run`` in a C loop (``clock_gettime``
around each call, after warm-up runs): the minimum and the median of many
runs. A machine without a C compiler gets one line saying so and no figure.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CpuKernel", "compiler", "FLAGS", "measure", "render"]

#: The compiler flags of the baseline.
FLAGS = ("-O3", "-march=native", "-std=c11", "-shared", "-fPIC")

_TIMER = r"""
#include <time.h>
static double metafab_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
void metafab_timed(int warm, int reps, const float *in, float *out, double *ns) {
    for (int r = 0; r < warm; r++) run(in, out);
    for (int r = 0; r < reps; r++) {
        double t0 = metafab_now_ns();
        run(in, out);
        ns[r] = metafab_now_ns() - t0;
    }
}
"""


@dataclass
class CpuKernel:
    """One engine computation as C: ``source`` defines ``void run(const float *in, float *out)``.

    ``inputs`` (float32, packed in order) is one call's input; ``want`` the
    float64 reference's outputs for it; a result within ``atol + rtol * |want|``
    of every one of them computes the same thing. ``per`` names what one call
    is (``task``, ``query``).
    """

    source: str
    inputs: np.ndarray
    n_out: int
    want: np.ndarray
    per: str
    atol: float = 1e-4
    rtol: float = 1e-3
    check: object = None  # an extra check of the outputs (e.g. the predicted class), or None
    notes: dict = field(default_factory=dict)


def render(template: str, **values) -> str:
    """A C template of ``gen/templates`` rendered with ``values``."""
    from metafab.gen.wrappers import _env

    return _env().get_template(template).render(**values)


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on ``PATH``; None when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout.strip().splitlines() or [""])[0]


def _library(cc: str, source: str):
    from metafab.sim.runner import build_root

    text = "#define _POSIX_C_SOURCE 199309L  /* clock_gettime */\n" + source + _TIMER
    key = hashlib.sha256("\0".join([text, _version(cc), *FLAGS]).encode()).hexdigest()[:16]
    folder = build_root() / "cpu" / key
    lib = folder / "baseline.so"
    if not lib.exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "baseline.c").write_text(text)
        tmp = folder / f"baseline.{os.getpid()}.so"
        run = subprocess.run([cc, *FLAGS, "-o", str(tmp), str(folder / "baseline.c"), "-lm"],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"{cc} failed on {folder / 'baseline.c'}: {run.stderr.strip()[:300]}")
        tmp.replace(lib)
    return ctypes.CDLL(str(lib))


def measure(kernel: CpuKernel, *, reps: int = 20000, warm: int = 1000) -> dict:
    """Compile, check and time ``kernel``; the figures (or ``{"error": ...}`` without a compiler)."""
    cc = compiler()
    if cc is None:
        return {"error": "no C compiler found (cc, gcc, clang or $CC): the CPU baseline is left out"}
    lib = _library(cc, kernel.source)
    inp = np.ascontiguousarray(kernel.inputs, dtype=np.float32)
    out = np.zeros(kernel.n_out, dtype=np.float32)
    ns = np.zeros(reps, dtype=np.float64)
    fp = ctypes.POINTER(ctypes.c_float)
    lib.metafab_timed(ctypes.c_int(warm), ctypes.c_int(reps), inp.ctypes.data_as(fp), out.ctypes.data_as(fp),
                      ns.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))
    err = np.abs(out.astype(np.float64) - kernel.want)
    bound = kernel.atol + kernel.rtol * np.abs(kernel.want)
    ok = bool(np.all(err <= bound)) and (kernel.check is None or bool(kernel.check(out)))
    return {
        "per": kernel.per,
        "min_us": round(float(ns.min()) / 1e3, 3),
        "median_us": round(float(np.median(ns)) / 1e3, 3),
        "runs": reps,
        "max_abs_error_vs_float64": float(err.max()),
        "tolerance": f"|c - float64| <= {kernel.atol:g} + {kernel.rtol:g} |float64|",
        "matches_float64": ok,
        "compiler": _version(cc),
        "flags": " ".join(FLAGS[:2]),
        "threads": 1,
        **kernel.notes,
    }
