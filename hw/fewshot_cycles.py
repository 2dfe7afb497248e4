"""Cycle model of the few-shot engine: encoder job, query latency, interval and support LOAD, from the config.

The encoder's schedule is static (:func:`metafab.hw.encoder.encoder_plan`).
A job that starts at cycle ``s`` (its start registered) issues its stages back to back from
``s + 2``: stage ``i`` takes ``groups * positions * cols`` issue cycles and,
except for the last, ``EMIT_DELAY + n_i - 1 + DRAIN_MARGIN`` drain cycles
(``n_i`` the lanes of its last group; the next stage reads what it wrote);
the last embedding code leaves ``EMIT_DELAY - 1 + n_last`` cycles after the
last issue. That is ``job``, from the encoder's start to its last code.

A query (behind the packet front end, ``W`` payload words): its encoding
starts two cycles after the front end's start (the core's input register
and the slot flag), or two cycles after the previous job's last code,
whichever is later; the read-out core gets its start one cycle after the
last code and from there runs as in :mod:`metafab.hw.match_cycles`
(``begin_delay``, ``latency``, the head register, the response). Two query
slots: the third query's payload waits until the first one's encoding is
done. Steady state: one query every ``job + 2`` cycles (encoder-bound).

STATUS ``last_cycles``: the encoder's cycles of the last query (its start
to the read-out's start, ``job + 1``) plus the read-out's ``latency``.

Support LOAD: from its last payload word, 4 cycles to the first job, then
per image ``job`` cycles and 2 more to the next, then the read-out's own
LOAD (:func:`metafab.hw.match_schedule.load_cycles`, counted from the
cycle before its start as from a last payload word).
"""

from __future__ import annotations

from dataclasses import dataclass

from metafab.hw.encoder import DRAIN_MARGIN, check_encoder, emit_delay
from metafab.hw.fewshot_engine import image_words
from metafab.hw.match_cycles import match_cycles
from metafab.hw.match_schedule import HEAD_DELAY, OUTPUT_DELAY, load_cycles, timing
from metafab.reference.encoder import EncoderConfig

__all__ = ["FewShotCycles", "fewshot_cycles", "encoder_job_cycles", "stream_timeline"]

#: Cycles from the front end's start of a RUN to its encoder job's start (input register, slot flag).
JOB_START_DELAY = 2
#: Cycles from a job's last code to the next job's start (the read-out's start, the scheduler).
JOB_GAP = 2


def encoder_job_cycles(cfg: EncoderConfig) -> int:
    """Cycles from an encoder job's start to its last embedding code."""
    plan = check_encoder(cfg)
    ed = emit_delay(cfg.split)
    t = 1  # the start's register
    for st in plan[:-1]:
        t += st.issue_cycles + ed + st.last_group_rows - 1 + DRAIN_MARGIN
    return t + plan[-1].issue_cycles + ed - 1 + plan[-1].last_group_rows


def stream_timeline(cfg: EncoderConfig, n: int, h0: int = 0) -> list[dict]:
    """Cycle of every event of ``n`` query images sent back to back (no idle, no back-pressure).

    Per query: ``header``, ``first_word``, ``start`` (the front end's start), ``enc_start``, ``enc_last``
    (its last code), ``begin`` (the read-out's), ``done``, ``sent``, ``ack``, ``response``, ``last_beat``.
    """
    mcfg = cfg.match
    tm = timing(mcfg)
    W, N, J = image_words(cfg), mcfg.n_way, encoder_job_cycles(cfg)
    out: list[dict] = []
    h = h0
    for k in range(n):
        first = h + 1
        if k >= 2:  # its query slot is free once the query two before has been encoded
            first = max(first, out[k - 2]["enc_last"] + 2)
        start = first + W
        enc_start = start + JOB_START_DELAY
        if k >= 1:
            enc_start = max(enc_start, out[k - 1]["enc_last"] + JOB_GAP)
        enc_last = enc_start + J
        begin = enc_last + 1 + tm.begin_delay
        done = begin + tm.latency
        sent = (done if k == 0 else max(done, out[k - 1]["ack"] + 1)) + HEAD_DELAY
        ack = sent + N + 1
        out.append({"header": h, "first_word": first, "start": start, "enc_start": enc_start, "enc_last": enc_last,
                    "begin": begin, "done": done, "sent": sent, "ack": ack, "response": sent + OUTPUT_DELAY,
                    "last_beat": ack + OUTPUT_DELAY})
        h = start + 1
    return out


@dataclass(frozen=True)
class FewShotCycles:
    """The cycle model's figures for one config (see the module docstring)."""

    config: EncoderConfig
    job: int
    latency: int
    query_latency: int
    packet_latency: int
    ii: int
    load_cycles: int
    readout_latency: int
    stages: tuple

    @property
    def lanes(self) -> int:
        """The encoder's multipliers, ``lanes x split``."""
        return self.config.lanes * self.config.split

    @property
    def useful_macs(self) -> int:
        return self.config.spec.total_macs

    @property
    def lane_utilisation(self) -> float:
        """The encoder's MACs / (lanes x split x job): the share of its multipliers busy during an encoding."""
        return self.useful_macs / (self.lanes * self.job)

    @property
    def bound(self) -> str:
        return "encoder"

    def latency_us(self, mhz: float) -> dict:
        return {"compute": self.latency / mhz, "query": self.query_latency / mhz, "packet": self.packet_latency / mhz,
                "ii": self.ii / mhz, "load": self.load_cycles / mhz}

    def to_dict(self) -> dict:
        return {"encoder_job": self.job, "latency": self.latency, "query_latency": self.query_latency,
                "packet_latency": self.packet_latency, "ii": self.ii, "bound": self.bound,
                "load_cycles": self.load_cycles, "readout_latency": self.readout_latency,
                "useful_macs": self.useful_macs, "lanes": self.lanes, "lane_utilisation": self.lane_utilisation,
                "stages": list(self.stages)}


def fewshot_cycles(cfg: EncoderConfig) -> FewShotCycles:
    """The cycle model of ``cfg``.

    ``latency``: STATUS ``last_cycles`` (encoder job + 1 + the read-out's latency); ``query_latency``: from
    the front end's start of a RUN (the cycle after its last word) to its result, idle engine;
    ``packet_latency``: request header to last response beat, idle engine; ``ii``: steady-state cycles per
    query; ``load_cycles``: a support LOAD's last payload word to its response header.
    """
    mcfg = cfg.match
    tm = timing(mcfg)
    J = encoder_job_cycles(cfg)
    tl = stream_timeline(cfg, 6)
    M = mcfg.n_support
    plan = check_encoder(cfg)
    stages = tuple({"kind": st.kind, "rows": st.rows, "cols": st.cols, "groups": st.groups,
                    "positions": st.positions, "issue_cycles": st.issue_cycles,
                    "lanes_used": min(st.rows, st.lanes), "macs": st.macs} for st in plan)
    return FewShotCycles(
        config=cfg,
        job=J,
        latency=J + 1 + tm.latency,
        query_latency=tl[0]["done"] - tl[0]["start"],
        packet_latency=tl[0]["last_beat"] - tl[0]["header"] + 1,
        ii=tl[-1]["response"] - tl[-2]["response"],
        load_cycles=4 + M * J + 2 * (M - 1) + 2 + load_cycles(mcfg),
        readout_latency=match_cycles(mcfg).latency,
        stages=stages,
    )
