"""The few-shot pipeline on one chip: pixels in, class out.

:class:`FewShotEngine` = :class:`~metafab.hw.frontend.PacketFrontend` +
:class:`FewShotCore`; the core is the :class:`~metafab.hw.encoder.Encoder` in
front of the similarity engine's :class:`~metafab.hw.match_engine.MatchCore`
(the same read-out hardware as the ``match`` engine). It computes exactly
:func:`metafab.reference.encoder.fewshot_fixed`; data flow and cycles in
``docs/fewshot_engine.md``, packets in ``docs/protocol.md``.

* LOAD_ENCODER: the weight codes go straight into the encoder's lane banks.
  Its payload waits until every query before it has been answered
  (``OpSpec.waits``), and it clears the loaded flag (``OpSpec.unloads``): the
  support set is loaded again after a new encoder.
* LOAD: the labels and the support images go into the image memory as they
  arrive; then (once no query is in flight) each image is encoded and its
  embedding, behind its label, is handed to the read-out core as its own LOAD
  payload; the read-out's LOAD answer is the answer. Without an encoder:
  ``NOT_LOADED``.
* RUN (pipelined): the query image streams into one of two query slots of the
  image memory; the encoder takes the slots in order, as soon as the read-out
  can take a query, and streams the embedding into it as its RUN payload. The
  read-out's results (probabilities and class) are the answers.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from metafab.hw.encoder import Encoder, check_encoder
from metafab.hw.fixed import out_of_range, reject
from metafab.hw.frontend import CoreBusSignature, OpSpec, PacketEngine
from metafab.hw.match_engine import MatchCore
from metafab.reference.encoder import EncoderConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import fewshot_image_words
from metafab.reference.protocol import Opcode, Status

__all__ = ["fewshot_ops", "image_words", "FewShotCore", "FewShotEngine"]


def image_words(cfg: EncoderConfig) -> int:
    """Payload words of one image: its ``C H W`` codes, two per word (:mod:`metafab.reference.payloads`)."""
    return fewshot_image_words(cfg.spec.n_inputs)


def fewshot_ops(cfg: EncoderConfig) -> dict:
    """The opcodes of the few-shot engine and their packet lengths (``docs/protocol.md``)."""
    m = cfg.match
    return {
        Opcode.LOAD_ENCODER: OpSpec(req_len=cfg.spec.n_params, resp_len=0, unloads=True, waits=True),
        Opcode.LOAD: OpSpec(req_len=m.n_support * (1 + image_words(cfg)), resp_len=0, loads=True),
        Opcode.RUN: OpSpec(req_len=image_words(cfg), resp_len=m.result_words, needs_loaded=True, counts_run=True,
                           pipelined=True),
    }


class FewShotCore(wiring.Component):
    """The encoder and the read-out core behind one core bus (see the module docstring).

    Parameters
    ----------
    config : EncoderConfig
    """

    def __init__(self, *, config: EncoderConfig):
        if not isinstance(config, EncoderConfig):
            reject(self, TypeError(f"config must be an EncoderConfig, got {config!r}"))
        try:
            check_encoder(config)
            self._mc = MatchCore(config=config.match)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        self._cfg = config
        M = config.match.n_support
        self._enc = Encoder(config=config, slots=M + 2)
        super().__init__({"bus": In(CoreBusSignature.for_ops(fewshot_ops(config)))})

    @property
    def config(self) -> EncoderConfig:
        return self._cfg

    @property
    def encoder(self) -> Encoder:
        return self._enc

    @property
    def readout(self) -> MatchCore:
        return self._mc

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        mcfg = cfg.match
        M, D = mcfg.n_support, mcfg.dim
        wpi = image_words(cfg)
        pack = mcfg.query_pack
        m.submodules.encoder = enc = self._enc
        m.submodules.readout = mc = self._mc
        bus, mb = self.bus, mc.bus

        # ---------------- the front end's words, registered once ----------------
        wr_valid, wr_index, wr_data = Signal(), Signal(16), Signal(32)
        in_lde, in_ld, in_run = Signal(), Signal(), Signal()
        abort, start = Signal(), Signal()
        st_lde, st_ld, st_run = Signal(), Signal(), Signal()
        m.d.sync += [
            wr_valid.eq(bus.wr_valid), wr_index.eq(bus.wr_index), wr_data.eq(bus.wr_data),
            in_lde.eq(bus.wr_op == int(Opcode.LOAD_ENCODER)), in_ld.eq(bus.wr_op == int(Opcode.LOAD)),
            in_run.eq(bus.wr_op == int(Opcode.RUN)),
            abort.eq(bus.abort), start.eq(bus.start),
            st_lde.eq(bus.start_op == int(Opcode.LOAD_ENCODER)), st_ld.eq(bus.start_op == int(Opcode.LOAD)),
            st_run.eq(bus.start_op == int(Opcode.RUN)),
        ]

        # ---------------- LOAD_ENCODER: weight codes into the lane banks ----------------
        enc_valid = Signal()
        w_bad = Signal()
        lde_word = wr_valid & in_lde
        m.d.comb += [enc.w_valid.eq(lde_word), enc.w_first.eq(wr_index == 0), enc.w_code.eq(wr_data)]
        with m.If(lde_word):
            m.d.sync += w_bad.eq(Mux(wr_index == 0, 0, w_bad) | out_of_range(wr_data.as_signed(), cfg.weight_fmt))
            m.d.sync += enc_valid.eq(0)
        with m.If(abort & in_lde):
            m.d.sync += enc_valid.eq(0)

        # ---------------- LOAD / RUN payloads into the image memory ----------------
        labels = [Signal(32, name=f"label{s}") for s in range(M)]
        ld_pos = Signal(range(wpi + 1))
        ld_s = Signal(range(M + 1))
        ld_addr = Signal(range(max(2, (M + 2) * wpi)))
        qf = Signal()  # the query slot being filled
        full = [Signal(name=f"qfull{k}") for k in range(2)]
        ld_word = wr_valid & in_ld
        q_word = wr_valid & in_run
        with m.If(ld_word):
            first = wr_index == 0
            pos = Mux(first, 0, ld_pos)
            s = Mux(first, 0, ld_s)
            addr = Mux(first, 0, ld_addr)
            with m.If(pos == 0):
                with m.Switch(s):
                    for k in range(M):
                        with m.Case(k):
                            m.d.sync += labels[k].eq(wr_data)
                m.d.sync += [ld_pos.eq(1), ld_s.eq(s), ld_addr.eq(addr)]
            with m.Else():
                m.d.comb += [enc.img_we.eq(1), enc.img_waddr.eq(addr), enc.img_wdata.eq(wr_data)]
                m.d.sync += [ld_addr.eq(addr + 1), ld_pos.eq(Mux(pos == wpi, 0, pos + 1)),
                             ld_s.eq(Mux(pos == wpi, s + 1, s))]
        with m.Elif(q_word):
            m.d.comb += [enc.img_we.eq(1), enc.img_wdata.eq(wr_data),
                         enc.img_waddr.eq(Mux(qf, (M + 1) * wpi, M * wpi) + wr_index)]
        # the query slot being filled is free: the next RUN's payload may come
        m.d.comb += bus.accept.eq(~Mux(qf, full[1], full[0]))

        # ---------------- jobs: support encodings, query encodings ----------------
        qj = Signal()  # the query slot the next query job takes
        mc_out = Signal(8)  # queries handed to the read-out and not yet answered
        mc_inc = Signal()
        m.d.sync += mc_out.eq(mc_out + mc_inc - bus.presult_ack)
        with m.If(start & st_run):
            with m.Switch(qf):
                for k in range(2):
                    with m.Case(k):
                        m.d.sync += full[k].eq(1)
            m.d.sync += qf.eq(~qf)

        done = Signal()
        done_status = Signal(8)
        m.d.comb += [bus.done.eq(done), bus.done_status.eq(done_status)]
        job_s = Signal(range(M + 1))
        code_d = Signal(range(D + 1))  # codes of the current embedding handed on
        even = Signal(16)  # the held even code (pack 2)
        enc_cycles = Signal(32)
        enc_count = Signal(32)
        base = Signal(16)  # the read-out LOAD index of the current row's label
        with m.FSM(name="job"):
            with m.State("IDLE"):
                with m.If(start & st_lde):
                    m.next = "LDE_DONE"
                with m.Elif(start & st_ld):
                    with m.If(~enc_valid):
                        m.d.sync += [done.eq(1), done_status.eq(Status.NOT_LOADED)]
                    with m.Else():
                        m.next = "LD_WAIT"
                with m.Elif(Mux(qj, full[1], full[0]) & mb.accept & ~enc.busy):
                    m.d.comb += [enc.start.eq(1), enc.slot.eq(Mux(qj, M + 1, M))]
                    m.d.sync += [code_d.eq(0), enc_count.eq(1)]
                    m.next = "Q_ENC"
            with m.State("LDE_DONE"):
                m.d.sync += [done.eq(1), done_status.eq(Mux(w_bad, Status.BAD_VALUE, Status.OK)), enc_valid.eq(~w_bad)]
                m.next = "IDLE"
            with m.State("LD_WAIT"):  # no query in flight: the read-out can take a LOAD
                with m.If((mc_out == 0) & ~enc.busy & ~full[0] & ~full[1]):
                    m.d.sync += [job_s.eq(0), base.eq(0)]
                    m.next = "LD_LABEL"
            with m.State("LD_LABEL"):  # the row's label, then its encoding
                with m.Switch(job_s):
                    for k in range(M):
                        with m.Case(k):
                            m.d.comb += [mb.wr_data.eq(labels[k]), enc.slot.eq(k)]
                m.d.comb += [mb.wr_valid.eq(1), mb.wr_op.eq(Opcode.LOAD), mb.wr_index.eq(base), enc.start.eq(1)]
                m.d.sync += [code_d.eq(0), base.eq(base + 1)]
                m.next = "LD_ENC"
            with m.State("LD_ENC"):
                with m.If(enc.o_valid):
                    m.d.comb += [mb.wr_valid.eq(1), mb.wr_op.eq(Opcode.LOAD), mb.wr_index.eq(base),
                                 mb.wr_data.eq(enc.o_code.as_signed())]
                    m.d.sync += base.eq(base + 1)
                with m.If(~enc.busy & ~enc.start):
                    with m.If(job_s == M - 1):
                        m.next = "LD_START"
                    with m.Else():
                        m.d.sync += job_s.eq(job_s + 1)
                        m.next = "LD_LABEL"
            with m.State("LD_START"):
                m.d.comb += [mb.start.eq(1), mb.start_op.eq(Opcode.LOAD)]
                m.next = "LD_FINISH"
            with m.State("LD_FINISH"):
                with m.If(mb.done):
                    m.d.sync += [done.eq(1), done_status.eq(mb.done_status)]
                    m.next = "IDLE"
            with m.State("Q_ENC"):
                m.d.sync += enc_count.eq(enc_count + 1)
                with m.If(enc.o_valid):
                    m.d.sync += code_d.eq(code_d + 1)
                    if pack == 2:  # code 2w in bits 15..0 of word w, code 2w + 1 in bits 31..16
                        with m.If(code_d[0]):
                            m.d.comb += [mb.wr_valid.eq(1), mb.wr_op.eq(Opcode.RUN), mb.wr_index.eq(code_d >> 1),
                                         mb.wr_data.eq(Cat(even, enc.o_code))]
                        with m.Elif(enc.o_last):  # an odd D: the last word holds one code
                            m.d.comb += [mb.wr_valid.eq(1), mb.wr_op.eq(Opcode.RUN), mb.wr_index.eq(code_d >> 1),
                                         mb.wr_data.eq(Cat(enc.o_code, Signal(16)))]
                        with m.Else():
                            m.d.sync += even.eq(enc.o_code)
                    else:
                        m.d.comb += [mb.wr_valid.eq(1), mb.wr_op.eq(Opcode.RUN), mb.wr_index.eq(code_d),
                                     mb.wr_data.eq(enc.o_code.as_signed())]
                    with m.If(enc.o_last):
                        m.next = "Q_START"
            with m.State("Q_START"):
                m.d.comb += [mb.start.eq(1), mb.start_op.eq(Opcode.RUN), mc_inc.eq(1)]
                m.d.sync += [enc_cycles.eq(enc_count), qj.eq(~qj)]
                with m.Switch(qj):
                    for k in range(2):
                        with m.Case(k):
                            m.d.sync += full[k].eq(0)
                m.next = "IDLE"
        with m.If(done):
            m.d.sync += done.eq(0)

        # ---------------- answers: the read-out's results ----------------
        m.d.comb += [
            bus.presult_valid.eq(mb.presult_valid),
            bus.presult_status.eq(mb.presult_status),
            mb.presult_ack.eq(bus.presult_ack),
            mb.rd_index.eq(bus.rd_index),
            bus.rd_data.eq(mb.rd_data),
            bus.last_cycles.eq(Mux(mb.last_cycles == 0, 0, mb.last_cycles + enc_cycles)),
        ]
        return m


class FewShotEngine(PacketEngine):
    """The few-shot pipeline behind the packet protocol: ports ``i`` and ``o`` (32-bit words + last).

    Parameters
    ----------
    config : EncoderConfig
    """

    def __init__(self, *, config: EncoderConfig):
        if not isinstance(config, EncoderConfig):
            reject(self, TypeError(f"config must be an EncoderConfig, got {config!r}"))
        self._cfg = config
        try:
            core = FewShotCore(config=config)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        super().__init__(core=core, ops=fewshot_ops(config), out_register=True)

    @property
    def config(self) -> EncoderConfig:
        return self._cfg
