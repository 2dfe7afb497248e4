"""cocotb benches for the similarity engine: episodes against the bit-exact reference, timing, errors, reset.

Parameters (a JSON file named by ``METAFAB_BENCH``):

``config``
    a MatchConfig dict;
``episodes``
    a list of ``{"support": [[...]], "labels": [...], "queries": [[...]]}``
    (``emb_fmt`` codes; ``M x D``, ``M``, ``Q x D``);
``idle``, ``backpressure``, ``seed``
    random stream gaps;
``scenario``
    ``"episodes"`` (default), ``"errors"``, ``"reset"`` or ``"protocol"`` (every rule of the protocol,
    with the first episode's first query);
``timing_queries``
    load the first episode and send this many of its queries back to back,
    with no gaps, recording the LOAD's cycles and the cycle of every request
    header and response header (compared with ``expected``);
``expected``
    the cycle model: ``latency`` (checked against the engine's ``last_cycles``
    after every episode), ``timeline`` (response and header offsets from the
    first timing request), ``load_cycles``;
``return_outputs``
    return every query's output words (default: predictions only);
``reference_episodes``
    episodes the scoreboard uses instead of ``episodes`` (same order);
``window``
    requests kept ahead of the responses outside the timing phase.

Queries of an episode are sent back to back (the engine pipelines them);
every output word is compared with :func:`metafab.reference.match_fixed.readout`.
Writes ``{queries, words, mismatches, first_mismatch, preds, cycles, timing, ...}``
to ``METAFAB_BENCH_OUT``.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig
from metafab.reference.payloads import match_load_words as load_payload
from metafab.reference.payloads import match_run_words as run_payload
from metafab.reference.protocol import (
    MAGIC,
    STATUS_FIELDS,
    Opcode,
    Status,
    decode_response,
    encode_request,
    from_words,
    header,
    to_words,
)
from metafab.sim.benches.packet_bench import (
    PacketEngineBench,
    ProtocolPayloads,
    bench_params,
    mismatch_problems,
    protocol_scenario,
    run_scenarios,
)


def _high(h) -> bool:
    v = h.value
    return v.is_resolvable and bool(v)


class PortTimer:
    """Records the cycle of every request header and response header while running (per-cycle work)."""

    def __init__(self, tb):
        self.tb = tb
        self.requests: list[int] = []
        self.responses: list[int] = []
        self._task = None

    def start(self):
        self.requests.clear()
        self.responses.clear()
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        dut = self.tb.dut
        in_packet, out_packet = False, False
        while True:
            await RisingEdge(self.tb.clock)
            now = self.tb.cycles
            if _high(dut.i__valid) and _high(dut.i__ready):
                beat = dut.i__payload.value.to_unsigned()
                if not in_packet:
                    self.requests.append(now)
                in_packet = not (beat >> 32) & 1
            if _high(dut.o__valid) and _high(dut.o__ready):
                beat = dut.o__payload.value.to_unsigned()
                if not out_packet:
                    self.responses.append(now)
                out_packet = not (beat >> 32) & 1


class MatchBench(PacketEngineBench):
    def __init__(self, dut, p: dict):
        super().__init__(dut, p)
        self.cfg = MatchConfig.from_dict(p["config"])
        self.timer = PortTimer(self)

    def load_words(self, episode) -> list[int]:
        """The LOAD payload of an episode's support set."""
        return load_payload(episode["support"], episode["labels"])

    def run_words(self, query) -> list[int]:
        """The RUN payload of one query."""
        return run_payload(query, self.cfg)

    async def load(self, episode) -> None:
        await self.checked(Opcode.LOAD, self.load_words(episode))

    def protocol_payloads(self) -> ProtocolPayloads:
        cfg, ep = self.cfg, self.p["episodes"][0]
        load = load_payload(ep["support"], ep["labels"])
        bad_load = list(load)
        bad_load[(cfg.dim + 1) * (cfg.n_support - 1)] = cfg.n_way  # the last row's label, out of range
        bad_run = None  # none exists when two 16-bit codes share a word and the format is 16 bits wide
        if cfg.query_pack == 1 or cfg.emb_fmt.width < 16:
            codes = [int(x) for x in ep["queries"][0]]
            codes[-1] = cfg.emb_fmt.min_code - 1
            bad_run = run_payload(codes, cfg)
        answer = self.expected(ep, np.stack([np.asarray(ep["queries"][0])]))[0]
        return ProtocolPayloads(load=load, run=run_payload(ep["queries"][0], cfg), run_answer=to_words(answer),
                                bad_load=bad_load, bad_run=bad_run)

    def expected(self, episode, queries) -> np.ndarray:
        """Expected response payloads, ``(Q, N + 1)``."""
        refs = self.p.get("reference_episodes")
        if refs:  # the scoreboard's own episodes (a test that it catches errors)
            episode = refs[[i for i, e in enumerate(self.p["episodes"]) if e is episode or e == episode][0]]
        prep = mx.prepare(np.asarray(episode["support"]), np.asarray(episode["labels"]), self.cfg)
        r = mx.readout(np.asarray(queries, dtype=np.int64), prep, self.cfg)
        return np.concatenate([r.probs, r.pred[:, None]], axis=1)

    async def run_queries(self, episode, queries, result: dict, tag: int, window: int | None = None):
        """Send ``queries``, receive and check every response in order.

        ``window=None`` queues them all at once (back to back); otherwise at
        most ``window`` requests are ahead of the responses, enough to keep the
        engine's pipeline busy without the driver waiting on ``ready`` every
        cycle (which costs simulation time).
        """
        want = self.expected(episode, queries)
        ahead = len(queries) if window is None else window
        sent = 0
        while sent < min(ahead, len(queries)):
            self.link.send_raw(encode_request(Opcode.RUN, self.run_words(queries[sent])))
            sent += 1
        for n in range(len(queries)):
            resp = decode_response(await self.link.recv_packet())
            if sent < len(queries):
                self.link.send_raw(encode_request(Opcode.RUN, self.run_words(queries[sent])))
                sent += 1
            assert resp.status == Status.OK, f"episode {tag} query {n}: RUN answered {resp.status!r}"
            got = from_words(resp.payload)
            result["queries"] += 1
            result["words"] += len(got)
            bad = np.nonzero(got != want[n])[0]
            result["mismatches"] += int(len(bad))
            if len(bad) and result["first_mismatch"] is None:
                i = int(bad[0])
                result["first_mismatch"] = {"episode": tag, "query": n, "word": i, "got": int(got[i]),
                                            "want": int(want[n][i])}
            result["preds"].append(int(got[-1]))
            if self.p.get("return_outputs"):
                result["outputs"].append(got.tolist())

    async def timed_load_and_queries(self, episode, result: dict):
        """LOAD, then queries back to back, with no gaps: the cycle of every request and response header."""
        n = int(self.p.get("timing_queries", 0))
        src, sink = self.link.source, self.link.sink
        idle, bp = src.idle, sink.backpressure
        src.idle, sink.backpressure = 0.0, 0.0
        # LOAD: last payload word to response header
        words = encode_request(Opcode.LOAD, self.load_words(episode))
        self.timer.start()
        self.link.send_raw(words)
        resp = decode_response(await self.link.recv_packet())
        self.timer.stop()
        assert resp.status == Status.OK, f"LOAD answered {resp.status!r}"
        load_cycles = self.timer.responses[0] - (self.timer.requests[0] + len(words) - 1)
        queries = [episode["queries"][i % len(episode["queries"])] for i in range(n)]
        self.timer.start()
        await self.run_queries(episode, queries, result, tag=-1)
        self.timer.stop()
        h0 = self.timer.requests[0]
        result["timing"] = {
            "headers": [c - h0 for c in self.timer.requests],
            "responses": [c - h0 for c in self.timer.responses],
            "load_cycles": load_cycles,
        }
        src.idle, sink.backpressure = idle, bp


def _new_result():
    return {"queries": 0, "words": 0, "mismatches": 0, "first_mismatch": None, "preds": [], "outputs": [],
            "cycles": [], "timing": None, "checks": []}


def _problems(result: dict, p: dict) -> list[str]:
    exp = p.get("expected") or {}
    problems = mismatch_problems(result)
    lat = exp.get("latency")
    if lat is not None and any(c != lat for c in result["cycles"]):
        problems.append(f"query latency {sorted(set(result['cycles']))} differs from the model's {lat}")
    t = result.get("timing")
    if t and exp.get("timeline"):
        tl = exp["timeline"]
        if t["headers"] != tl["headers"][: len(t["headers"])] or t["responses"] != tl["responses"]:
            problems.append(f"timeline differs from the model: headers {t['headers']} vs {tl['headers']}, "
                            f"responses {t['responses']} vs {tl['responses']}")
    if t and exp.get("load_cycles") is not None and t["load_cycles"] != exp["load_cycles"]:
        problems.append(f"LOAD took {t['load_cycles']} cycles, the model says {exp['load_cycles']}")
    return problems


@cocotb.test()
async def match_engine(dut):
    """Load each episode's support set, run its queries back to back, compare every output word."""
    p = bench_params()
    scenarios = {"episodes": episodes_scenario, "errors": errors_scenario, "reset": reset_scenario,
                 "protocol": protocol_scenario}
    await run_scenarios(MatchBench(dut, p), _new_result(), scenarios, "episodes", lambda r: _problems(r, p))


async def episodes_scenario(tb: MatchBench, p: dict, result: dict):
    for e, ep in enumerate(p["episodes"]):
        if e == 0 and p.get("timing_queries"):
            await tb.timed_load_and_queries(ep, result)
        else:
            await tb.load(ep)
        await tb.run_queries(ep, ep["queries"], result, tag=e, window=p.get("window", 2))
        st = await tb.status()
        result["cycles"].append(st["last_cycles"])
    st = await tb.status()
    assert st["runs"] == result["queries"] and st["errors"] == 0, (st, result["queries"])


async def errors_scenario(tb: MatchBench, p: dict, result: dict):
    """Malformed packets get error statuses, in order with pipelined queries; the next good packet works."""
    cfg, link = tb.cfg, tb.link
    ep = p["episodes"][0]
    good = load_payload(ep["support"], ep["labels"])
    n = len(good)
    q = run_payload(ep["queries"][0], cfg)

    async def expect(status, what):
        resp = decode_response(await link.recv_packet())
        result["checks"].append([what, resp.status.name])
        assert resp.status == status, f"{what}: got {resp.status!r}, want {status!r}"
        return resp

    link.send_raw(encode_request(Opcode.RUN, q))
    await expect(Status.NOT_LOADED, "run before load")
    link.send_raw(encode_request(0x7E, [1, 2, 3]))
    await expect(Status.UNKNOWN_OPCODE, "unknown opcode")
    link.send_raw([((0x11 << 24) | (Opcode.STATUS << 16), False), (5, True)])
    await expect(Status.BAD_MAGIC, "bad magic")
    link.send_raw(encode_request(Opcode.LOAD, [0] * 3))
    await expect(Status.BAD_LENGTH, "short load")
    link.send_raw([(header(Opcode.LOAD, n), False)] + [(w, False) for w in good[:4]] + [(0, True)])
    await expect(Status.BAD_LENGTH, "truncated load")
    link.send_raw([(header(Opcode.LOAD, n), False)] + [(w, False) for w in good] + [(0, False), (0, True)])
    await expect(Status.BAD_LENGTH, "overlong load")
    bad = list(good)
    bad[(cfg.dim + 1) * (cfg.n_support - 1)] = cfg.n_way  # a label out of range
    link.send_raw(encode_request(Opcode.LOAD, bad))
    await expect(Status.BAD_VALUE, "label out of range")
    bad = list(good)
    bad[2] = (cfg.emb_fmt.max_code + 1) & 0xFFFFFFFF
    link.send_raw(encode_request(Opcode.LOAD, bad))
    await expect(Status.BAD_VALUE, "embedding out of range")
    if cfg.n_way > 1:
        bad = list(good)
        for j in range(cfg.n_support):  # class 1 gets no row
            lab = bad[j * (cfg.dim + 1)]
            bad[j * (cfg.dim + 1)] = 0 if lab == 1 else lab
        link.send_raw(encode_request(Opcode.LOAD, bad))
        await expect(Status.BAD_VALUE, "class without rows")
    st = await tb.status()
    errors = len(result["checks"])
    assert st["loaded"] == 0 and st["errors"] == errors, st
    # a good load, then good and bad queries back to back: answers in order
    await tb.load(ep)
    queries = [np.asarray(x) for x in ep["queries"][:3]]
    want = tb.expected(ep, np.stack(queries))
    # a query code out of its format's range (none exists when two 16-bit codes share a word
    # and the format is 16 bits wide)
    bad_q = None
    if cfg.query_pack == 1 or cfg.emb_fmt.width < 16:
        codes = [int(x) for x in ep["queries"][0]]
        codes[-1] = cfg.emb_fmt.min_code - 1
        bad_q = run_payload(codes, cfg)
    link.send_raw(encode_request(Opcode.RUN, run_payload(queries[0], cfg)))
    if bad_q is not None:
        link.send_raw(encode_request(Opcode.RUN, bad_q))
    link.send_raw(encode_request(Opcode.RUN, run_payload(queries[1], cfg)))
    W = cfg.query_words
    overlong = [(header(Opcode.RUN, W), False)] + [(0, False)] * W + [(0, True)]
    link.send_raw(overlong)
    link.send_raw(encode_request(Opcode.STATUS))
    link.send_raw(encode_request(Opcode.RUN, run_payload(queries[2], cfg)))
    r0 = await expect(Status.OK, "query")
    if bad_q is not None:
        await expect(Status.BAD_VALUE, "query value out of range")
    r2 = await expect(Status.OK, "query after a bad one")
    await expect(Status.BAD_LENGTH, "overlong query")
    st_resp = await expect(Status.OK, "status behind the queries")
    r5 = await expect(Status.OK, "query after status")
    for k, r in zip((0, 1, 2), (r0, r2, r5), strict=True):
        got = from_words(r.payload)
        result["queries"] += 1
        result["words"] += len(got)
        result["mismatches"] += int(np.sum(got != want[k]))
    st = dict(zip(STATUS_FIELDS, st_resp.payload, strict=True))
    bad_queries = 1 + (bad_q is not None)
    assert st["runs"] == 2 and st["errors"] == errors + bad_queries and st["last_error"] == Status.BAD_LENGTH, st
    assert MAGIC == 0xA5


async def reset_scenario(tb: MatchBench, p: dict, result: dict):
    """Reset while queries are in flight, then reload and run whole episodes."""
    ep = p["episodes"][0]
    await tb.load(ep)
    for qv in ep["queries"][:4]:
        tb.link.send_raw(encode_request(Opcode.RUN, run_payload(qv, tb.cfg)))
    await ClockCycles(tb.clock, p.get("reset_after", 3 * tb.cfg.dim))
    await tb.reset_in_flight()
    await episodes_scenario(tb, {**p, "timing_queries": 0}, result)
