"""Sinusoid regression tasks (Finn et al. 2017, section 5.1), drawn from a seeded generator.

A task is ``y = A sin(x - phase)`` with amplitude ``A ~ U[0.1, 5.0]``, phase
``~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``. A task batch holds ``K`` support
points (for adaptation) and ``Q`` query points (for the loss after adaptation)
per task, all float64.

Draw order (for reproducibility): amplitudes ``(T,)``, phases ``(T,)``,
support inputs ``(T, K)``, query inputs ``(T, Q)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metafab.reference.arrays import as_count, as_generator
from metafab.reference.errors import UserError

__all__ = ["TaskBatch", "SinusoidTasks"]


@dataclass(frozen=True)
class TaskBatch:
    """A batch of ``T`` regression tasks with support and query sets.

    Attributes
    ----------
    x_support, y_support : numpy.ndarray
        float64 ``(T, K, 1)``.
    x_query, y_query : numpy.ndarray
        float64 ``(T, Q, 1)``.
    amplitude, phase : numpy.ndarray
        float64 ``(T,)``: the task parameters.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray


@dataclass(frozen=True, kw_only=True)
class SinusoidTasks:
    """Sampler of sinusoid tasks; call it as ``sampler(rng, n_tasks)``.

    Parameters
    ----------
    k_support : int
        Support points per task (K), >= 1.
    k_query : int
        Query points per task (Q), >= 1.
    amplitude : (float, float)
        Range of the uniform amplitude.
    phase : (float, float)
        Range of the uniform phase.
    x_range : (float, float)
        Range of the uniform inputs.
    """

    k_support: int = 10
    k_query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        as_count("k_support", self.k_support, minimum=1)
        as_count("k_query", self.k_query, minimum=1)
        for name in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise UserError(f"{name} must be a finite range (low, high), got {(lo, hi)!r}")

    def sample(self, rng: np.random.Generator, n_tasks: int) -> TaskBatch:
        """Draw ``n_tasks`` tasks with ``k_support`` support and ``k_query`` query points."""
        rng = as_generator("rng", rng)
        n_tasks = as_count("n_tasks", n_tasks, minimum=1)
        amp = rng.uniform(*self.amplitude, size=n_tasks)
        phase = rng.uniform(*self.phase, size=n_tasks)
        xs = rng.uniform(*self.x_range, size=(n_tasks, self.k_support, 1))
        xq = rng.uniform(*self.x_range, size=(n_tasks, self.k_query, 1))
        return TaskBatch(
            x_support=xs,
            y_support=self.target(xs, amp, phase),
            x_query=xq,
            y_query=self.target(xq, amp, phase),
            amplitude=amp,
            phase=phase,
        )

    __call__ = sample

    @staticmethod
    def target(x: np.ndarray, amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """``A sin(x - phase)`` for inputs ``(T, n, 1)`` and task parameters ``(T,)``."""
        return amplitude[:, None, None] * np.sin(x - phase[:, None, None])
