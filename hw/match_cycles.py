"""Cycle model of the similarity engine: latency per query and the initiation interval, from the config.

The core's schedule is static (:mod:`metafab.hw.match_schedule`): a query
that begins at cycle ``b`` (its first issue) has its result ready at
``b + latency`` with ::

    latency = V*C + DOT + R + N + 17             (matching)
    latency = V*C + DOT + R + 2N + 16            (proto: the exp pass over the N logits)

(``V`` stored vectors, ``C = ceil(D/P)`` cycles per dot product, ``DOT`` the
dot-product pipeline depth, ``R`` the reciprocal's); this is what the engine's
``last_cycles`` counter reports. The core takes a new query every
``ii_core = max(V*C, R + N + 1)`` cycles at most (the dot-product issue, or
the finaliser, which reads its copy of the class sums for ``N`` cycles after ``1/T``).

Behind the packet front end, a query also has to arrive (``W + 2`` cycles:
header, its ``W = ceil(D / query_pack)`` words, the start) and its answer to
leave (``N + 2`` beats, after the one-cycle copy into the head registers,
``HEAD_DELAY``).
:func:`stream_timeline` steps through the rules of the front end and the
core (two query-buffer halves, two result slots) for queries sent back to
back on an always-ready stream: request headers, begins, results, response
headers. The steady-state interval between responses is the engine's
initiation interval ``ii``; the benches check every cycle of it against
the RTL.
"""

from __future__ import annotations

from dataclasses import dataclass

from metafab.hw.match_schedule import HEAD_DELAY, OUTPUT_DELAY, MatchTiming, load_cycles, timing
from metafab.reference.config import MatchConfig

__all__ = ["MatchCycles", "match_cycles", "stream_timeline", "ii_of"]


def ii_of(responses: list[int], window: int = 3) -> float:
    """Mean interval between the last ``window + 1`` response headers (an int when it is whole)."""
    window = min(window, len(responses) - 1)
    if window < 1:
        raise ValueError("need at least two responses")
    ii = (responses[-1] - responses[-1 - window]) / window
    return int(ii) if ii == int(ii) else ii


def stream_timeline(cfg: MatchConfig, n: int, h0: int = 0) -> list[dict]:
    """Cycle of every event of ``n`` queries sent back to back (no idle, no back-pressure).

    Returns one dict per query: ``header`` (request header accepted),
    ``first_word``, ``start`` (the cycle after the last word), ``begin``,
    ``done`` (result ready), ``sent`` / ``ack`` (the front end sends the response
    header / its last beat), ``response`` / ``last_beat`` (the same at the
    engine's output, ``OUTPUT_DELAY`` later). Query 0's header is at ``h0`` and
    the engine is idle.
    """
    tm = timing(cfg)
    W, N, VC = cfg.query_words, cfg.n_way, tm.issue_cycles
    QS, RS = tm.query_slots, tm.result_slots
    out: list[dict] = []
    h = h0
    for k in range(n):
        first = h + 1
        if k >= QS:
            first = max(first, out[k - QS]["begin"] + VC)  # its slot of the query buffer is free
        start = first + W
        begin = start + tm.begin_delay
        if k >= 1:
            begin = max(begin, out[k - 1]["begin"] + tm.ii_core)
        if k >= RS:
            begin = max(begin, out[k - RS]["ack"] + 2)  # a result slot is free
        done = begin + tm.latency
        # the result is copied into the head registers (HEAD_DELAY) once the previous response's
        # last beat is acknowledged; the front end sends the response header (``sent``) and its
        # last beat (``ack``, the result slot is free); both reach the engine's output
        # OUTPUT_DELAY cycles later
        sent = (done if k == 0 else max(done, out[k - 1]["ack"] + 1)) + HEAD_DELAY
        ack = sent + N + 1
        out.append({"header": h, "first_word": first, "start": start, "begin": begin, "done": done,
                    "sent": sent, "ack": ack, "response": sent + OUTPUT_DELAY,
                    "last_beat": ack + OUTPUT_DELAY})
        h = start + 1
    return out


@dataclass(frozen=True)
class MatchCycles:
    """The cycle model's figures for one config (see the module docstring)."""

    config: MatchConfig
    timing: MatchTiming
    latency: int
    query_latency: int
    packet_latency: int
    ii_core: int
    ii: float
    bound: str
    load_cycles: int

    @property
    def lanes(self) -> int:
        return self.config.lanes

    @property
    def useful_macs(self) -> int:
        return self.config.useful_macs()

    @property
    def lane_utilisation(self) -> float:
        """Useful MACs / (P x ii): the lanes' share of busy cycles at the steady-state rate."""
        return self.useful_macs / (self.lanes * self.ii)

    def latency_us(self, fmax_mhz: float) -> dict:
        """The latencies at a clock of ``fmax_mhz``, in microseconds."""
        return {
            "compute": self.latency / fmax_mhz,
            "query": self.query_latency / fmax_mhz,
            "packet": self.packet_latency / fmax_mhz,
            "ii": self.ii / fmax_mhz,
        }

    def to_dict(self) -> dict:
        tm = self.timing
        return {
            "latency": self.latency,
            "query_latency": self.query_latency,
            "packet_latency": self.packet_latency,
            "ii_core": self.ii_core,
            "ii": self.ii,
            "bound": self.bound,
            "issue_cycles": tm.issue_cycles,
            "query_slots": tm.query_slots,
            "result_slots": tm.result_slots,
            "load_cycles": self.load_cycles,
            "begin_delay": tm.begin_delay,
            "dot_latency": tm.dot_latency,
            "useful_macs": self.useful_macs,
            "lanes": self.lanes,
            "lane_utilisation": self.lane_utilisation,
        }


def match_cycles(cfg: MatchConfig) -> MatchCycles:
    """The cycle model of ``cfg``.

    ``latency``: begin to result ready (the engine's ``last_cycles``);
    ``query_latency``: from the cycle after a query's last word to its result,
    on an idle engine (``begin_delay + latency``); ``packet_latency``: from
    the request header to the last response beat, idle engine, no stalls;
    ``ii``: steady-state cycles per query with back-to-back queries; ``bound``
    says what sets it.
    """
    tm = timing(cfg)
    period = tm.query_slots * tm.result_slots
    tl = stream_timeline(cfg, 4 * period + 8)
    ii = ii_of([t["response"] for t in tl], period)
    request, response = cfg.query_words + 2, cfg.n_way + 2 + HEAD_DELAY
    if ii == tm.ii_core and ii >= max(request, response):
        bound = "compute"
    elif ii == request:
        bound = "request stream"
    elif ii == response:
        bound = "response stream"
    else:
        bound = "buffering"
    first = tl[0]
    return MatchCycles(
        config=cfg,
        timing=tm,
        latency=tm.latency,
        query_latency=tm.begin_delay + tm.latency,
        packet_latency=first["last_beat"] - first["header"] + 1,
        ii_core=tm.ii_core,
        ii=ii,
        bound=bound,
        load_cycles=load_cycles(cfg),
    )
