"""cocotb benches for the few-shot engine: pixels in, class out, against the bit-exact reference.

Parameters (a JSON file named by ``METAFAB_BENCH``), as the similarity
engine's bench (:mod:`metafab.sim.benches.match`) with:

``config``
    an EncoderConfig dict;
``encoder``
    the augmented weight codes of every layer (``quantize_encoder``), sent
    once with LOAD_ENCODER before the episodes (again after a reset);
``episodes``
    ``{"support": [[...]], "labels": [...], "queries": [[...]]}`` with
    ``act_fmt`` image codes (``M x C H W``, ``M``, ``Q x C H W``).

Every output word is compared with
:func:`metafab.reference.encoder.fewshot_fixed`. Scenarios: ``episodes``,
``errors`` (the encoder's own rules, then the similarity engine's),
``reset`` and ``protocol`` (every rule of the protocol, after LOAD_ENCODER).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from metafab.reference import encoder as enc
from metafab.reference.payloads import fewshot_encoder_words, fewshot_load_words, fewshot_run_words
from metafab.reference.protocol import Opcode, Status, decode_response, encode_request, from_words, header, to_words
from metafab.sim.benches.match import MatchBench, _new_result, _problems, episodes_scenario
from metafab.sim.benches.packet_bench import ProtocolPayloads, bench_params, protocol_scenario, run_scenarios


class FewShotBench(MatchBench):
    def __init__(self, dut, p: dict):
        super().__init__(dut, {**p, "config": enc.EncoderConfig.from_dict(p["config"]).match.to_dict()})
        self.p = p
        self.ecfg = enc.EncoderConfig.from_dict(p["config"])
        self.wq = [np.asarray(w, dtype=np.int64) for w in p["encoder"]]

    def load_words(self, episode) -> list[int]:
        return fewshot_load_words(episode["support"], episode["labels"])

    def run_words(self, query) -> list[int]:
        return fewshot_run_words(query)

    async def load_encoder(self) -> None:
        await self.checked(Opcode.LOAD_ENCODER, fewshot_encoder_words(self.wq))

    async def after_reset(self) -> None:
        await self.load_encoder()

    def expected(self, episode, queries) -> np.ndarray:
        refs = self.p.get("reference_episodes")
        if refs:
            episode = refs[[i for i, e in enumerate(self.p["episodes"]) if e is episode or e == episode][0]]
        r = enc.fewshot_fixed(self.wq, np.asarray(episode["support"]), np.asarray(episode["labels"]),
                              np.asarray(queries, dtype=np.int64), self.ecfg)
        return np.concatenate([r.probs, r.pred[:, None]], axis=1)

    def protocol_payloads(self) -> ProtocolPayloads:
        cfg, ep = self.cfg, self.p["episodes"][0]
        load = self.load_words(ep)
        bad_load = list(load)
        bad_load[(1 + len(self.run_words(ep["queries"][0]))) * (cfg.n_support - 1)] = cfg.n_way  # a bad label
        answer = self.expected(ep, np.stack([np.asarray(ep["queries"][0])]))[0]
        return ProtocolPayloads(load=load, run=self.run_words(ep["queries"][0]), run_answer=to_words(answer),
                                bad_load=bad_load, bad_run=None)


@cocotb.test()
async def fewshot_engine(dut):
    """LOAD_ENCODER once; per episode LOAD the support images and run the query images back to back."""
    p = bench_params()
    scenarios = {"episodes": fewshot_episodes, "errors": fewshot_errors, "reset": fewshot_reset,
                 "protocol": fewshot_protocol}
    await run_scenarios(FewShotBench(dut, p), _new_result(), scenarios, "episodes", lambda r: _problems(r, p))


async def fewshot_episodes(tb: FewShotBench, p: dict, result: dict):
    await tb.load_encoder()
    await episodes_scenario(tb, p, result)


async def fewshot_protocol(tb: FewShotBench, p: dict, result: dict):
    await tb.load_encoder()
    await protocol_scenario(tb, p, result)


async def fewshot_errors(tb: FewShotBench, p: dict, result: dict):
    """The encoder's rules: LOAD before LOAD_ENCODER, a weight out of range, a malformed LOAD_ENCODER,
    LOAD_ENCODER clears the loaded support set, and its payload waits behind queries in flight."""
    link, ecfg = tb.link, tb.ecfg
    ep = p["episodes"][0]
    good_w = fewshot_encoder_words(tb.wq)

    async def expect(status, what):
        resp = decode_response(await link.recv_packet())
        result["checks"].append([what, resp.status.name])
        assert resp.status == status, f"{what}: got {resp.status!r}, want {status!r}"
        return resp

    link.send_raw(encode_request(Opcode.LOAD, tb.load_words(ep)))
    await expect(Status.NOT_LOADED, "support LOAD before LOAD_ENCODER")
    link.send_raw(encode_request(Opcode.RUN, tb.run_words(ep["queries"][0])))
    await expect(Status.NOT_LOADED, "RUN before any LOAD")
    bad = list(good_w)
    bad[len(bad) // 2] = (ecfg.weight_fmt.max_code + 1) & 0xFFFFFFFF
    link.send_raw(encode_request(Opcode.LOAD_ENCODER, bad))
    await expect(Status.BAD_VALUE, "encoder weight out of range")
    link.send_raw(encode_request(Opcode.LOAD, tb.load_words(ep)))
    await expect(Status.NOT_LOADED, "support LOAD after a failed LOAD_ENCODER")
    link.send_raw([(header(Opcode.LOAD_ENCODER, len(good_w)), False)] + [(w, False) for w in good_w[:5]] + [(0, True)])
    await expect(Status.BAD_LENGTH, "truncated LOAD_ENCODER")
    await tb.load_encoder()
    await tb.load(ep)
    queries = [np.asarray(x) for x in ep["queries"][:2]]
    want = tb.expected(ep, np.stack(queries))
    # two queries in flight, then LOAD_ENCODER (its payload waits for their answers), then a RUN: NOT_LOADED
    for q in queries:
        link.send_raw(encode_request(Opcode.RUN, tb.run_words(q)))
    link.send_raw(encode_request(Opcode.LOAD_ENCODER, good_w))
    link.send_raw(encode_request(Opcode.RUN, tb.run_words(queries[0])))
    for k in range(2):
        r = await expect(Status.OK, f"query {k} before LOAD_ENCODER")
        got = from_words(r.payload)
        result["queries"] += 1
        result["words"] += len(got)
        result["mismatches"] += int(np.sum(got != want[k]))
    await expect(Status.OK, "LOAD_ENCODER behind queries")
    await expect(Status.NOT_LOADED, "RUN after LOAD_ENCODER without a support LOAD")
    st = await tb.status()
    assert st["loaded"] == 0, st
    # the read-out's rules through the encoder: a label out of range, a class without images
    bad = tb.load_words(ep)
    stride = 1 + len(tb.run_words(ep["queries"][0]))
    bad[stride * (tb.cfg.n_support - 1)] = tb.cfg.n_way
    link.send_raw(encode_request(Opcode.LOAD, bad))
    await expect(Status.BAD_VALUE, "label out of range")
    if tb.cfg.n_way > 1:
        bad = tb.load_words(ep)
        for j in range(tb.cfg.n_support):
            if bad[j * stride] == 1:
                bad[j * stride] = 0
        link.send_raw(encode_request(Opcode.LOAD, bad))
        await expect(Status.BAD_VALUE, "class without images")
    await tb.load(ep)
    await tb.run_queries(ep, queries, result, tag=0)


async def fewshot_reset(tb: FewShotBench, p: dict, result: dict):
    """Reset while queries are in flight: nothing is loaded after it; LOAD_ENCODER, LOAD and run again."""
    ep = p["episodes"][0]
    await tb.load_encoder()
    await tb.load(ep)
    for qv in ep["queries"][:3]:
        tb.link.send_raw(encode_request(Opcode.RUN, tb.run_words(qv)))
    await ClockCycles(tb.clock, p.get("reset_after", 3000))
    await tb.reset_in_flight()
    tb.link.send_raw(encode_request(Opcode.LOAD, tb.load_words(ep)))
    resp = decode_response(await tb.link.recv_packet())
    assert resp.status == Status.NOT_LOADED, f"support LOAD after reset: {resp.status!r}"
    await tb.reset()  # (the counters from zero again)
    await fewshot_episodes(tb, {**p, "timing_queries": 0}, result)
