"""The MAML engine's static schedule: jobs, tile shapes, storage grids and the exact timeline.

Pure Python, computed from a :class:`~metafab.reference.config.MamlConfig`;
the engine (:mod:`metafab.hw.maml_engine`) executes it and the cycle model
(:mod:`metafab.hw.maml_cycles`) counts it. See ``docs/maml_engine.md``.

Every piece of work is a *job* computing ``C[m, n] = sum_r X(m, r) Y(r, n)``
for ``m < M, n < N, r < R``:

========  ===========================  ==================  ==================  ===========
job       meaning                      X(m, r)             Y(r, n)             writes
========  ===========================  ==================  ==================  ===========
forward   ``Z = W_l A_l``              ``W_l[m, r]``       ``A_l[r, n]``       ``A_{l+1}``
error     ``D_L = lr_eff (Yhat - Y)``  ``lr_eff [m==r]``   ``Yhat - Y [r, n]`` ``D_L``
backward  ``D_l = W_l^T D_{l+1}``      ``W_l[r, m]``       ``D_{l+1}[r, n]``   ``D_l``
update    ``W_l -= D_{l+1} A_l^T``     ``D_{l+1}[m, r]``   ``A_l[n, r]``       ``W_l``
========  ===========================  ==================  ==================  ===========

**Lane mapping (3-D tiles).** A job has a tile shape ``(pm, pn, pr)``
(powers of two, ``pm pn pr <= P``). One *issue* (one cycle) covers outputs
``m0..m0+pm-1`` x ``n0..n0+pn-1`` and reduction indices ``r0..r0+pr-1``:
lane ``p = ((i pn) + j) pr + k`` multiplies ``X[m0+i, r0+k]`` by
``Y[r0+k, n0+j]``. An adder tree sums each group of ``pr`` adjacent lanes
(level ``log2 pr``), and accumulator ``a = i pn + j`` adds the group sum over
the ``ceil(R / pr)`` issues of a *pass*. A pass ends with one output tile of
``pm x pn`` values. Jobs of different shapes share the lanes; a job takes
``ceil(M/pm) ceil(N/pn) ceil(R/pr)`` issue cycles.

**Storage grids.** Every matrix the engine keeps (inputs, activations,
targets, deltas, weights) is stored in *words* of ``gr x gc`` elements (its
grid, powers of two): element ``(row, col)`` is in word
``(row // gr) * ceil(cols / gc) + col // gc`` at position
``(row % gr) * gc + col % gc``. Every tile a job reads or writes fits in one
word, so a cycle needs exactly one word of each matrix it touches (one
memory read port per matrix, no banking conflicts). Grids are the smallest
that hold every tile accessed (clipped to the matrix size).

**Timeline.** The order of jobs is fixed; a job starts right after the
previous one unless an element it reads is written too late (the engine's
issue-to-write latency), or the tree depth drops (accumulator timing), or a
read and a write would hit the same memory word in the same cycle. The
timeline is computed here element by element, so a consumer can overlap
the tail of its producer when the tiles it needs first are ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from metafab.reference.config import MamlClsConfig, MamlConfig
from metafab.reference.fixed import QFormat, sum_format

__all__ = [
    "FORWARD",
    "ERROR",
    "BACKWARD",
    "UPDATE",
    "Shape",
    "Access",
    "Tensor",
    "Job",
    "Schedule",
    "schedule",
    "ISSUE_TO_READ",
    "READ_TO_PRODUCT",
    "POST_STAGES",
    "write_latency",
    "aux_read_offset",
    "accumulate_stage",
    "product_stage",
    "is_classifier",
    "adapted_layers",
    "error_input_fmt",
    "SoftmaxTiming",
    "softmax_timing",
]

FORWARD, ERROR, BACKWARD, UPDATE = "forward", "error", "backward", "update"

# ---------------------------------------------------------------------------
# Pipeline timing shared by the engine and the model (cycles after an issue).
#: the memory addresses of an issue are registered one cycle after it
ISSUE_TO_READ = 1
#: products are registered ``READ_TO_PRODUCT`` cycles after the read cycle
#: (read data, its register, extraction, lane operands, product)
READ_TO_PRODUCT = 5
#: post-processing stages between the accumulator and the write port
POST_STAGES = 3


def product_stage() -> int:
    """Cycle (after the issue) whose register holds the lane products (tree level 0)."""
    return ISSUE_TO_READ + READ_TO_PRODUCT


def accumulate_stage(level: int) -> int:
    """Cycle (after the issue) in which the accumulators add that issue's tree sums."""
    return product_stage() + level + 1


def write_latency(level: int) -> int:
    """Cycles from the last issue of a pass to the cycle its output tile is written."""
    return accumulate_stage(level) + POST_STAGES


#: the ReLU mask of a backward pass and the old weights of an update pass are read (address
#: presented) this many cycles after the pass's sum is complete in its accumulator; their
#: registered data meets the last post-processing stage
MASK_READ_AT = 0
OLDW_READ_AT = 0


def aux_read_offset(kind: str, level: int) -> int:
    """Cycle (after the last issue of a pass) in which its auxiliary tile is read."""
    return accumulate_stage(level) + (OLDW_READ_AT if kind == UPDATE else MASK_READ_AT)


def is_classifier(cfg: MamlConfig) -> bool:
    """The config is a classifier's (softmax cross-entropy: :class:`MamlClsConfig`)."""
    return isinstance(cfg, MamlClsConfig)


def adapted_layers(cfg: MamlConfig) -> tuple[int, ...]:
    """The weight layers an inner step updates: every one, or a classifier's ``adapt_layers``."""
    return cfg.adapted if is_classifier(cfg) else tuple(range(cfg.n_layers))


def error_input_fmt(cfg: MamlConfig) -> QFormat:
    """Format of the error job's ``Y`` operand: ``Yhat - Y`` (regression, exact) or ``p - onehot(y)``
    (a classifier: ``prob_fmt``'s fraction bits, signed, one integer bit more)."""
    if is_classifier(cfg):
        return QFormat(cfg.prob_fmt.int_bits + 1, cfg.prob_fmt.frac_bits)
    return sum_format(cfg.act_fmt, cfg.act_fmt)


@dataclass(frozen=True)
class SoftmaxTiming:
    """The classifier's softmax unit: one sample (a column of the logits ``A_L``) per ``period`` cycles.

    Cycle ``t`` of a sample (``t = 0`` is its first cycle; the support pass starts the cycle after the
    last logit of the support forward pass is written, the query pass the cycle after the last query
    logit is written, and sample ``k`` starts ``k * period`` later):

    - ``t = n``: the address of logit ``n`` (``n < N``) at the logits' second read port;
      logit ``n`` is in a register in ``t = n + 3``, where the running maximum and argmax take it;
    - ``t = exp_at + n``: ``z_n - max z`` enters the exp table; its entry adds to the exp sum
      ``exp_latency`` cycles later;
    - ``t = recip_at``: the exp sum enters the reciprocal;
    - ``t = prob_at + n``: ``e_n`` and the reciprocal enter the probability's scale-and-round;
    - ``t = write_at + n``: ``p_n`` is written (support: ``E[n, k] = p_n - onehot(y_k)``; query: the
      result memory);
    - ``t = class_at``: a query's class (the argmax of its logits) is written.
    """

    classes: int
    exp_latency: int
    recip_latency: int
    scale_latency: int

    #: logit address to the logit's register
    READ_TO_LOGIT = 3

    @property
    def exp_at(self) -> int:
        return self.classes + self.READ_TO_LOGIT

    @property
    def recip_at(self) -> int:
        return self.exp_at + self.classes - 1 + self.exp_latency + 1

    @property
    def prob_at(self) -> int:
        return self.recip_at + self.recip_latency + 1

    @property
    def write_at(self) -> int:
        return self.prob_at + self.scale_latency

    @property
    def class_at(self) -> int:
        return self.write_at + self.classes

    @property
    def period(self) -> int:
        return self.class_at + 1


def softmax_timing(cfg: MamlClsConfig) -> SoftmaxTiming:
    """The softmax unit's timing for a classifier config (its units: :mod:`metafab.hw.match_units`)."""
    from metafab.hw.match_schedule import EXP_LATENCY, SCALE_LATENCY, latency_recip

    return SoftmaxTiming(cfg.n_out, EXP_LATENCY, latency_recip(cfg, "recip"), SCALE_LATENCY)


@dataclass(frozen=True, order=True)
class Shape:
    """Tile shape of a job: ``pm x pn`` outputs, ``pr`` reduction indices per cycle."""

    pm: int
    pn: int
    pr: int

    @property
    def level(self) -> int:
        """Adder-tree level the accumulators take (``log2 pr``)."""
        return self.pr.bit_length() - 1

    @property
    def outputs(self) -> int:
        return self.pm * self.pn


@dataclass(frozen=True)
class Access:
    """One tile of a matrix touched by a job.

    ``tensor`` is the matrix name; ``row``/``col`` name the loop coordinate
    (``"m"``, ``"n"`` or ``"r"``) that gives the tile's first row/column;
    ``rows``/``cols`` its size.
    """

    tensor: str
    row: str
    col: str
    rows: int
    cols: int


@dataclass(frozen=True)
class Tensor:
    """A stored matrix: ``rows x cols`` elements of ``width`` bits in words of ``grid``.

    ``const_row``: index of a constant row (the bias input 1.0) held in the
    memory's initial contents and never written. Weight layers share one
    memory (``memory == "W"``) from word ``base``, in two copies.
    """

    name: str
    rows: int
    cols: int
    grid: tuple[int, int]
    width: int
    memory: str
    base: int = 0
    const_row: int | None = None

    @property
    def tile_cols(self) -> int:
        """Words per row of words."""
        return -(-self.cols // self.grid[1])

    @property
    def words(self) -> int:
        return -(-self.rows // self.grid[0]) * self.tile_cols

    @property
    def elements(self) -> int:
        """Elements per word."""
        return self.grid[0] * self.grid[1]

    def word(self, row: int, col: int) -> int:
        return self.base + (row // self.grid[0]) * self.tile_cols + col // self.grid[1]

    def position(self, row: int, col: int) -> int:
        return (row % self.grid[0]) * self.grid[1] + col % self.grid[1]


@dataclass(frozen=True)
class Job:
    """One matrix job (see the module docstring) with its tile shape and accesses."""

    kind: str
    layer: int
    M: int
    N: int
    R: int
    shape: Shape
    query: bool = False
    x: Access | None = None  # None: the error job's lr_eff identity
    y: tuple[Access, ...] = ()  # the error job reads Yhat and Y
    aux: Access | None = None  # old weights (update) or ReLU mask (backward)
    outs: tuple[Access, ...] = ()  # the output tile (and its ReLU mask bits)
    # "m": m-tiles advance first (n-tiles outer); "n": n-tiles advance first
    inner: str = "m"

    @property
    def outputs(self) -> int:
        return self.M * self.N

    @property
    def m_tiles(self) -> int:
        return -(-self.M // self.shape.pm)

    @property
    def n_tiles(self) -> int:
        return -(-self.N // self.shape.pn)

    @property
    def r_tiles(self) -> int:
        return -(-self.R // self.shape.pr)

    @property
    def passes(self) -> int:
        return self.m_tiles * self.n_tiles

    @property
    def issue_cycles(self) -> int:
        return self.passes * self.r_tiles

    @property
    def macs(self) -> int:
        return self.M * self.N * self.R

    @property
    def name(self) -> str:
        tag = "q" if self.query else "s"
        return f"{self.kind}{self.layer}{tag}"

    def passes_in_order(self):
        """``(m0, n0)`` of every pass, in execution order."""
        s = self.shape
        if self.inner == "m":
            for nt in range(self.n_tiles):
                for mt in range(self.m_tiles):
                    yield mt * s.pm, nt * s.pn
        else:
            for mt in range(self.m_tiles):
                for nt in range(self.n_tiles):
                    yield mt * s.pm, nt * s.pn

    def reads(self) -> tuple[Access, ...]:
        return tuple(a for a in ((self.x,) + self.y) if a is not None)


def _p2(x: int) -> int:
    """Smallest power of two >= x."""
    return 1 << max(0, (x - 1).bit_length())


def _shapes(P: int, M: int, N: int, R: int, acc_cap: int, pr_cap: int):
    """Candidate tile shapes for an ``M x N x R`` job, fewest cycles first."""
    out = []
    top = P.bit_length()
    for a in range(top):
        for b in range(top):
            for c in range(top):
                pm, pn, pr = 1 << a, 1 << b, 1 << c
                if pm * pn * pr > P or pm > _p2(M) or pn > _p2(N) or pr > _p2(R):
                    continue
                if pm * pn > acc_cap or pr > pr_cap:
                    continue
                cycles = -(-M // pm) * -(-N // pn) * -(-R // pr)
                out.append((cycles, Shape(pm, pn, pr)))
    out.sort(key=lambda cs: (cs[0], -cs[1].pr, cs[1]))
    return out


# --- job skeletons (kind, layer, dims, accesses as functions of the shape) -------------


def _forward(cfg: MamlConfig, l: int, query: bool, s: Shape) -> Job:
    ly = cfg.layers
    N = cfg.n_query if query else cfg.k_support
    return Job(FORWARD, l, ly[l + 1], N, ly[l] + 1, s, query,
               x=Access(f"W{l}", "m", "r", s.pm, s.pr),
               y=(Access("Q0" if query and l == 0 else f"A{l}", "r", "n", s.pr, s.pn),),
               outs=(Access(f"A{l + 1}", "m", "n", s.pm, s.pn),)
               + ((Access(f"P{l + 1}", "m", "n", s.pm, s.pn),) if l + 1 < cfg.n_layers else ()),
               inner="m")


def _error(cfg: MamlConfig, s: Shape) -> Job:
    L = cfg.n_layers
    ys = ((Access("E", "r", "n", s.pr, s.pn),) if is_classifier(cfg) else
          (Access(f"A{L}", "r", "n", s.pr, s.pn), Access("Y", "r", "n", s.pr, s.pn)))
    return Job(ERROR, L, cfg.n_out, cfg.k_support, cfg.n_out, s,
               x=None,
               y=ys,
               outs=(Access(f"D{L}", "m", "n", s.pm, s.pn),), inner="m")


def _backward(cfg: MamlConfig, l: int, s: Shape) -> Job:
    ly = cfg.layers
    return Job(BACKWARD, l, ly[l], cfg.k_support, ly[l + 1], s,
               x=Access(f"W{l}", "r", "m", s.pr, s.pm),
               y=(Access(f"D{l + 1}", "r", "n", s.pr, s.pn),),
               aux=Access(f"P{l}", "m", "n", s.pm, s.pn),
               outs=(Access(f"D{l}", "m", "n", s.pm, s.pn),), inner="m")


def _update(cfg: MamlConfig, l: int, s: Shape) -> Job:
    ly = cfg.layers
    return Job(UPDATE, l, ly[l + 1], ly[l] + 1, cfg.k_support, s,
               x=Access(f"D{l + 1}", "m", "r", s.pm, s.pr),
               y=(Access(f"A{l}", "n", "r", s.pn, s.pr),),
               aux=Access(f"W{l}", "m", "n", s.pm, s.pn),
               outs=(Access(f"W{l}", "m", "n", s.pm, s.pn),), inner="n")


def _step_order(cfg: MamlConfig):
    """``(kind, layer)`` of one inner step, in order.

    Forward through every layer, the output error, then for each layer from
    the top: ``backward_l`` (reads the old ``W_l``) before ``update_l``. Only
    the adapted layers are updated (a classifier's ``adapt_layers``), and deltas
    go down only as far as the lowest of them (ANIL: no backward job).
    """
    L = cfg.n_layers
    adapted = adapted_layers(cfg)
    order = [(FORWARD, l) for l in range(L)] + [(ERROR, L)]
    for l in range(L - 1, -1, -1):
        if l > min(adapted):
            order.append((BACKWARD, l))
        if l in adapted:
            order.append((UPDATE, l))
    return order


def _make(cfg: MamlConfig, kind: str, layer: int, query: bool, s: Shape) -> Job:
    if kind == FORWARD:
        return _forward(cfg, layer, query, s)
    if kind == ERROR:
        return _error(cfg, s)
    if kind == BACKWARD:
        return _backward(cfg, layer, s)
    return _update(cfg, layer, s)


def _dims(cfg: MamlConfig, kind: str, layer: int, query: bool) -> tuple[int, int, int]:
    j = _make(cfg, kind, layer, query, Shape(1, 1, 1))
    return j.M, j.N, j.R


def _tensor_extents(cfg: MamlConfig) -> dict[str, tuple[int, int, int, int | None]]:
    """``name -> (rows, cols, width, const_row)`` of every stored matrix.

    ``A0``/``Q0``: support/query inputs; ``A{l}``: activations (support and
    queries share them; the last one holds the predictions); ``P{l}``: their
    ReLU masks ``[a > 0]``; ``Y``: targets (a classifier has ``E = p - onehot(y)``
    instead, written by the softmax unit); ``D{l}``: deltas; ``W{l}``:
    augmented weights. Activations and inputs carry the bias row 1.0.
    """
    L, ly = cfg.n_layers, cfg.layers
    K, Q = cfg.k_support, cfg.n_query
    act, grad = cfg.act_fmt.width, cfg.grad_fmt.width
    out = {"A0": (ly[0] + 1, K, act, ly[0]), "Q0": (ly[0] + 1, Q, act, ly[0])}
    for l in range(1, L):
        out[f"A{l}"] = (ly[l] + 1, max(K, Q), act, ly[l])
        out[f"P{l}"] = (ly[l], K, 1, None)
    out[f"A{L}"] = (cfg.n_out, max(K, Q), act, None)
    if is_classifier(cfg):
        out["E"] = (cfg.n_out, K, error_input_fmt(cfg).width, None)
    else:
        out["Y"] = (cfg.n_out, K, act, None)
    for l in range(1, L + 1):
        out[f"D{l}"] = (ly[l], K, grad, None)
    for l in range(L):
        out[f"W{l}"] = (ly[l + 1], ly[l] + 1, cfg.master_fmt.width, None)
    return out


# --- the schedule ----------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A job occurrence on the timeline: its gap and first issue cycle."""

    job: Job
    gap: int
    start: int

    @property
    def end(self) -> int:
        """Cycle after its last issue."""
        return self.start + self.job.issue_cycles


@dataclass(frozen=True)
class Schedule:
    """The engine's program for one config: jobs of one inner step and of the queries."""

    config: MamlConfig
    step_jobs: tuple[Job, ...]
    query_jobs: tuple[Job, ...]
    tensors: dict = field(hash=False, compare=False)

    @property
    def lanes(self) -> int:
        return self.config.lanes

    def jobs(self) -> list[Job]:
        """All jobs of one task, in order."""
        return list(self.step_jobs) * self.config.steps + list(self.query_jobs)

    def all_kinds(self) -> list[Job]:
        """The distinct jobs (one step and the queries), as the engine's job table."""
        return list(self.step_jobs) + list(self.query_jobs)

    @property
    def accumulators(self) -> int:
        return max(j.shape.outputs for j in self.all_kinds())

    @property
    def max_level(self) -> int:
        return max(j.shape.level for j in self.all_kinds())

    def useful_macs(self) -> int:
        """Multiply-accumulates a task needs: :meth:`MamlConfig.useful_macs`."""
        return self.config.useful_macs()

    # -- timeline ---------------------------------------------------------------
    @cached_property
    def _simulated(self) -> tuple[list[Placed], int, int]:
        """Timeline of ``min(steps, 3)`` steps and the queries; returns (placed, steps simulated, period)."""
        cfg = self.config
        S = cfg.steps
        S_sim = min(S, 3)
        seq = list(self.step_jobs) * S_sim + list(self.query_jobs)
        sm = softmax_timing(cfg) if is_classifier(cfg) else None
        placed, done = _timeline(seq, self.tensors, self.lanes, cfg, sm, shared_w_port=self.shared_w_port)
        ns = len(self.step_jobs)
        period = 0
        if S_sim >= 2:
            period = placed[2 * ns - 1].end - placed[ns - 1].end
        if S_sim >= 3:
            g2 = [p.gap for p in placed[ns : 2 * ns]]
            g3 = [p.gap for p in placed[2 * ns : 3 * ns]]
            assert g2 == g3, (g2, g3)
            assert placed[3 * ns - 1].end - placed[2 * ns - 1].end == period
        return placed, S_sim, period, done

    def timeline(self) -> list[Placed]:
        """Every job occurrence of a task with its gap and first issue cycle (cycle 0 = first possible)."""
        placed, S_sim, period, _ = self._simulated
        S = self.config.steps
        ns = len(self.step_jobs)
        if S <= S_sim:
            return placed
        out = placed[: ns * S_sim]
        later = placed[ns : 2 * ns]
        for s in range(S_sim, S):
            shift = (s - 1) * period
            out += [Placed(p.job, p.gap, p.start + shift) for p in later]
        shift = (S - S_sim) * period
        out += [Placed(p.job, p.gap, p.start + shift) for p in placed[ns * S_sim :]]
        return out

    def gaps(self) -> tuple[list[int], list[int], list[int]]:
        """Gaps before each step job in the first step, in later steps, and before each query job."""
        placed, S_sim, _, _ = self._simulated
        ns = len(self.step_jobs)
        first = [p.gap for p in placed[:ns]] if S_sim >= 1 else [0] * ns
        later = [p.gap for p in placed[ns : 2 * ns]] if S_sim >= 2 else first
        query = [p.gap for p in placed[ns * S_sim :]]
        return first, later, query

    @property
    def tail(self) -> int:
        """Cycles from the last issue of a task to ``done`` (its results written), inclusive of done:
        the write-back of the last pass, and for a classifier the queries' softmax."""
        last = self.query_jobs[-1]
        if not is_classifier(self.config):
            return write_latency(last.shape.level) + 1
        placed, S_sim, period, done = self._simulated
        # the query softmax's last write, relative to the end of the last issue
        return done - placed[-1].end + 2

    @property
    def shared_w_port(self) -> bool:
        """The weight memory has one read port for the issue's reads and the update's old weights (a
        classifier: its weights are large, and a second read port doubles the block RAMs); the timeline
        keeps the two from one cycle."""
        return is_classifier(self.config)

    @property
    def softmax(self) -> SoftmaxTiming | None:
        """The softmax unit's timing (a classifier), or None."""
        return softmax_timing(self.config) if is_classifier(self.config) else None

    def task_cycles(self) -> int:
        """Cycles of one task from the cycle after ``start`` to ``done`` inclusive."""
        last = self.timeline()[-1]
        return last.end - 1 + self.tail + 1


def _timeline(seq: list[Job], tensors: dict, lanes: int, cfg: MamlConfig,
              sm: SoftmaxTiming | None = None, *, shared_w_port: bool = False) -> tuple[list[Placed], int | None]:
    """Place ``seq`` job by job at the earliest cycle the engine can issue it; returns the placed jobs
    and (a classifier, ``sm`` given) the cycle of the queries' softmax's last write.

    Rules (the engine checks none of them; it follows the gaps computed here):
    an element read with its address presented in cycle ``a`` was written
    (write enable) in a cycle ``< a``; the accumulate stage of an issue comes
    after that of the previous issue (a lower tree level than the previous
    job's needs a gap); no memory word is read and written in one cycle.

    A classifier's softmax unit (``sm``) runs after the support pass's and after the queries' last
    forward job, from the cycle after their last logit is written (:class:`SoftmaxTiming`); its
    writes of ``E`` count like a job's. With ``shared_w_port`` the weight memory's issue reads and the
    updates' old-weight reads use one read port: no two of them in one cycle.
    """
    written = {name: np.full((t.rows, t.cols), -(10**9), dtype=np.int64) for name, t in tensors.items()}
    wcycles: dict[tuple[str, int], set[int]] = {}  # (memory, word) -> write cycles
    rcycles: dict[tuple[str, int], set[int]] = {}
    w_port: set[int] = set()  # cycles the weight memory's shared read port is taken
    placed: list[Placed] = []
    at = 0
    prev_level = None
    prev_last = -1
    for job in seq:
        s = job.shape
        lvl = s.level
        earliest = at
        if prev_level is not None and lvl < prev_level:
            earliest = max(earliest, prev_last + 1 + prev_level - lvl)
        reads, writes = _events(job, tensors)
        # earliest start from read-after-write
        need = earliest
        for cyc, t, r0, c0, rows, cols in reads:
            w = written[t.name][r0 : r0 + rows, c0 : c0 + cols]
            if w.size:
                need = max(need, int(w.max()) + 1 - cyc)
        # no same-word read and write in one cycle: within the job (a property of its shape) ...
        own_w = {(t.memory, t.word(r0, c0), cyc) for cyc, t, r0, c0, _, _ in writes}
        for cyc, t, r0, c0, _, _ in reads:
            if (t.memory, t.word(r0, c0), cyc) in own_w:
                raise AssertionError(f"{job.name}: reads and writes one memory word in the same cycle")
        # ... and against the writes of earlier jobs still in flight
        start = need
        w_reads = [cyc for cyc, t, _, _, _, _ in reads if t.memory == "W"] if shared_w_port else []
        while (any(start + cyc in wcycles.get((t.memory, t.word(r0, c0)), ()) for cyc, t, r0, c0, _, _ in reads)
               or any(start + cyc in w_port for cyc in w_reads)):
            start += 1
        w_port.update(start + cyc for cyc in w_reads)
        for cyc, t, r0, c0, _, _ in reads:
            rcycles.setdefault((t.memory, t.word(r0, c0)), set()).add(start + cyc)
        for cyc, t, r0, c0, rows, cols in writes:
            written[t.name][r0 : r0 + rows, c0 : c0 + cols] = start + cyc
            key = (t.memory, t.word(r0, c0))
            wcycles.setdefault(key, set()).add(start + cyc)
            assert start + cyc not in rcycles.get(key, ()), (job.name, key)
        placed.append(Placed(job, start - at, start))
        at = start + job.issue_cycles
        prev_level, prev_last = lvl, at - 1
        if sm is not None and job.kind == FORWARD and job.layer == cfg.n_layers - 1:
            L = cfg.n_layers
            cols = cfg.n_query if job.query else cfg.k_support
            t0 = int(written[f"A{L}"][:, :cols].max()) + 1
            a_l = tensors[f"A{L}"]
            for k in range(cols):
                for n in range(cfg.n_out):
                    rcycles.setdefault((a_l.memory, a_l.word(n, k)), set()).add(t0 + k * sm.period + n)
            if job.query:
                done = t0 + (cols - 1) * sm.period + sm.class_at
            else:
                e = tensors["E"]
                for k in range(cols):
                    for n in range(cfg.n_out):
                        cyc = t0 + k * sm.period + sm.write_at + n
                        written["E"][n, k] = cyc
                        wcycles.setdefault((e.memory, e.word(n, k)), set()).add(cyc)
    return placed, (done if sm is not None else None)


def _events(job: Job, tensors: dict):
    """Reads and writes of a job: ``(cycle, tensor, row0, col0, rows, cols)``, cycles after its start.

    A read's cycle is the one in which its address is presented; a write's
    the one with its write enable. Written tiles are clipped to the job's
    outputs (the engine masks the rest).
    """
    s = job.shape
    reads, writes = [], []
    off = 0
    aux_at = aux_read_offset(job.kind, s.level)
    for m0, n0 in job.passes_in_order():
        coord = {"m": m0, "n": n0}
        for rt in range(job.r_tiles):
            coord["r"] = rt * s.pr
            for acc in job.reads():
                reads.append((off + ISSUE_TO_READ, tensors[acc.tensor], coord[acc.row], coord[acc.col],
                              acc.rows, acc.cols))
            off += 1
        last = off - 1
        if job.aux is not None:
            a = job.aux
            reads.append((last + aux_at, tensors[a.tensor], coord[a.row], coord[a.col], a.rows, a.cols))
        for o in job.outs:
            rows = min(o.rows, job.M - m0)
            cols = min(o.cols, job.N - n0)
            writes.append((last + write_latency(s.level), tensors[o.tensor], m0, n0, rows, cols))
    return reads, writes


# --- choosing shapes and grids ---------------------------------------------------------


def _grids_for(cfg: MamlConfig, jobs: list[Job]) -> dict[str, tuple[int, int]]:
    """Smallest grid of every matrix that holds every tile the jobs access."""
    ext = _tensor_extents(cfg)
    grid = {name: (1, 1) for name in ext}
    for job in jobs:
        for acc in job.reads() + tuple(a for a in (job.aux,) + job.outs if a is not None):
            gr, gc = grid[acc.tensor]
            grid[acc.tensor] = (max(gr, acc.rows), max(gc, acc.cols))
    L = cfg.n_layers
    # a mask store has its activations' grid (written by the same tiles)
    for l in range(1, L):
        a, p = grid[f"A{l}"], grid[f"P{l}"]
        grid[f"A{l}"] = grid[f"P{l}"] = (max(a[0], p[0]), max(a[1], p[1]))
    # the error job extracts Yhat and Y with one set of positions: same grid
    if not is_classifier(cfg):
        a, y = grid[f"A{L}"], grid["Y"]
        grid[f"A{L}"] = grid["Y"] = (max(a[0], y[0]), max(a[1], y[1]))
    return grid


def _grid_cost(cfg: MamlConfig, grid: dict) -> int:
    """Bits of all memory words (a proxy for storage width and extraction multiplexers)."""
    ext = _tensor_extents(cfg)
    return sum(grid[n][0] * grid[n][1] * ext[n][2] for n in ext)


def _choose_shapes(cfg: MamlConfig) -> dict[tuple[str, int, bool], Shape]:
    """Tile shapes of every job: fewest cycles, then the smallest storage words.

    Jobs are taken largest first; each picks, among its shapes within 1 % (at
    least 2 cycles) of its fewest cycles, the one that adds the fewest storage
    word bits and lane multiplexer inputs. No word holds more than ``P``
    elements. The accumulators are capped at ``P/2`` for ``P > 16`` and the
    reduction split at 8 lanes (a 3-level adder tree). The error job uses
    ``pm = pr = 1`` (its ``X`` is ``lr_eff`` on the diagonal).
    """
    P = cfg.lanes
    acc_cap = P if P <= 16 else P // 2
    pr_cap = 8
    keys = [(k, l, False) for k, l in _step_order(cfg)] if cfg.steps else []
    keys += [(FORWARD, l, True) for l in range(cfg.n_layers)]
    keys.sort(key=lambda key: -math.prod(_dims(cfg, *key)))
    chosen = _pick(cfg, keys, {}, P, acc_cap, pr_cap, {})
    # An update whose passes are short would read the old weights of a pass in the cycle it
    # writes an earlier pass into the same word unless every pass owns its word: then the
    # layer's forward and backward tiles must fit in the update's tile.
    caps = {}
    window = write_latency(0) - aux_read_offset(UPDATE, 0)
    for (kind, l, _), s in chosen.items():
        if kind == UPDATE and -(-_dims(cfg, kind, l, False)[2] // s.pr) <= window:
            caps[l] = (s.pm, s.pn)
    if caps:
        keep = {k: s for k, s in chosen.items() if k[0] == UPDATE or k[1] not in caps or k[0] == ERROR}
        chosen = _pick(cfg, [k for k in keys if k not in keep], keep, P, acc_cap, pr_cap, caps)
    return chosen


def _w_tile(kind: str, s: Shape) -> tuple[int, int] | None:
    """The ``W`` tile (rows, cols) a job of this kind and shape touches."""
    if kind == FORWARD:
        return s.pm, s.pr
    if kind == BACKWARD:
        return s.pr, s.pm
    if kind == UPDATE:
        return s.pm, s.pn
    return None


def _lane_mux_bits(shapes, P: int, width: int = 18) -> int:
    """Extra multiplexer input bits the lanes need to take their operands under ``shapes``."""
    total = 0
    for p in range(P):
        xs, ys = set(), set()
        for s in shapes:
            if p >= s.pm * s.pn * s.pr:
                continue
            i, rest = divmod(p, s.pn * s.pr)
            j, k = divmod(rest, s.pr)
            xs.add(i * s.pr + k)
            ys.add(k * s.pn + j)
        total += max(0, len(xs) - 1) + max(0, len(ys) - 1)
    return total * width


def _pick(cfg, keys, chosen, P, acc_cap, pr_cap, caps) -> dict:
    """Choose the shapes of ``keys`` in order (see :func:`_choose_shapes`)."""
    chosen = dict(chosen)
    word_cap = max(P, 4)
    for key in keys:
        M, N, R = _dims(cfg, *key)
        cands = _shapes(P, M, N, R, acc_cap, pr_cap)
        if key[0] == ERROR:
            cands = [(c, s) for c, s in cands if s.pm == 1 and s.pr == 1]
        if key[1] in caps and key[0] in (FORWARD, BACKWARD):
            cr, cc = caps[key[1]]
            cands = [(c, s) for c, s in cands if _w_tile(key[0], s)[0] <= cr and _w_tile(key[0], s)[1] <= cc]
        best = None
        best_pick = None
        for cycles, s in cands:
            if best is not None and cycles > best + max(2, best // 100):
                break
            trial = dict(chosen)
            trial[key] = s
            grids = _grids_for(cfg, [_make(cfg, *k, sh) for k, sh in trial.items()])
            if max(g[0] * g[1] for g in grids.values()) > word_cap:
                continue
            best = cycles if best is None else best
            cost = (_grid_cost(cfg, grids) + _lane_mux_bits(set(trial.values()), P), cycles, -s.pr)
            if best_pick is None or cost < best_pick[0]:
                best_pick = (cost, s)
        chosen[key] = best_pick[1]
    return chosen


def schedule(cfg: MamlConfig) -> Schedule:
    """The static schedule of ``cfg``: job order, tile shapes, storage grids."""
    shapes = _choose_shapes(cfg)
    L = cfg.n_layers
    if cfg.steps:
        step = [_make(cfg, k, l, False, shapes[(k, l, False)]) for k, l in _step_order(cfg)]
    else:
        # no inner step runs; one step's job table is still built (never issued)
        step = [_make(cfg, k, l, False, Shape(1, 1, 1)) for k, l in _step_order(cfg)]
    query = [_make(cfg, FORWARD, l, True, shapes[(FORWARD, l, True)]) for l in range(L)]
    grids = _grids_for(cfg, step + query)
    tensors = {}
    wbase = 0
    for name, (rows, cols, width, const_row) in _tensor_extents(cfg).items():
        memory = "W" if name.startswith("W") else name
        t = Tensor(name, rows, cols, grids[name], width, memory, wbase if memory == "W" else 0, const_row)
        if memory == "W":
            wbase += t.words
        tensors[name] = t
    return Schedule(cfg, tuple(step), tuple(query), tensors)
