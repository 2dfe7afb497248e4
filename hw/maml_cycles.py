"""Cycle model of the MAML engine: cycles per task from the config, and what they mean.

For a config the engine runs the jobs of :func:`metafab.hw.maml_schedule.schedule`
back to back. Job ``j`` with tile shape ``(pm, pn, pr)`` issues
``issue_j = ceil(M/pm) ceil(N/pn) ceil(R/pr)`` cycles, preceded by a gap of
``g_j`` idle cycles when an element it reads is written too late by an
earlier job (the schedule tracks every element; a job usually overlaps the
tail of its producer), when its adder-tree level is lower than the previous
job's, or when a memory word would be read and written in one cycle. A task
therefore takes::

    cycles = sum_j (g_j + issue_j) + tail

where ``tail`` is the last job's issue-to-write latency plus one (``done``).
Cycles are counted from the cycle after the RUN request is complete to the
cycle in which the results are ready (the engine's ``last_cycles`` counter
counts the same interval; the benches check that the two agree on every
task). Loading the task's inputs and sending the outputs are not included;
they take one cycle per 32-bit word on the streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from metafab.hw.maml_schedule import schedule
from metafab.reference.config import MamlConfig

__all__ = ["JobCycles", "MamlCycles", "maml_cycles"]


@dataclass(frozen=True)
class JobCycles:
    name: str
    M: int
    N: int
    R: int
    shape: tuple[int, int, int]
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
    tail_cycles: int

    @property
    def lanes(self) -> int:
        return self.config.lanes

    @property
    def lane_utilisation(self) -> float:
        """Useful MACs / (P x cycles) over a whole task."""
        return self.useful_macs / (self.lanes * self.task_cycles)

    @property
    def gap_cycles(self) -> int:
        return sum(j.gap for j in self.jobs)

    @property
    def issue_cycles(self) -> int:
        return sum(j.issue for j in self.jobs)

    def latency_us(self, fmax_mhz: float) -> float:
        """Batch-1 latency of a task at a clock of ``fmax_mhz``."""
        return self.task_cycles / fmax_mhz

    def to_dict(self) -> dict:
        return {
            "task_cycles": self.task_cycles,
            "useful_macs": self.useful_macs,
            "lanes": self.lanes,
            "lane_utilisation": self.lane_utilisation,
            "issue_cycles": self.issue_cycles,
            "gap_cycles": self.gap_cycles,
            "tail_cycles": self.tail_cycles,
            "jobs_per_task": len(self.jobs),
        }


def maml_cycles(cfg: MamlConfig) -> MamlCycles:
    """The cycle model of ``cfg`` (see the module docstring)."""
    sch = schedule(cfg)
    jobs = []
    total = 0
    for placed in sch.timeline():
        job = placed.job
        issue = job.issue_cycles
        total += placed.gap + issue
        s = job.shape
        jobs.append(JobCycles(job.name, job.M, job.N, job.R, (s.pm, s.pn, s.pr), job.passes, placed.gap,
                              issue, job.macs / (cfg.lanes * issue)))
    total += sch.tail
    assert total == sch.task_cycles()
    return MamlCycles(cfg, tuple(jobs), total, cfg.useful_macs(), sch.tail)
