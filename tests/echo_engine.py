"""A third engine that exists in the test suite only: it proves that an engine is its own files plus one
registry call (nothing in ``metafab.gen`` changes).

``echo`` answers a RUN request of ``words`` payload words with each word plus ``offset`` (mod 2**32);
any other request gets BAD_LENGTH or UNKNOWN_OPCODE as the protocol says. Its parts, as a real engine
has them: a config (frozen dataclass), the hardware (an Amaranth component on the two word streams),
a reference model (:func:`reference`), a cycle model, a workload, a cocotb bench
(``tests/echo_bench.py``) and the report rows.
"""


from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from metafab.gen.engines import DesignFlag, Engine, Exchange, Workload
from metafab.gen.engines.base import unknown_opcode_exchange
from metafab.hw.frontend import WORD_LAYOUT
from metafab.reference.config import _ConfigBase
from metafab.reference.errors import UserError
from metafab.reference.protocol import MAGIC, Opcode, Packet, Status

MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class EchoConfig(_ConfigBase):
    words: int = 4
    offset: int = 1

    def __post_init__(self):
        if not 1 <= self.words <= 64:
            raise UserError(f"words must be in 1..64, got {self.words}")
        if not 0 <= self.offset <= MASK:
            raise UserError(f"offset must be in 0..2**32-1, got {self.offset}")

    @property
    def name(self) -> str:
        return f"echo-w{self.words}-o{self.offset}"

    load_words = 0

    @property
    def run_words(self) -> int:
        return self.words

    @property
    def result_words(self) -> int:
        return self.words


def reference(words, cfg: EchoConfig) -> list[int]:
    """The answer to a RUN request: every payload word plus ``offset``, mod 2**32."""
    return [(int(w) + cfg.offset) & MASK for w in words]


class EchoCore(wiring.Component):
    """Answers each packet word by word as it arrives: the header with the status, then the payload."""

    i: In(stream.Signature(WORD_LAYOUT))
    o: Out(stream.Signature(WORD_LAYOUT))

    def __init__(self, cfg: EchoConfig):
        self.cfg = cfg
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        data, last = self.i.payload.data, self.i.payload.last
        length_ok = (data[0:16] == self.cfg.words) & ~last
        status = Mux(data[24:32] != MAGIC, Status.BAD_MAGIC,
                     Mux(data[16:24] != Opcode.RUN, Status.UNKNOWN_OPCODE,
                         Mux(length_ok, Status.OK, Status.BAD_LENGTH)))
        good = status == Status.OK
        with m.FSM():
            with m.State("header"):  # every header is answered: OK with a payload to follow, or an error
                m.d.comb += [
                    self.o.valid.eq(self.i.valid),
                    self.i.ready.eq(self.o.ready),
                    self.o.payload.data.eq((MAGIC << 24) | (status << 16) | Mux(good, self.cfg.words, 0)),
                    self.o.payload.last.eq(~good),
                ]
                with m.If(self.i.valid & self.o.ready & ~last):
                    with m.If(good):
                        m.next = "payload"
                    with m.Else():
                        m.next = "drop"
            with m.State("payload"):
                m.d.comb += [
                    self.o.valid.eq(self.i.valid),
                    self.i.ready.eq(self.o.ready),
                    self.o.payload.data.eq(data + self.cfg.offset),
                    self.o.payload.last.eq(last),
                ]
                with m.If(self.i.valid & self.o.ready & last):
                    m.next = "header"
            with m.State("drop"):  # the rest of a refused request
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & last):
                    m.next = "header"
        return m


class _Cycles:
    def to_dict(self) -> dict:
        return {"latency": 0, "note": "combinational: each response word in the cycle of its request word"}


class EchoEngine(Engine):
    name = "echo"
    summary = "test-only engine: answers each RUN word plus an offset"
    title = "echo engine"
    toplevel = "echo_engine"
    bench = "tests.echo_bench"
    config_class = EchoConfig
    design_flags = (DesignFlag("--words", "words", int, "N", "payload words of a RUN request"),
                    DesignFlag("--offset", "offset", int, "C", "added to every word"))
    item = "request"
    run_item = "request"
    count_flag = "--requests"
    count_default = 20
    chunk = 8

    def add_command_arguments(self, p, command):
        if command in ("sim", "verify"):
            p.add_argument("--requests", type=int, default=3 if command == "sim" else self.count_default,
                           help="RUN requests to send")

    def component(self, cfg):
        return EchoCore(cfg)

    def cycles(self, cfg):
        return _Cycles()

    def manifest_fields(self, cfg):
        return {"payloads": {"RUN": "words", "RUN response": "each word plus offset"}}

    def _requests(self, cfg, n, seed):
        rng = np.random.default_rng(seed)
        return [[int(w) for w in rng.integers(0, 2**32, cfg.words)] for _ in range(n)]

    def _run(self, cfg, requests, sim, seed, progress, verilog=None):
        from metafab.gen.flow import simulate

        params = {"config": cfg.to_dict(), "requests": requests, "seed": seed}
        return simulate(self, cfg, params, sim=sim, scenario="requests", verilog=verilog, progress=progress)

    def example_session(self, cfg, args, count):
        """``count`` RUNs of random words answered by :func:`reference`, an unknown opcode, and STATUS, which
        the echo engine does not have (UNKNOWN_OPCODE)."""
        session = [Exchange(f"RUN request {n}", Opcode.RUN, tuple(words),
                            Packet(Status.OK, tuple(reference(words, cfg))))
                   for n, words in enumerate(self._requests(cfg, count, args.seed))]
        session.append(unknown_opcode_exchange())
        session.append(Exchange("STATUS", Opcode.STATUS, (), Packet(Status.UNKNOWN_OPCODE, ())))
        return session, f"random words (seed {args.seed})"

    def simulate(self, cfg, args, progress):
        r = self._run(cfg, self._requests(cfg, args.requests, args.seed), args.sim, args.seed, progress)
        return {"engine": self.name, "design": cfg.name, "mismatches": r["mismatches"],
                "responses": r["responses"], "run_folder": r["test_dir"]}

    def format_sim(self, doc):
        return "\n".join(f"request {n}: {' '.join(f'{w:08x}' for w in ws)}" for n, ws in enumerate(doc["responses"]))

    def verify_workload(self, cfg, *, count, seed):
        return Workload(self._requests(cfg, count, seed), f"random words (seed {seed})")

    def verify_chunk(self, cfg, work, items, *, first, sim, seed, verilog, verilator_opt, progress):
        return self._run(cfg, items, sim, seed, progress, verilog)

    def verify_report(self, cfg, work, runs):
        return {"requests": len(work.items), "source": work.source}

    def preload(self, cfg, args):
        return [], "nothing (the echo engine keeps no state)"

    def item_cycles(self, cfg):
        return 1  # a response word leaves in the cycle its request word arrives: one cycle a word

    def build_figures(self, cfg, r, preload_source):
        return {"latency_us": 1 / r["clock_mhz"] if r.get("clock_mhz") else None}

    def build_rows(self, r):
        return [("latency", f"{r['latency_us']:.4f} us a word")] if r.get("latency_us") else []

    def verify_rows(self, r):
        return [("design", r["design"]), ("requests", str(r["requests"])), ("output words", str(r["output_words"])),
                ("mismatches", str(r["mismatches"]))]


ENGINE = EchoEngine()
