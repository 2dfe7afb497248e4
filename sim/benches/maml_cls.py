"""cocotb benches for the classification MAML engine: episodes against the bit-exact reference.

The parameters are the MAML bench's (:mod:`metafab.sim.benches.maml`) with a
:class:`~metafab.reference.config.MamlClsConfig` dict as ``config`` and
``tasks`` a list of episodes ``[xs, labels, xq]`` (act-format codes ``K x n_in``,
``K`` class labels, ``Q x n_in``). A response is, per query, its ``N``
probability codes and its class (:func:`metafab.reference.maml_cls_fixed.result_words`).
The ``errors`` scenario adds a label out of range (``BAD_VALUE``, the next
episode exact) to the MAML bench's malformed packets.
"""

from __future__ import annotations

import cocotb
import numpy as np

from metafab.reference import maml_cls_fixed as mc
from metafab.reference.config import MamlClsConfig
from metafab.reference.payloads import maml_cls_run_words, maml_load_words, maml_weight_codes
from metafab.reference.protocol import to_words
from metafab.sim.benches import maml as mb
from metafab.sim.benches.packet_bench import ProtocolPayloads, bench_params, protocol_scenario, run_scenarios


def episode_words(task) -> list[int]:
    """The RUN payload of one episode ``[xs, labels, xq]``."""
    return maml_cls_run_words(*task)


class MamlClsBench(mb.MamlBench):
    config_class = MamlClsConfig

    def protocol_payloads(self) -> ProtocolPayloads:
        cfg, task = self.cfg, self.p["tasks"][0]
        load, run = maml_load_words(self.w0), episode_words(task)
        bad_load = list(load)
        bad_load[len(load) // 2] = cfg.master_fmt.max_code + 1
        bad_run = list(run)
        bad_run[cfg.n_in] = cfg.n_way  # the first support sample's label, one past the last class
        return ProtocolPayloads(load=load, run=run, run_answer=to_words(self.expected(task)),
                                bad_load=bad_load, bad_run=bad_run)

    def task_words(self, task) -> list[int]:
        return episode_words(task)

    def reference_result(self, task):
        xs, labels, xq = (np.asarray(a, dtype=np.int64) for a in task)
        r = mc.run_task(self.w_ref, xs, labels, xq, self.cfg)
        return np.asarray(mc.result_words(r), dtype=np.int64), maml_weight_codes(r.weights)

    def bad_runs(self, words):
        cfg = self.cfg
        bad_input = list(words)
        bad_input[0] = cfg.act_fmt.max_code + 5
        high, low = list(words), list(words)
        high[cfg.n_in] = cfg.n_way
        low[cfg.n_in] = -1
        return [("input out of range", bad_input), ("label out of range", high), ("negative label", low)]


@cocotb.test()
async def maml_cls_engine(dut):
    """Load the initial weights, run every episode, compare each output word with the reference."""
    p = bench_params()
    scenarios = {"tasks": mb.tasks_scenario, "errors": mb.errors_scenario, "reset": mb.reset_scenario,
                 "protocol": protocol_scenario}
    await run_scenarios(MamlClsBench(dut, p), mb._new_result(), scenarios, "tasks",
                        lambda r: mb._problems(r, p.get("expected_cycles")))
