"""The static schedule of the similarity engine: pipeline depths and the cycle of every step of a query.

Pure Python (no Amaranth), shared by :mod:`metafab.hw.match_engine`, which
builds its pipeline from these numbers and asserts them, and by the cycle
model :mod:`metafab.hw.match_cycles`.

One query, from the cycle ``b`` its first issue happens ("begin"):

* issue ``i = 0 .. V*C - 1`` at ``b + i``: vector ``v = i // C``, chunk
  ``c = i % C``; every lane bank and query bank reads address ``i`` /
  ``half * C + c``.
* dot product of vector ``v`` in its register at ``X_v = b + v*C + C - 1 + DOT_LATENCY``
  (memory read, products, the adder tree ``TREE_LEVELS_PER_STAGE`` levels
  per register stage, the chunk accumulator).
* matching: cosine at ``X_v + SCALE_LATENCY`` (``S``), its exp ``EXP_LATENCY``
  (``E``) later, added to its class sum (sums final at ``F0 = X_last + S + E + 1``).
  proto: logit at ``X_v + LOGIT_LATENCY`` (``L``), written into the logit
  buffer; the buffer is copied at ``X_last + L + 1`` and the exp pass takes
  entry ``n`` at ``X_last + L + 2 + n`` (registered, then its exp; sums final
  at ``F0 = X_last + L + E + N + 3``).
* finaliser: ``1/T`` from ``F0`` to ``F1 = F0 + RECIP`` (``R``), captured;
  then ``N`` cycles from ``F2 = F1 + 1`` scale the class sums into
  probabilities (``S`` stages) and find the argmax; the result is complete
  at ``DONE = F2 + N + S``.
"""

from __future__ import annotations

from dataclasses import dataclass

from metafab.reference.config import MatchConfig

__all__ = [
    "prepare_wait",
    "prepare_drain",
    "load_cycles",
    "TREE_LEVELS_PER_STAGE",
    "INPUT_DELAY",
    "OUTPUT_DELAY",
    "HEAD_DELAY",
    "MAX_SLOTS",
    "SCALE_LATENCY",
    "EXP_LATENCY",
    "latency_recip",
    "MatchTiming",
    "timing",
]

#: Adder-tree levels between two pipeline registers.
TREE_LEVELS_PER_STAGE = 2
#: :class:`~metafab.hw.match_units.ScaleRound`: operands, partial products, product, shift, round, saturate.
SCALE_LATENCY = 6
#: :class:`~metafab.hw.match_units.ExpTable`: negate, index, ROM, entry.
EXP_LATENCY = 4
#: The query squarer: word, product, accumulator (the norm is final this many cycles after the last word).
SQUARE_LATENCY = 3
#: Proto logits: ``2 q.p - |p|^2``, rounding, saturation.
LOGIT_LATENCY = 3
#: The core registers the front end's words and pulses once before using them.
INPUT_DELAY = 1
#: The engine's output register: every response word leaves one cycle after the front end sends it.
OUTPUT_DELAY = 1
#: A finished result is copied into the head registers before its response header goes out; the
#: next result's copy waits for the previous response's last beat (one idle beat between responses).
HEAD_DELAY = 1
#: Largest number of query-buffer slots / result slots the engine gets.
MAX_SLOTS = 8


def latency_recip(cfg: MatchConfig, kind: str) -> int:
    """Cycles from input to output of a :class:`~metafab.hw.match_units.RecipUnit`."""
    method = cfg.recip_method if kind == "recip" else cfg.rsqrt_method
    # leading one, mantissa, ROM, its output; per Newton product 2 stages + 1 to round; output
    if method == "table":
        return 5
    return 4 + (5 if kind == "recip" else 8) + 1


def prepare_wait(cfg: MatchConfig) -> int:
    """Cycles the prepare pass of a LOAD waits before it starts (the last row's ``1/|s|``, matching)."""
    return latency_recip(cfg, "rsqrt") + 4 if cfg.mode == "matching" else 2


def prepare_drain(cfg: MatchConfig) -> int:
    """Cycles the prepare pass waits after its last element (scale, write, the squared norm in proto)."""
    return 1 + SCALE_LATENCY + (1 if cfg.mode == "matching" else 4)


def load_cycles(cfg: MatchConfig) -> int:
    """From a LOAD's last payload word to its response header: check, wait, one element per cycle, drain."""
    return INPUT_DELAY + prepare_wait(cfg) + cfg.n_vectors * cfg.dim + prepare_drain(cfg) + 5 + OUTPUT_DELAY


@dataclass(frozen=True)
class MatchTiming:
    """Pipeline depths and per-query cycle counts of one config (see the module docstring)."""

    config: MatchConfig
    tree_levels: int
    tree_stages: int
    dot_latency: int
    rsqrt_latency: int
    recip_latency: int
    issue_cycles: int
    begin_delay: int
    latency: int
    ii_core: int
    query_slots: int
    result_slots: int

    @property
    def x_last(self) -> int:
        """Cycle (after begin) of the last vector's dot product in its register."""
        return self.issue_cycles - 1 + self.dot_latency

    @property
    def f0(self) -> int:
        """Cycle (after begin) at which the class sums and their total are final."""
        if self.config.mode == "matching":
            return self.x_last + SCALE_LATENCY + EXP_LATENCY + 1
        return self.x_last + LOGIT_LATENCY + EXP_LATENCY + self.config.n_way + 3


def timing(cfg: MatchConfig) -> MatchTiming:
    """The schedule of ``cfg``."""
    P, N, C = cfg.lanes, cfg.n_way, cfg.chunks
    levels = P.bit_length() - 1
    stages = -(-levels // TREE_LEVELS_PER_STAGE)
    dot = 1 + 1 + 1 + stages + 1  # memory read, operands, products, tree, accumulator
    rsq = latency_recip(cfg, "rsqrt")
    rcp = latency_recip(cfg, "recip")
    issue = cfg.n_vectors * C
    if cfg.mode == "matching":
        # the query's 1/|q| must be in its register when its first dot product is (see match_engine)
        begin_delay = INPUT_DELAY + max(2, SQUARE_LATENCY + 1 + rsq - C - dot)
        f0 = issue - 1 + dot + SCALE_LATENCY + EXP_LATENCY + 1
    else:
        begin_delay = INPUT_DELAY + 2
        f0 = issue - 1 + dot + LOGIT_LATENCY + EXP_LATENCY + N + 3
    done = f0 + rcp + 1 + N + SCALE_LATENCY
    # the finaliser reads its copy of the class sums for N cycles after 1/T: the next copy must wait
    ii = max(issue, rcp + N + 1)
    # slots, so that buffering never sets the pace: the stream rate is one query per
    # max(ii, W + 2 request cycles (W = query_words), N + 2 response beats + the head copy) at best
    W = cfg.query_words
    rate = max(ii, W + 2, N + 2 + HEAD_DELAY)
    # a query-buffer slot is busy from its first word to the end of its issue
    query_slots = min(MAX_SLOTS, max(2, -(-(W + begin_delay + issue + 1) // rate)))
    # a result slot is busy from begin to the cycle after its last response beat
    result_slots = min(MAX_SLOTS, max(2, -(-(done + HEAD_DELAY + N + 3) // rate)))
    return MatchTiming(cfg, levels, stages, dot, rsq, rcp, issue, begin_delay, done, ii, query_slots,
                       result_slots)
