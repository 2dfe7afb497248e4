"""The MAML engine's static schedule: which matrix jobs run, in what order, how they map to lanes.

Pure Python, computed from a :class:`~metafab.reference.config.MamlConfig`;
the engine (:mod:`metafab.hw.maml_engine`) executes it and the cycle model
(:mod:`metafab.gen.cycles`) counts it. See ``docs/maml_engine.md``.

Every piece of work is a *job* computing ``C[m, n] = sum_r X(m, r) Y(r, n)``
for ``m < M, n < N, r < R``:

========  ===========================  ==================  ==================  ===========
job       meaning                      X(m, r)             Y(r, n)             writes
========  ===========================  ==================  ==================  ===========
forward   ``Z = W_l A_l``              ``W_l[m, r]``       ``A_l[r, n]``       ``A_{l+1}``
error     ``D_L = lr_eff (Yhat - Y)``  ``lr_eff``          ``e[n]`` (flat)     ``D_L``
backward  ``D_l = W_l^T D_{l+1}``      ``W_l[r, m]``       ``D_{l+1}[r, n]``   ``D_l``
update    ``W_l -= D_{l+1} A_l^T``     ``D_{l+1}[m, r]``   ``A_l[n, r]``       ``W_l``
========  ===========================  ==================  ==================  ===========

The ``M x N`` outputs are flattened row-major (``e = m N + n``) and dealt to
the ``P`` lanes in *passes*: pass ``t`` gives lane ``p`` the output
``e = t P + p``, and the lane accumulates it over ``R`` cycles. Lanes are
idle only in a job's last, partial pass, so the utilisation of a job is
``M N / (P ceil(M N / P))``. Within a pass the lanes need at most ``S``
distinct X values (rows ``m0 .. m0+S-1``) and a window of the Y vector
rotated by ``n0 = t P mod N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metafab.reference.config import MamlConfig

__all__ = [
    "Job",
    "Layout",
    "Schedule",
    "schedule",
    "FORWARD",
    "ERROR",
    "BACKWARD",
    "UPDATE",
    "WRITE_DELAY",
    "TAIL",
]

FORWARD, ERROR, BACKWARD, UPDATE = "forward", "error", "backward", "update"

#: A job may issue its first read ``WRITE_DELAY`` cycles after the last issue
#: of the job that produced its data (the engine's issue-to-write-back depth).
WRITE_DELAY = 8
#: Cycles from the last issue of a task to ``done`` (its results written).
TAIL = 8


@dataclass(frozen=True)
class Job:
    """One matrix job (see the module docstring)."""

    kind: str
    layer: int
    M: int
    N: int
    R: int
    lanes: int
    query: bool = False

    @property
    def outputs(self) -> int:
        return self.M * self.N

    @property
    def passes(self) -> int:
        return math.ceil(self.outputs / self.lanes)

    @property
    def issue_cycles(self) -> int:
        return self.passes * self.R

    @property
    def macs(self) -> int:
        """Useful multiply-accumulates (padding columns of an update excluded by the caller)."""
        return self.outputs * self.R

    @property
    def slots(self) -> int:
        """Distinct X rows a pass can touch: ``min(M, ceil((P-1)/N) + 1)``."""
        return min(self.M, math.ceil((self.lanes - 1) / self.N) + 1)

    @property
    def name(self) -> str:
        tag = "q" if self.query else "s"
        return f"{self.kind}{self.layer}{tag}"

    def reads(self, n_layers: int) -> tuple[str, ...]:
        """Names of the stores this job reads (for dependency gaps)."""
        l = self.layer
        act = ("Xq" if self.query else "X") if l == 0 else f"A{l}"
        if self.kind == FORWARD:
            return (f"W{l}", act)
        if self.kind == ERROR:
            return ("Yhat", "Y")
        if self.kind == BACKWARD:
            return (f"W{l}", f"D{l + 1}", f"A{l}")
        return (f"D{l + 1}", act, f"W{l}")

    def writes(self, n_layers: int) -> str:
        """Name of the store this job writes."""
        l = self.layer
        if self.kind == FORWARD:
            if l == n_layers - 1:
                return "Yout" if self.query else "Yhat"
            return f"A{l + 1}"
        if self.kind == ERROR:
            return f"D{n_layers}"
        if self.kind == BACKWARD:
            return f"D{l}"
        return f"W{l}"


@dataclass(frozen=True)
class Layout:
    """Where each layer's augmented weights ``[W | b]`` live in the ``P`` weight banks.

    Layer ``l`` is stored row-major with row stride ``stride[l] >= in+1``
    from flat index ``base[l]`` (a multiple of ``P``); flat index ``e`` is
    bank ``e mod P``, address ``e div P``. The stride is chosen so that the
    ``S`` elements of a column segment (a forward job's X values) fall in
    distinct banks.
    """

    lanes: int
    base: tuple[int, ...]
    stride: tuple[int, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def words(self) -> int:
        """Flat size of the banked weight store (a multiple of ``P``)."""
        return self.base[-1] + _round_up(self.rows[-1] * self.stride[-1], self.lanes)

    @property
    def depth(self) -> int:
        """Words per bank."""
        return self.words // self.lanes

    def flat(self, layer: int, row: int, col: int) -> int:
        return self.base[layer] + row * self.stride[layer] + col


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _conflict_free_stride(cols: int, lanes: int, slots: int) -> int:
    """Smallest stride >= cols with ``s * stride mod P != 0`` for ``0 < s < slots``."""
    stride = cols
    while any((s * stride) % lanes == 0 for s in range(1, slots)):
        stride += 1
    return stride


@dataclass(frozen=True)
class Schedule:
    """The engine's program for one config: the jobs of one inner step and of the queries."""

    config: MamlConfig
    layout: Layout
    step_jobs: tuple[Job, ...]
    query_jobs: tuple[Job, ...]

    @property
    def lanes(self) -> int:
        return self.config.lanes

    def jobs(self) -> list[Job]:
        """All jobs of one task, in order."""
        return list(self.step_jobs) * self.config.steps + list(self.query_jobs)

    @property
    def max_slots(self) -> int:
        return max(j.slots for j in self.step_jobs + self.query_jobs)

    @property
    def max_n(self) -> int:
        return max(j.N for j in self.step_jobs + self.query_jobs)

    @property
    def max_passes(self) -> int:
        return max(j.passes for j in self.step_jobs + self.query_jobs)

    @property
    def max_r(self) -> int:
        return max(j.R for j in self.step_jobs + self.query_jobs)

    def useful_macs(self) -> int:
        """Multiply-accumulates a task needs (without lane padding): ``MamlConfig.useful_macs``."""
        return self.config.useful_macs()

    def timeline(self) -> list[tuple[Job, int, int]]:
        """``(job, gap, first_issue_cycle)`` for every job of a task, in order.

        A job starts right after the previous one, or later if it reads a
        store written less than :data:`WRITE_DELAY` cycles before (the gap).
        """
        L = self.config.n_layers
        written: dict[str, int] = {}
        out = []
        at = 0
        for job in self.jobs():
            start = at
            for name in job.reads(L):
                if name in written:
                    start = max(start, written[name] + WRITE_DELAY)
            out.append((job, start - at, start))
            at = start + job.issue_cycles
            written[job.writes(L)] = at - 1
        return out

    def gaps(self) -> tuple[list[int], list[int], list[int]]:
        """Gaps before each step job in the first step, in later steps, and before each query job."""
        tl = self.timeline()
        ns, S = len(self.step_jobs), self.config.steps
        first = [g for _, g, _ in tl[:ns]] if S >= 1 else [0] * ns
        later = [g for _, g, _ in tl[ns : 2 * ns]] if S >= 2 else first
        query = [g for _, g, _ in tl[ns * S :]]
        # every later step must look like the second one for the engine's two-entry gap table
        for s in range(2, S):
            assert [g for _, g, _ in tl[ns * s : ns * (s + 1)]] == later
        return first, later, query

    def task_cycles(self) -> int:
        """Cycles of one task from the cycle after ``start`` to ``done`` inclusive."""
        job, _, start = self.timeline()[-1]
        return start + job.issue_cycles + TAIL


def schedule(cfg: MamlConfig) -> Schedule:
    """The static schedule of ``cfg``: weight layout and job order.

    One inner step: forward through every layer (``N = K``), the output
    error, then from the top layer down ``backward_l`` followed by
    ``update_l`` (an update only writes ``W_l`` after the backward pass
    through it has read it), and finally ``update_0``. Queries: the forward
    jobs with ``N = n_query``.
    """
    P = cfg.lanes
    L = cfg.n_layers
    K, Q = cfg.k_support, cfg.n_query
    layers = cfg.layers
    rows = tuple(layers[1:])
    cols = tuple(i + 1 for i in layers[:-1])
    # Lanes pick their X operand among at most `slot_cap` values per pass. Forward and
    # backward jobs (N = K or Q) set the cap; an update job has N = the row stride, so a
    # narrow layer gets its stride padded until its updates fit the cap too. Forward jobs
    # read a column segment of W: the stride must also keep those reads in distinct banks.
    slot_cap = max(
        [8]
        + [Job(FORWARD, li, rows[li], n, cols[li], P).slots for li in range(L) for n in (K, Q)]
        + [Job(BACKWARD, li, layers[li], K, rows[li], P).slots for li in range(1, L)]
    )
    min_stride = -(-(P - 1) // (slot_cap - 1)) if P > 1 else 1
    strides = []
    for li in range(L):
        s_f = max(Job(FORWARD, li, rows[li], n, cols[li], P).slots for n in (K, Q))
        strides.append(_conflict_free_stride(max(cols[li], min_stride), P, s_f))
    bases, at = [], 0
    for li in range(L):
        bases.append(at)
        at += _round_up(rows[li] * strides[li], P)
    layout = Layout(P, tuple(bases), tuple(strides), rows, cols)

    step: list[Job] = []
    for li in range(L):
        step.append(Job(FORWARD, li, rows[li], K, cols[li], P))
    step.append(Job(ERROR, L, 1, cfg.n_out * K, 1, P))
    for li in range(L - 1, -1, -1):
        if li >= 1:
            step.append(Job(BACKWARD, li, layers[li], K, rows[li], P))
        step.append(Job(UPDATE, li, rows[li], strides[li], K, P))
    query = tuple(Job(FORWARD, li, rows[li], Q, cols[li], P, query=True) for li in range(L))
    sch = Schedule(cfg, layout, tuple(step), query)
    assert sch.max_slots <= slot_cap, (sch.max_slots, slot_cap)
    return sch
