"""The MAML engine against the bit-exact reference: Amaranth simulator, cocotb + Verilator, cocotb + Icarus.

Every output word of every task is compared with
:func:`metafab.reference.maml_fixed.run_task`, and the engine's own cycle
counter with the cycle model, on the configurations the engine must support.
Each design is converted and compiled once per session (build caches keyed
by content).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from metafab.gen import flow
from metafab.gen.engines.maml import ENGINE, random_params, random_tasks, run_engine
from metafab.hw.maml_cycles import maml_cycles
from metafab.hw.maml_engine import MamlEngine
from metafab.hw.maml_schedule import schedule
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.protocol import (
    STATUS_FIELDS,
    Opcode,
    Status,
    decode_response,
    encode_request,
    from_words,
    to_words,
)
from metafab.sim.runner import SimulationFailed

from .conftest import ecp5_verilog, requires_icarus

TOPLEVEL = ENGINE.toplevel
DEFAULT = MamlConfig()


def engine_verilog(cfg):
    return flow.engine_verilog(ENGINE, cfg)


CONFIGS = {
    "default": DEFAULT,
    "steps5": DEFAULT.replace(steps=5),
    "p1": DEFAULT.replace(lanes=1),
    "p64": DEFAULT.replace(lanes=64),
    "p128": DEFAULT.replace(lanes=128),
    "2-32-32-2": DEFAULT.replace(layers=[2, 32, 32, 2]),
    "deep-narrow": DEFAULT.replace(layers=[1, 8, 8, 8, 1], lanes=8),
}
TASKS = {"default": 6, "steps5": 2, "p1": 1, "p64": 3, "p128": 4, "2-32-32-2": 3, "deep-narrow": 4}
#: small nets that exercise what the configs above do not: P > 16 with few samples (half the
#: accumulators, ragged tiles), several outputs with more queries than support samples, a
#: query-only task, a wider master format with truncating rounding points and three steps
EXTRA = {
    "p32-k3": MamlConfig(layers=(1, 6, 1), k_support=3, n_query=3, lanes=32),
    "wide-out": MamlConfig(layers=(2, 9, 5, 3), k_support=5, n_query=7, lanes=8, steps=2),
    "query-only": MamlConfig(layers=(3, 12, 2), k_support=7, n_query=2, lanes=4, steps=0),
    "master-trunc": MamlConfig(layers=(1, 20, 20, 1), k_support=6, n_query=9, lanes=32, steps=3,
                               master_fmt="Q4.16", forward_rounding="truncate",
                               update_rounding="truncate", weight_read_rounding="half_even"),
}


def weights(cfg: MamlConfig, seed: int = 7, scale: float = 1.0):
    return mf.quantize_params(random_params(cfg, seed, scale), cfg)


# --- Amaranth simulator: the whole engine on a tiny net --------------------------


def amaranth_run(cfg: MamlConfig, requests, *, ready_seed=None, dut=None):
    """Send request packets to the engine in the Amaranth simulator; return the response packets.

    ``ready_seed``: the response stream's ``ready`` is low on random cycles (back-pressure)."""
    dut = MamlEngine(config=cfg) if dut is None else dut
    rng = np.random.default_rng(ready_seed)
    beats = [b for req in requests for b in req]
    responses, current = [], []
    n_resp = len(requests)

    async def source(ctx):
        for word, last in beats:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"data": word, "last": int(last)})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        while len(responses) < n_resp:
            _, _, valid, ready, payload = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if ready_seed is not None:
                ctx.set(dut.o.ready, int(rng.random() < 0.6))
            if valid and ready:
                current.append(payload.data)
                if payload.last:
                    responses.append(decode_response(list(current)))
                    current.clear()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-6 * 50_000)
    assert len(responses) == n_resp, f"got {len(responses)} of {n_resp} responses"
    return responses


def test_engine_in_amaranth_simulator_matches_reference():
    cfg = MamlConfig(layers=(1, 3, 1), k_support=2, n_query=2, lanes=2, steps=2)
    wq = weights(cfg, scale=1.5)
    tasks = random_tasks(cfg, 2, seed=5)
    reqs = [encode_request(Opcode.LOAD, to_words(np.concatenate([w.reshape(-1) for w in wq])))]
    for xs, ys, xq in tasks:
        support = np.concatenate([np.array(xs), np.array(ys)], axis=1).reshape(-1)
        reqs.append(encode_request(Opcode.RUN, to_words(np.concatenate([support, np.array(xq).reshape(-1)]))))
        reqs.append(encode_request(Opcode.STATUS))
    resp = amaranth_run(cfg, reqs)
    assert resp[0].status == Status.OK and resp[0].payload == ()
    for n, (xs, ys, xq) in enumerate(tasks):
        run, status = resp[1 + 2 * n], resp[2 + 2 * n]
        want = mf.run_task(wq, np.array(xs), np.array(ys), np.array(xq), cfg).y_query.reshape(-1)
        assert run.status == Status.OK
        assert from_words(run.payload).tolist() == want.tolist()
        st = dict(zip(STATUS_FIELDS, status.payload, strict=True))
        assert st["last_cycles"] == maml_cycles(cfg).task_cycles
        assert st["runs"] == n + 1 and st["loaded"] == 1


@pytest.mark.parametrize("cfg, ready", [
    (MamlConfig(layers=(1, 3, 1), k_support=2, n_query=2, lanes=2, steps=2), 3),
    (MamlConfig(layers=(1, 3, 1), k_support=2, n_query=2, lanes=2, steps=2), None),
    (MamlConfig(layers=(2, 5, 3), k_support=3, n_query=1, lanes=4, steps=0), 4),
    (MamlConfig(layers=(1, 2, 1), k_support=1, n_query=1, lanes=1, steps=1), None),
    (MamlConfig(layers=(1, 12, 12, 1), k_support=2, n_query=2, lanes=8, steps=1), None),
], ids=["s2-backpressure", "s2-full-speed", "s0", "tiny", "wide-full-speed"])
def test_read_weights_returns_the_adapted_weights(cfg, ready):
    """READ_WEIGHTS after LOAD gives the loaded weights, after each RUN that task's adapted weights
    (the reference's), with back-pressure on the response stream; before a LOAD it is NOT_LOADED."""
    from metafab.reference.payloads import maml_weight_codes

    wq = weights(cfg, scale=1.5)
    tasks = random_tasks(cfg, 2, seed=9)
    reqs = [encode_request(Opcode.READ_WEIGHTS), encode_request(Opcode.LOAD, to_words(maml_weight_codes(wq))),
            encode_request(Opcode.READ_WEIGHTS)]
    for xs, ys, xq in tasks:
        support = np.concatenate([np.array(xs), np.array(ys)], axis=1).reshape(-1)
        reqs.append(encode_request(Opcode.RUN, to_words(np.concatenate([support, np.array(xq).reshape(-1)]))))
        reqs.append(encode_request(Opcode.READ_WEIGHTS))
        reqs.append(encode_request(Opcode.STATUS))
    resp = amaranth_run(cfg, reqs, ready_seed=ready)
    assert resp[0].status == Status.NOT_LOADED and resp[0].payload == ()
    assert resp[2].status == Status.OK and from_words(resp[2].payload).tolist() == maml_weight_codes(wq)
    for n, (xs, ys, xq) in enumerate(tasks):
        run, read, status = resp[3 + 3 * n: 6 + 3 * n]
        r = mf.run_task(wq, np.array(xs), np.array(ys), np.array(xq), cfg)
        assert from_words(run.payload).tolist() == r.y_query.reshape(-1).tolist()
        assert read.status == Status.OK and len(read.payload) == cfg.n_params
        assert from_words(read.payload).tolist() == maml_weight_codes(r.weights)
        if cfg.steps:
            assert maml_weight_codes(r.weights) != maml_weight_codes(wq)  # the test sees an adaptation
        st = dict(zip(STATUS_FIELDS, status.payload, strict=True))
        assert st["last_cycles"] == maml_cycles(cfg).task_cycles and st["runs"] == n + 1  # READ is no run


def test_engine_rejects_bad_configs():
    with pytest.raises(UserError, match="lanes must be a power of two.*got 12"):
        DEFAULT.replace(lanes=12)
    with pytest.raises(TypeError, match="MamlConfig"):
        MamlEngine(config=DEFAULT.to_dict())


def test_core_bus_is_one_signature_for_front_end_and_cores():
    """The front end drives CoreBusSignature, each core takes it flipped; PacketEngine refuses a
    core whose bus does not fit the opcodes (a pipelined core behind non-pipelined ops)."""
    from amaranth.hdl import Fragment
    from amaranth.lib.wiring import In, Out

    from metafab.hw.frontend import CoreBusSignature, PacketEngine
    from metafab.hw.maml_engine import maml_ops
    from metafab.hw.match_engine import MatchCore
    from metafab.reference.config import MatchConfig

    plain, piped = CoreBusSignature(pipelined=False), CoreBusSignature(pipelined=True)
    assert set(piped.members) - set(plain.members) == {"accept", "presult_valid", "presult_status",
                                                        "presult_ack"}
    assert plain == CoreBusSignature.for_ops(maml_ops(DEFAULT)) and plain != piped
    cfg = EXTRA["query-only"]
    engine = MamlEngine(config=cfg)
    assert engine.core.signature.members["bus"] == In(plain)
    assert engine.ops == maml_ops(cfg) and not engine.out_register
    Fragment.get(engine, None)  # elaborates, wiring.connect checks both sides of the bus
    assert engine._front.signature.members["core"] == Out(plain)
    with pytest.raises(TypeError, match=r"pipelined=True.*need In\(CoreBusSignature\(pipelined=False\)\)"):
        PacketEngine(core=MatchCore(config=MatchConfig(n_way=2, k_shot=1, dim=8, lanes=4)), ops=maml_ops(cfg))
    with pytest.raises(TypeError, match="'bus' member"):
        PacketEngine(core=object(), ops=maml_ops(cfg))


# --- cocotb + Verilator ----------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_engine_verilator_bit_exact(name):
    cfg = CONFIGS[name]
    tasks = random_tasks(cfg, TASKS[name], seed=11)
    r = run_engine(cfg, weights(cfg), tasks, sim="verilator", run_name=f"test-{name}", read_weights=True)
    assert r["tasks"] == len(tasks) and r["weight_words"] == len(tasks) * cfg.n_params
    assert r["words"] == len(tasks) * (cfg.n_query * cfg.n_out + cfg.n_params)
    assert r["mismatches"] == 0 and r["weight_mismatches"] == 0
    assert r["cycles"] == [maml_cycles(cfg).task_cycles] * len(tasks)


@pytest.mark.parametrize("name", list(EXTRA))
def test_engine_verilator_bit_exact_more_shapes(name):
    cfg = EXTRA[name]
    tasks = random_tasks(cfg, 3, seed=13)
    r = run_engine(cfg, weights(cfg, scale=1.5), tasks, sim="verilator", run_name=f"test-{name}")
    assert r["mismatches"] == 0 and r["tasks"] == 3
    assert r["cycles"] == [maml_cycles(cfg).task_cycles] * 3


def test_engine_saturating_cases_match_reference():
    """Extreme inputs, large weights and a large learning rate: saturation everywhere, still bit-exact."""
    cfg = MamlConfig(layers=(1, 8, 8, 1), k_support=4, n_query=4, lanes=4, steps=2, lr=2.0,
                     lr_fmt="UQ1.15", acc_fmt="Q12.30")
    wq = weights(cfg, seed=3, scale=6.0)
    tasks = random_tasks(cfg, 4, seed=2, extreme=True)
    # the stimulus really saturates: reference values hit the format limits
    outs = [mf.run_task(wq, *(np.array(a) for a in t), cfg) for t in tasks]
    limits = [cfg.master_fmt.min_code, cfg.master_fmt.max_code]
    hit = [int(np.isin(w, limits).sum()) for o in outs for w in o.weights]
    assert sum(hit) > 0
    assert any(np.isin(o.y_query, [cfg.act_fmt.min_code, cfg.act_fmt.max_code]).any() for o in outs)
    r = run_engine(cfg, wq, tasks, sim="verilator", run_name="test-saturate")
    assert r["mismatches"] == 0 and r["tasks"] == 4


def test_engine_malformed_packets_and_recovery():
    cfg = DEFAULT
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 2, seed=4), scenario="errors",
                   run_name="test-errors", read_weights=True)
    assert [c[1] for c in r["checks"]] == [
        "NOT_LOADED", "NOT_LOADED", "BAD_LENGTH", "UNKNOWN_OPCODE", "BAD_MAGIC", "BAD_LENGTH", "BAD_LENGTH",
        "BAD_LENGTH", "BAD_VALUE", "BAD_VALUE",
    ]
    assert r["mismatches"] == 0 and r["tasks"] == 2 and r["weight_words"] == 2 * cfg.n_params


@pytest.mark.parametrize("reset_after", [20, 150])
def test_engine_reset_mid_task_then_full_task(reset_after):
    """Reset while the RUN packet streams in (20) and while the engine computes (150)."""
    cfg = DEFAULT
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 2, seed=8), scenario="reset",
                   run_name=f"test-reset{reset_after}", reset_after=reset_after)
    assert r["mismatches"] == 0 and r["tasks"] == 2


def test_a_wrong_reference_is_caught():
    """The scoreboard is not vacuous: weights that differ in one code give mismatches."""
    cfg = CONFIGS["deep-narrow"]
    wq = weights(cfg)
    tasks = random_tasks(cfg, 1, seed=1)

    bumped = [w.copy() for w in wq]
    bumped[-1][0, -1] += 64  # the output bias: every query output moves by 8 LSBs
    with pytest.raises(SimulationFailed, match="mismatching output words"):
        run_engine(cfg, wq, tasks, run_name="test-wrong", expect_weights=bumped)


# --- cocotb + Icarus -------------------------------------------------------------


@requires_icarus
@pytest.mark.parametrize("scenario", ["tasks", "errors", "reset"])
def test_engine_icarus_small_net(scenario):
    cfg = MamlConfig(layers=(1, 6, 1), k_support=3, n_query=3, lanes=4, steps=2)
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 3, seed=6), sim="icarus", scenario=scenario,
                   run_name=f"test-icarus-{scenario}")
    assert r["mismatches"] == 0 and r["tasks"] == 3


@requires_icarus
def test_engine_as_elaborated_for_ecp5_with_a_dsp_model():
    """The engine as built for the ECP5 (every lane product in a MULT18X18D with its input and output
    registers), simulated with a behavioural model of that block: same words, same cycles."""
    cfg = MamlConfig(layers=(1, 6, 1), k_support=3, n_query=3, lanes=4, steps=2)
    text, instances = ecp5_verilog(MamlEngine(config=cfg), TOPLEVEL)
    assert len(instances) == cfg.lanes
    for params in instances:
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            assert f'.REG_{reg}_CLK("CLK0")' in params
    assert "TRELLIS_FF #(" in text  # the memories' registered read addresses, one copy per part
    assert "MULT18X18D" not in engine_verilog(cfg) and "TRELLIS_FF" not in engine_verilog(cfg)
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 3, seed=8), sim="icarus", run_name="test-ecp5-dsp",
                   verilog=text)
    assert r["mismatches"] == 0 and r["tasks"] == 3
    assert r["cycles"] == [maml_cycles(cfg).task_cycles] * 3


@requires_icarus
def test_engine_icarus_default_config():
    cfg = DEFAULT
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 1, seed=9), sim="icarus", run_name="test-icarus")
    assert r["mismatches"] == 0 and r["cycles"] == [maml_cycles(cfg).task_cycles]


# --- the cycle model -----------------------------------------------------------------


def test_cycle_model_adds_up_the_schedule():
    for cfg in CONFIGS.values():
        model = maml_cycles(cfg)
        sch = schedule(cfg)
        issue = sum(j.passes * j.r_tiles for j in sch.jobs())
        assert model.issue_cycles == issue
        assert model.task_cycles == issue + model.gap_cycles + model.tail_cycles
        assert model.tail_cycles == sch.tail
        assert 0 < model.lane_utilisation <= 1
    assert maml_cycles(DEFAULT).lane_utilisation >= 0.85


def _random_config(rng) -> MamlConfig:
    depth = int(rng.integers(1, 4))
    layers = [int(rng.integers(1, 4))] + [int(rng.integers(1, 20)) for _ in range(depth)]
    layers.append(int(rng.integers(1, 4)))
    return MamlConfig(layers=layers, k_support=int(rng.integers(1, 13)), n_query=int(rng.integers(1, 13)),
                      steps=int(rng.integers(0, 4)), lanes=int(2 ** rng.integers(0, 7)))


def _fits(access, tensor) -> bool:
    return access.rows <= tensor.grid[0] and access.cols <= tensor.grid[1]


def test_schedule_invariants_on_random_configs():
    """Shapes fit the lanes and every tile fits its matrix's word; the timeline adds up.

    The timeline itself asserts that no memory word is read and written in
    one cycle; here every job's reads come after the writes they depend on.
    """
    rng = np.random.default_rng(1)
    for _ in range(40):
        cfg = _random_config(rng)
        sch = schedule(cfg)
        for job in sch.all_kinds():
            s = job.shape
            assert s.pm * s.pn * s.pr <= cfg.lanes
            for acc in job.reads() + job.outs + ((job.aux,) if job.aux else ()):
                assert _fits(acc, sch.tensors[acc.tensor]), (cfg, job, acc)
        model = maml_cycles(cfg)
        assert model.task_cycles == model.issue_cycles + model.gap_cycles + model.tail_cycles
        assert model.issue_cycles >= -(-cfg.useful_macs() // cfg.lanes)
        assert 0 < model.lane_utilisation <= 1


@pytest.mark.parametrize("lanes,floor", [(16, 0.95), (32, 0.9), (64, 0.85)])
def test_default_net_utilisation(lanes, floor):
    """MAC-lane utilisation of the default task (1-40-40-1, K=Q=10, one step) at several P."""
    assert maml_cycles(DEFAULT.replace(lanes=lanes)).lane_utilisation >= floor


@pytest.mark.parametrize("sim", ["verilator", pytest.param("icarus", marks=requires_icarus)])
def test_engine_follows_every_protocol_rule(sim):
    """docs/protocol.md's error precedence, loaded flag, STATUS fields and one-cycle reset, each request
    against the bench's model of those rules (the default design in Verilator, a small one in Icarus)."""
    cfg = DEFAULT if sim == "verilator" else MamlConfig(layers=(1, 6, 1), k_support=3, n_query=3, lanes=4, steps=2)
    r = run_engine(cfg, weights(cfg), random_tasks(cfg, 1, seed=3), sim=sim, scenario="protocol",
                   run_name=f"test-protocol-{sim}")
    statuses = [c[1] for c in r["checks"]]
    assert r["protocol_checks"] == len(statuses) > 50
    assert {"NOT_LOADED", "BAD_MAGIC", "UNKNOWN_OPCODE", "BAD_LENGTH", "BAD_VALUE", "OK"} == set(statuses)
