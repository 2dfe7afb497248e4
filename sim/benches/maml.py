"""cocotb benches for the MAML engine: tasks against the bit-exact reference, bad packets, reset.

Parameters (a JSON file named by ``METAFAB_BENCH``):

``config``
    a MamlConfig dict;
``weights``
    the initial master-format codes in protocol order (layer by layer, ``[W | b]`` row-major);
``tasks``
    a list of ``[xs, ys, xq]`` code lists (``K x n_in``, ``K x n_out``, ``Q x n_in``);
``idle``, ``backpressure``, ``seed``
    random stream gaps;
``scenario``
    ``"tasks"`` (default), ``"errors"``, ``"reset"`` or ``"protocol"`` (every rule of the protocol, with
    the first task);
``expected_cycles``
    the cycle model's cycles per task (checked against the engine's counter);
``return_outputs``
    return every task's outputs (default: the first four);
``read_weights``
    after every task, read the adapted weights back (READ_WEIGHTS) and compare every word with the
    reference's adapted weights (counted in ``weight_words`` and, like any wrong word, in ``mismatches``).

Writes ``{tasks, words, mismatches, cycles, first_mismatch, outputs, weight_words, weight_mismatches,
adapted}`` to ``METAFAB_BENCH_OUT`` (``adapted``: the read-back weight codes of the tasks whose outputs are
returned).
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig
from metafab.reference.payloads import maml_load_words, maml_run_words, maml_weight_codes, maml_weights_from_words
from metafab.reference.protocol import Opcode, Status, from_words, to_words
from metafab.sim.benches.packet_bench import (
    PacketEngineBench,
    ProtocolPayloads,
    bench_params,
    mismatch_problems,
    protocol_scenario,
    run_scenarios,
)


def task_words(task) -> list[int]:
    """The RUN payload of one task ``[xs, ys, xq]`` (act-format code lists)."""
    return maml_run_words(*task)


class MamlBench(PacketEngineBench):
    config_class = MamlConfig

    def __init__(self, dut, p: dict):
        super().__init__(dut, p)
        self.cfg = self.config_class.from_dict(p["config"])
        self.w0 = maml_weights_from_words(self.cfg, p["weights"])
        self.w_ref = maml_weights_from_words(self.cfg, p.get("reference_weights", p["weights"]))

    async def load(self):
        await self.checked(Opcode.LOAD, maml_load_words(self.w0))

    def protocol_payloads(self) -> ProtocolPayloads:
        cfg, task = self.cfg, self.p["tasks"][0]
        load, run = maml_load_words(self.w0), task_words(task)
        bad_load, bad_run = list(load), list(run)
        bad_load[len(load) // 2] = cfg.master_fmt.max_code + 1
        bad_run[0] = cfg.act_fmt.max_code + 5
        return ProtocolPayloads(load=load, run=run, run_answer=to_words(self.expected(task)),
                                bad_load=bad_load, bad_run=bad_run)

    def task_words(self, task) -> list[int]:
        return task_words(task)

    def reference_result(self, task):
        """The reference's response words of one task and its adapted weight codes (protocol order)."""
        xs, ys, xq = (np.asarray(a, dtype=np.int64) for a in task)
        r = mf.run_task(self.w_ref, xs, ys, xq, self.cfg)
        return r.y_query.reshape(-1), maml_weight_codes(r.weights)

    def expected(self, task) -> np.ndarray:
        return self.reference_result(task)[0]

    def bad_runs(self, words) -> list[tuple[str, list[int]]]:
        """Malformed RUN payloads (each answered BAD_VALUE) and what is wrong with them."""
        bad_task = list(words)
        bad_task[0] = self.cfg.act_fmt.max_code + 5
        return [("input out of range", bad_task)]

    async def run_tasks(self, tasks, result: dict):
        for n, task in enumerate(tasks):
            want, want_w = self.reference_result(task)
            resp = await self.link.request(Opcode.RUN, self.task_words(task))
            assert resp.status == Status.OK, f"task {n}: RUN answered {resp.status!r}"
            got = from_words(resp.payload)
            result["tasks"] += 1
            result["words"] += len(want)
            bad = np.nonzero(got != want)[0]
            result["mismatches"] += int(len(bad))
            if len(bad) and result["first_mismatch"] is None:
                i = int(bad[0])
                result["first_mismatch"] = {"task": n, "word": i, "got": int(got[i]), "want": int(want[i])}
            if n < 4 or self.p.get("return_outputs"):
                result["outputs"].append(got.tolist())
            st = await self.status()
            result["cycles"].append(st["last_cycles"])
            if self.p.get("read_weights"):
                got_w = from_words((await self.checked(Opcode.READ_WEIGHTS)).payload)
                want_w = np.asarray(want_w, dtype=np.int64)
                bad_w = np.nonzero(got_w != want_w)[0] if len(got_w) == len(want_w) else np.arange(len(want_w))
                result["weight_words"] += len(want_w)
                result["weight_mismatches"] += int(len(bad_w))
                result["words"] += len(want_w)
                result["mismatches"] += int(len(bad_w))
                if len(bad_w) and result["first_mismatch"] is None:
                    i = int(bad_w[0])
                    result["first_mismatch"] = {"task": n, "weight": i, "want": int(want_w[i]),
                                                "got": int(got_w[i]) if i < len(got_w) else None}
                if n < 4 or self.p.get("return_outputs"):
                    result["adapted"].append(got_w.tolist())


def _new_result():
    return {"tasks": 0, "words": 0, "mismatches": 0, "cycles": [], "first_mismatch": None, "outputs": [],
            "weight_words": 0, "weight_mismatches": 0, "adapted": []}


def _problems(result: dict, exp) -> list[str]:
    problems = mismatch_problems(result)
    if exp is not None and any(c != exp for c in result["cycles"]):
        problems.append(f"cycles per task {sorted(set(result['cycles']))} differ from the model's {exp}")
    return problems


@cocotb.test()
async def maml_engine(dut):
    """Load the initial weights, run every task, compare each output word with the reference."""
    p = bench_params()
    scenarios = {"tasks": tasks_scenario, "errors": errors_scenario, "reset": reset_scenario,
                 "protocol": protocol_scenario}
    await run_scenarios(MamlBench(dut, p), _new_result(), scenarios, "tasks",
                        lambda r: _problems(r, p.get("expected_cycles")))


async def tasks_scenario(tb: MamlBench, p: dict, result: dict):
    await tb.load()
    await tb.run_tasks(p["tasks"], result)


async def errors_scenario(tb: MamlBench, p: dict, result: dict):
    """Malformed packets get error statuses and the next good packet works."""
    cfg = tb.cfg
    link = tb.link
    task = p["tasks"][0]
    words = tb.task_words(task)
    checks = []

    async def expect(status, what):
        resp = decode(await link.recv_packet())
        checks.append((what, resp.status.name))
        assert resp.status == status, f"{what}: got {resp.status!r}, want {status!r}"

    from metafab.reference.protocol import MAGIC, encode_request, header
    from metafab.reference.protocol import decode_response as decode

    # a task, and a weight read-back, before any weights were loaded
    link.send_raw(encode_request(Opcode.RUN, words))
    await expect(Status.NOT_LOADED, "run before load")
    link.send_raw(encode_request(Opcode.READ_WEIGHTS))
    await expect(Status.NOT_LOADED, "weights read before load")
    # a read-back with a payload (it has none)
    link.send_raw(encode_request(Opcode.READ_WEIGHTS, [0]))
    await expect(Status.BAD_LENGTH, "weights read with a payload")
    # unknown opcode with a payload
    link.send_raw(encode_request(0x7E, [1, 2, 3]))
    await expect(Status.UNKNOWN_OPCODE, "unknown opcode")
    # bad magic
    link.send_raw([((0x11 << 24) | (Opcode.STATUS << 16), False), (5, True)])
    await expect(Status.BAD_MAGIC, "bad magic")
    # header length disagrees with the opcode's
    link.send_raw(encode_request(Opcode.LOAD, [0] * 3))
    await expect(Status.BAD_LENGTH, "short load")
    # right header, but last arrives early
    n = cfg.n_params
    link.send_raw([(header(Opcode.LOAD, n), False)] + [(0, False)] * 4 + [(0, True)])
    await expect(Status.BAD_LENGTH, "truncated load")
    # right header, payload runs past the length
    link.send_raw([(header(Opcode.LOAD, n), False)] + [(0, False)] * n + [(0, False), (0, True)])
    await expect(Status.BAD_LENGTH, "overlong load")
    # a value outside the master weight format
    big = [0] * n
    big[n // 2] = cfg.master_fmt.max_code + 1
    link.send_raw(encode_request(Opcode.LOAD, to_words(big)))
    await expect(Status.BAD_VALUE, "weight out of range")
    st = await tb.status()
    assert st["loaded"] == 0 and st["errors"] == 9, st
    # now a good load and a good task
    await tb.load()
    bad = tb.bad_runs(words)
    for what, payload in bad:
        link.send_raw(encode_request(Opcode.RUN, payload))
        await expect(Status.BAD_VALUE, what)
    await tb.run_tasks(p["tasks"], result)
    st = await tb.status()
    assert st["errors"] == 9 + len(bad) and st["last_error"] == Status.BAD_VALUE and st["runs"] == len(p["tasks"]), st
    assert MAGIC == 0xA5
    result["checks"] = checks


async def reset_scenario(tb: MamlBench, p: dict, result: dict):
    """Reset in the middle of a task, then reload and run full tasks."""
    from metafab.reference.protocol import encode_request

    await tb.load()
    tb.link.send_raw(encode_request(Opcode.RUN, tb.task_words(p["tasks"][0])))
    await ClockCycles(tb.clock, p.get("reset_after", 60))
    await tb.reset_in_flight()
    await tb.load()
    await tb.run_tasks(p["tasks"], result)
