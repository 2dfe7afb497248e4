"""Measured GPU and CPU figures that metafab's results are compared with, with their source."""

from __future__ import annotations

__all__ = ["ANCHOR_SOURCE", "MAML_SINUSOID_US", "MATCHING_D64_US", "maml_anchor"]

#: Where the figures come from (measured by the project on 2026-11-28).
ANCHOR_SOURCE = (
    "PyTorch 2.11 fp32 (TF32 off) on one NVIDIA H100 80GB HBM3, 2026-11-28; median times "
    "(the project's anchors file gpu_h100.json)"
)

#: MAML 1-40-40-1 sinusoid, K=10, batch-1 latency in microseconds, by inner steps.
MAML_SINUSOID_US = {
    1: {"h100_cuda_graph": 85.1, "h100_eager": 1310.8, "numpy_f64_host_cpu": 46.2},
    5: {"h100_cuda_graph": 336.3, "h100_eager": 6294.5, "numpy_f64_host_cpu": 362.2},
}

#: Matching-network read-out, D=64, one query, batch-1 latency in microseconds.
MATCHING_D64_US = {
    (5, 1): {"h100_cuda_graph": 23.2, "h100_eager": 138.5},
    (5, 5): {"h100_cuda_graph": 23.1, "h100_eager": 85.7},
    (20, 5): {"h100_cuda_graph": 24.6, "h100_eager": 124.4},
}


def maml_anchor(layers, k_support: int, steps: int) -> dict | None:
    """The anchor figures for a MAML design, if one was measured for that shape."""
    if tuple(layers) == (1, 40, 40, 1) and k_support == 10 and steps in MAML_SINUSOID_US:
        return dict(MAML_SINUSOID_US[steps])
    return None
