"""Cycle model of the MAML engine: cycles per task from the config, and what they mean.

For a config the engine runs the jobs of :func:`metafab.hw.maml_schedule.schedule`
back to back. Job ``j`` issues ``passes_j * R_j`` cycles (``passes_j =
ceil(M_j N_j / P)``), preceded by a gap of ``g_j`` idle cycles when it reads
a store that an earlier job wrote less than ``WRITE_DELAY`` cycles before
its start. A task therefore takes::

    cycles = sum_j (g_j + passes_j * R_j) + TAIL

counted from the cycle after the RUN request is complete to the cycle in
which the results are ready (the engine's ``last_cycles`` counter counts the
same interval; the benches check that the two agree on every task).
Loading the task's inputs and sending the outputs are not included; they
take one cycle per 32-bit word on the streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from metafab.hw.maml_schedule import TAIL, WRITE_DELAY, schedule
from metafab.reference.config import MamlConfig

__all__ = ["JobCycles", "MamlCycles", "maml_cycles"]


@dataclass(frozen=True)
class JobCycles:
    name: str
    M: int
    N: int
    R: int
    passes: int
    gap: int
    issue: int
    lane_util: float


@dataclass(frozen=True)
class MamlCycles:
    """The cycle model's figures for one config."""

    config: MamlConfig
    jobs: tuple[JobCycles, ...]
    task_cycles: int
    useful_macs: int

    @property
    def lanes(self) -> int:
        return self.config.lanes

    @property
    def utilisation(self) -> float:
        """Useful MACs / (P x cycles) over a whole task."""
        return self.useful_macs / (self.lanes * self.task_cycles)

    @property
    def gap_cycles(self) -> int:
        return sum(j.gap for j in self.jobs)

    def latency_us(self, fmax_mhz: float) -> float:
        """Batch-1 latency of a task at a clock of ``fmax_mhz``."""
        return self.task_cycles / fmax_mhz

    def to_dict(self) -> dict:
        return {
            "task_cycles": self.task_cycles,
            "useful_macs": self.useful_macs,
            "lanes": self.lanes,
            "utilisation": self.utilisation,
            "gap_cycles": self.gap_cycles,
            "tail_cycles": TAIL,
            "write_delay": WRITE_DELAY,
            "jobs_per_task": len(self.jobs),
        }


def maml_cycles(cfg: MamlConfig) -> MamlCycles:
    """The cycle model of ``cfg`` (see the module docstring)."""
    sch = schedule(cfg)
    jobs = []
    total = 0
    for job, gap, _start in sch.timeline():
        issue = job.passes * job.R
        total += gap + issue
        jobs.append(JobCycles(job.name, job.M, job.N, job.R, job.passes, gap, issue,
                              job.outputs / (job.passes * cfg.lanes)))
    total += TAIL
    assert total == sch.task_cycles()
    return MamlCycles(cfg, tuple(jobs), total, cfg.useful_macs())
