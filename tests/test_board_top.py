"""The UART link and the board top: the host driver's own bytes through a UART model into the engine."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from metafab.gen.engines.maml import random_params, random_tasks
from metafab.gen.engines.match import episode_codes, make_episodes
from metafab.gen.export import to_verilog
from metafab.gen.host import Host, decode_bytes, request_bytes
from metafab.hw.board_top import UartEngineTop, uart_divisor
from metafab.hw.maml_engine import MamlEngine
from metafab.hw.match_engine import MatchEngine
from metafab.hw.uart import UartBridge
from metafab.reference import maml_fixed as mf
from metafab.reference import match_fixed as mx
from metafab.reference.config import MamlConfig, MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import maml_load_words as maml_load_payload
from metafab.reference.payloads import maml_run_words as maml_run_payload
from metafab.reference.payloads import match_load_words as match_load_payload
from metafab.reference.payloads import match_run_words as match_run_payload
from metafab.reference.protocol import STATUS_FIELDS, Opcode, Status, encode_request, from_words
from metafab.sim.runner import run_bench
from metafab.sim.tools import find_icarus

CFG = MamlConfig(layers=(1, 6, 1), k_support=3, n_query=2, lanes=2, steps=1)
CLOCK_HZ, BAUD = 4_000_000, 1_000_000  # 4 cycles per bit keeps the simulation short


def _uart_bits(byte: int) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def test_uart_bridge_frames_words_and_sends_responses():
    """Amaranth simulator: bytes in -> words with last from the header's length; words out -> bytes."""
    div = 4
    dut = UartBridge(divisor=div, idle_timeout=400)
    words = [w for w, _ in encode_request(Opcode.RUN, [7, 0xDEADBEEF])] + [
        w for w, _ in encode_request(Opcode.STATUS)]
    data = b"".join(int(w).to_bytes(4, "little") for w in words)
    got, sent = [], []

    async def host(ctx):
        ctx.set(dut.o.ready, 1)
        for byte in data:
            for bit in _uart_bits(byte):
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(div)
        # a partial word, then silence: the bridge forgets it
        for bit in _uart_bits(0x55):
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(div)
        await ctx.tick().repeat(600)

    async def collect(ctx):
        while True:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append((payload.data, payload.last))

    async def respond(ctx):
        for w in (0xA5000001, 0x01020304):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"data": w, "last": 0})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def line(ctx):
        while True:
            await ctx.tick()
            sent.append(ctx.get(dut.tx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(respond)
    sim.add_testbench(line, background=True)
    sim.run()
    assert got == [(w, int(i in (2, 3))) for i, w in enumerate(words)]
    # decode the tx line: 8 frames, LSB first
    out, i = [], 0
    while len(out) < 8 and i < len(sent):
        if sent[i] == 0:
            out.append(sum(sent[i + div // 2 + div * (k + 1)] << k for k in range(8)))
            i += 10 * div
        else:
            i += 1
    assert bytes(out) == (0xA5000001).to_bytes(4, "little") + (0x01020304).to_bytes(4, "little")


def test_uart_divisor_errors():
    assert uart_divisor(25e6, 115200) == 217
    with pytest.raises(UserError, match="too slow"):
        uart_divisor(1e6, 921600)
    with pytest.raises(UserError, match="more than 2 % off"):
        uart_divisor(12e6, 1_000_000 * 12 // 5 + 77777)


def _board_bench(top, requests, run_name, clock_hz=CLOCK_HZ, baud=BAUD):
    sim = "icarus" if find_icarus().found else "verilator"
    r = run_bench(verilog=to_verilog(top, "board_top"), toplevel="board_top", bench="metafab.sim.benches.board",
                  params={"divisor": uart_divisor(clock_hz, baud), "requests": [q.hex() for q in requests]},
                  sim=sim, run_name=run_name)
    return [decode_bytes(bytes.fromhex(h)) for h in r.data["responses"]]


@pytest.mark.parametrize("board", ["ulx3s-85f", "icebreaker"])
def test_board_top_at_its_pll_clock_and_the_fastest_baud(board):
    """The board top clocked at the PLL frequency its build uses (the maml engine's default clock for the
    family), the UART at the fastest rate the board's bridge runs and that clock divides to within the
    tolerance; the host driver's bytes in, every answer checked against the reference."""
    from metafab.gen.boards import get_board
    from metafab.gen.engines import get_engine
    from metafab.hw.pll import pll_setting

    b = get_board(board)
    setting = pll_setting(b.family, b.oscillator_mhz, get_engine("maml").default_clock_mhz(b.family))
    baud = next(rate for rate in (12_000_000, 6_000_000, 3_000_000) if rate <= b.max_baud
                and _divides(setting.out_hz, rate))
    wq = mf.quantize_params(random_params(CFG, seed=2), CFG)
    tasks = random_tasks(CFG, 2, seed=9)
    requests = [request_bytes(Opcode.LOAD, maml_load_payload(wq))]
    requests += [request_bytes(Opcode.RUN, maml_run_payload(*t)) for t in tasks]
    top = UartEngineTop(MamlEngine(config=CFG), clock_hz=setting.out_hz, baud=baud)
    resp = _board_bench(top, requests, f"test-board-pll-{board}", clock_hz=setting.out_hz, baud=baud)
    assert [r.status for r in resp] == [Status.OK] * 3
    for r, t in zip(resp[1:], tasks, strict=True):
        want = mf.run_task(wq, *(np.array(a) for a in t), CFG).y_query.reshape(-1)
        assert from_words(r.payload).tolist() == want.tolist()


def _divides(clock_hz, baud) -> bool:
    try:
        uart_divisor(clock_hz, baud)
    except UserError:
        return False
    return True


def test_board_top_answers_the_host_driver_bytes():
    wq = mf.quantize_params(random_params(CFG, seed=4), CFG)
    tasks = random_tasks(CFG, 2, seed=3)
    requests = [request_bytes(Opcode.RUN, maml_run_payload(*tasks[0])),  # before LOAD: refused
                request_bytes(Opcode.LOAD, maml_load_payload(wq))]
    requests += [request_bytes(Opcode.RUN, maml_run_payload(*t)) for t in tasks]
    requests += [request_bytes(0x42, [1, 2]), request_bytes(Opcode.STATUS)]
    resp = _board_bench(UartEngineTop(MamlEngine(config=CFG), clock_hz=CLOCK_HZ, baud=BAUD), requests,
                        "test-board")
    assert [r.status for r in resp] == [Status.NOT_LOADED, Status.OK, Status.OK, Status.OK,
                                        Status.UNKNOWN_OPCODE, Status.OK]
    for r, t in zip(resp[2:4], tasks, strict=True):
        want = mf.run_task(wq, *(np.array(a) for a in t), CFG).y_query.reshape(-1)
        assert from_words(r.payload).tolist() == want.tolist()
    st = dict(zip(STATUS_FIELDS, resp[-1].payload, strict=True))
    assert st["runs"] == 2 and st["errors"] == 2 and st["loaded"] == 1


def test_board_top_with_preloaded_weights():
    wq = mf.quantize_params(random_params(CFG, seed=5), CFG)
    preload = encode_request(Opcode.LOAD, maml_load_payload(wq))
    task = random_tasks(CFG, 1, seed=9)[0]
    top = UartEngineTop(MamlEngine(config=CFG), clock_hz=CLOCK_HZ, baud=BAUD, preload=preload)
    resp = _board_bench(top, [request_bytes(Opcode.RUN, maml_run_payload(*task))], "test-board-preload")
    want = mf.run_task(wq, *(np.array(a) for a in task), CFG).y_query.reshape(-1)
    assert resp[0].status == Status.OK and from_words(resp[0].payload).tolist() == want.tolist()


class _Loopback:
    """A transport whose 'board' answers every request with a canned response."""

    def __init__(self, answer: bytes):
        self.answer, self.written, self._out = answer, b"", b""

    def write(self, data):
        self.written += data
        self._out += self.answer

    def read(self, n):
        out, self._out = self._out[:n], self._out[n:]
        return out


def test_host_driver_requests_and_errors():
    ok_status = b"".join(w.to_bytes(4, "little") for w in [0xA5000006, 12, 3, 1, 2, 1, 1])
    host = Host(_Loopback(ok_status))
    st = host.status()
    assert st == {"last_cycles": 12, "runs": 3, "errors": 1, "last_error": 2, "loaded": 1, "version": 1}
    assert host.transport.written == request_bytes(Opcode.STATUS) == (0xA5030000).to_bytes(4, "little")
    refused = Host(_Loopback((0xA5040000).to_bytes(4, "little")))
    with pytest.raises(UserError, match="answered NOT_LOADED to RUN"):
        refused.run([1, 2, 3])
    silent = Host(_Loopback(b""), timeout=0.05)
    with pytest.raises(UserError, match="no complete response"):
        silent.status()


def test_axi_stream_wrapper_with_cocotbext_axi():
    """The generated AXI-Stream wrapper, driven by a standard bus model, answers real tasks."""
    from metafab.gen.wrappers import axis_wrapper

    wq = mf.quantize_params(random_params(CFG, seed=6), CFG)
    tasks = random_tasks(CFG, 2, seed=7)
    wrapper, text = axis_wrapper(engine="maml", toplevel="maml_engine", design=CFG.name)
    verilog = to_verilog(MamlEngine(config=CFG), "maml_engine") + "\n" + text
    requests = [request_bytes(Opcode.LOAD, maml_load_payload(wq))]
    requests += [request_bytes(Opcode.RUN, maml_run_payload(*t)) for t in tasks]
    requests += [request_bytes(Opcode.STATUS)]
    sim = "icarus" if find_icarus().found else "verilator"
    r = run_bench(verilog=verilog, toplevel=wrapper, bench="metafab.sim.benches.axis",
                  params={"requests": [q.hex() for q in requests], "seed": 3}, sim=sim, run_name="test-axis")
    resp = [decode_bytes(bytes.fromhex(h)) for h in r.data["responses"]]
    assert [x.status for x in resp] == [Status.OK] * 4
    for x, t in zip(resp[1:3], tasks, strict=True):
        want = mf.run_task(wq, *(np.array(a) for a in t), CFG).y_query.reshape(-1)
        assert from_words(x.payload).tolist() == want.tolist()
    assert dict(zip(STATUS_FIELDS, resp[3].payload, strict=True))["runs"] == 2


MATCH_CFG = MatchConfig(n_way=3, k_shot=2, dim=10, lanes=2)


def _match_episode(seed):
    eps, _ = make_episodes(MATCH_CFG, 1, seed, "random", n_query=1)
    return episode_codes(MATCH_CFG, eps)[0]


def _match_want(ep):
    sup, lab = np.asarray(ep["support"]), np.asarray(ep["labels"])
    ro = mx.readout(np.asarray(ep["queries"]), mx.prepare(sup, lab, MATCH_CFG), MATCH_CFG)
    return [mx.result_words(p, c) for p, c in zip(ro.probs, ro.pred, strict=True)]


def test_match_board_top_answers_the_host_driver_bytes():
    """The similarity engine behind the UART bridge: a query before LOAD, two support sets, their queries."""
    eps = [_match_episode(1), _match_episode(2)]
    requests = [request_bytes(Opcode.RUN, match_run_payload(eps[0]["queries"][0], MATCH_CFG))]
    for ep in eps:
        requests.append(request_bytes(Opcode.LOAD, match_load_payload(ep["support"], ep["labels"])))
        requests += [request_bytes(Opcode.RUN, match_run_payload(q, MATCH_CFG)) for q in ep["queries"]]
    requests.append(request_bytes(Opcode.STATUS))
    resp = _board_bench(UartEngineTop(MatchEngine(config=MATCH_CFG), clock_hz=CLOCK_HZ, baud=BAUD), requests,
                        "test-board-match")
    n = MATCH_CFG.n_way
    assert [r.status for r in resp] == [Status.NOT_LOADED] + [Status.OK] * (2 * (n + 1) + 1)
    got = [list(from_words(r.payload)) for r in resp[1:-1] if r.payload]
    assert got == _match_want(eps[0]) + _match_want(eps[1])
    st = dict(zip(STATUS_FIELDS, resp[-1].payload, strict=True))
    assert st["runs"] == 2 * n and st["errors"] == 1 and st["loaded"] == 1


def test_match_board_top_with_a_preloaded_support_set():
    ep = _match_episode(3)
    preload = encode_request(Opcode.LOAD, match_load_payload(ep["support"], ep["labels"]))
    top = UartEngineTop(MatchEngine(config=MATCH_CFG), clock_hz=CLOCK_HZ, baud=BAUD, preload=preload)
    resp = _board_bench(top, [request_bytes(Opcode.RUN, match_run_payload(q, MATCH_CFG)) for q in ep["queries"]],
                        "test-board-match-preload")
    assert [list(from_words(r.payload)) for r in resp] == _match_want(ep)


def test_match_axi_stream_wrapper_with_cocotbext_axi():
    """The similarity engine's generated AXI-Stream wrapper, driven by the standard bus model."""
    from metafab.gen.wrappers import axis_wrapper

    ep = _match_episode(4)
    wrapper, text = axis_wrapper(engine="match", toplevel="match_engine", design=MATCH_CFG.name)
    verilog = to_verilog(MatchEngine(config=MATCH_CFG), "match_engine") + "\n" + text
    requests = [request_bytes(Opcode.LOAD, match_load_payload(ep["support"], ep["labels"]))]
    requests += [request_bytes(Opcode.RUN, match_run_payload(q, MATCH_CFG)) for q in ep["queries"]]
    sim = "icarus" if find_icarus().found else "verilator"
    r = run_bench(verilog=verilog, toplevel=wrapper, bench="metafab.sim.benches.axis",
                  params={"requests": [q.hex() for q in requests], "seed": 5}, sim=sim, run_name="test-axis-match")
    resp = [decode_bytes(bytes.fromhex(h)) for h in r.data["responses"]]
    assert [x.status for x in resp] == [Status.OK] * len(requests)
    assert [list(from_words(x.payload)) for x in resp[1:]] == _match_want(ep)
