"""The similarity engine: Matching / Prototypical Networks read-out in hardware.

:class:`MatchEngine` = :class:`~metafab.hw.frontend.PacketFrontend` +
:class:`MatchCore`. The core computes exactly
:mod:`metafab.reference.match_fixed` for its :class:`MatchConfig`;
architecture and schedule in ``docs/match_engine.md``, the cycle of every
step in :mod:`metafab.hw.match_schedule`.

* LOAD: :class:`~metafab.hw.match_support.SupportBuilder` checks the support
  set and writes the unit rows (matching) or the prototypes and their squared
  norms (proto) into ``P`` lane banks (element ``d`` of vector ``v`` in bank
  ``d % P`` at ``v*C + d//P``), the labels into the label memory.
* RUN (pipelined): the query streams into one half of a double-buffered
  query memory (banked like the vectors) while a squarer sums ``|q|^2``; the
  dot-product engine then reads all ``P`` banks at one address per cycle,
  ``V*C`` cycles per query; ``P`` products, an adder tree and an accumulator
  give one exact dot product per vector. The read-out tail (cosine scaling or
  ``2 q.p - |p|^2``, exp table, class sums, reciprocal, probabilities, argmax)
  is a fixed pipeline behind it. Two queries can be in the engine at once,
  and the next one streams in while they compute.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from metafab.hw.fixed import (
    delayed,
    out_of_range,
    registered_product,
    reject,
    replicated_register,
    round_shift,
    saturate,
    shape_of,
)
from metafab.hw.frontend import CoreBusSignature, CoreParts, OpSpec, PacketEngine
from metafab.hw.match_schedule import (
    INPUT_DELAY,
    LOGIT_LATENCY,
    SQUARE_LATENCY,
    TREE_LEVELS_PER_STAGE,
    timing,
)
from metafab.hw.match_support import SupportBuilder, support_widths
from metafab.hw.match_units import Argmax, ExpTable, RecipUnit, ScaleRound
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.protocol import WORD_BITS, Opcode, Status

__all__ = ["MatchCore", "MatchEngine", "match_ops"]


def match_ops(cfg: MatchConfig) -> dict:
    """The opcodes of the similarity engine and their packet lengths (see ``docs/protocol.md``)."""
    return {
        Opcode.LOAD: OpSpec(req_len=cfg.load_words, resp_len=0, loads=True),
        Opcode.RUN: OpSpec(req_len=cfg.query_words, resp_len=cfg.result_words, needs_loaded=True,
                           counts_run=True, pipelined=True),
    }


#: Lane banks that share one copy of the read-address register.
BANK_GROUP = 4


def _replicated_fields(m: Module, platform, fields, copies: int, name: str) -> list[list[Value]]:
    """``copies`` register copies of the values ``fields`` (one replicated register of their
    concatenation); per copy, its slices in the order of ``fields``."""
    regs = replicated_register(m, platform, Cat(*fields), copies, name=name)
    out = []
    for reg in regs:
        parts, at = [], 0
        for f in fields:
            w = len(Value.cast(f))
            parts.append(reg[at:at + w])
            at += w
        out.append(parts)
    return out


def _next(ptr, count: int):
    """``ptr + 1`` modulo ``count``."""
    return Mux(ptr == count - 1, 0, ptr + 1)


def _mux_list(m: Module, index, values, shape, name: str) -> Signal:
    """``values[index]`` as a Signal (a case statement: one multiplexer)."""
    out = Signal(shape, name=name)
    with m.Switch(index):
        for i, v in enumerate(values):
            with m.Case(i):
                m.d.comb += out.eq(v)
    return out


class MatchCore(wiring.Component):
    """The compute core: support builder, lane banks, query buffer, dot-product engine, read-out tail.

    Its interface is the core bus with the pipelined-request members
    (``bus``: ``In(CoreBusSignature(pipelined=True))``, see :mod:`metafab.hw.frontend`).

    Parameters
    ----------
    config : MatchConfig
    """

    def __init__(self, *, config: MatchConfig):
        if not isinstance(config, MatchConfig):
            reject(self, TypeError(f"config must be a MatchConfig, got {config!r}"))
        if config.lanes > config.dim:
            # (the lane banks and the dot product's adder tree assume every lane holds an element)
            reject(self, UserError(f"lanes {config.lanes} exceed dim {config.dim}: the similarity engine's lanes "
                                   f"hold one embedding element each; use lanes <= {config.dim}"))
        self._cfg = config
        self._tm = timing(config)
        super().__init__({"bus": In(CoreBusSignature.for_ops(match_ops(config)))})

    @property
    def config(self) -> MatchConfig:
        return self._cfg

    @property
    def timing(self):
        return self._tm

    def elaborate(self, platform):
        """The core, part by part in the order of the data path (see the module docstring)."""
        dp = CoreParts(m=Module(), platform=platform)
        self._plan(dp)
        self._inputs(dp)
        self._support(dp)
        self._query_buffer(dp)
        if dp.matching:
            self._query_norm(dp)
        self._begin(dp)
        self._dot_product(dp)
        self._logit_setup(dp)
        if dp.matching:
            self._logits_matching(dp)
        else:
            self._logits_proto(dp)
        self._finaliser(dp)
        self._results(dp)
        return dp.m

    def _plan(self, dp: CoreParts):
        """Dimensions, formats and timing shared by every part; the free-running cycle counter."""
        m = dp.m
        cfg, tm = self._cfg, self._tm
        matching = cfg.mode == "matching"
        N, M, D, P = cfg.n_way, cfg.n_support, cfg.dim, cfg.lanes
        C, V = cfg.chunks, cfg.n_vectors
        LP = P.bit_length() - 1
        H = cfg.mant_bits
        ef, sf, lf = cfg.emb_fmt, cfg.store_fmt, cfg.logit_fmt
        widths = support_widths(cfg)
        II = tm.ii_core
        QS, RS = tm.query_slots, tm.result_slots

        # free-running, for the latency counter: the cycle count plus one, kept as its own register
        # (an increment in front of the latency's subtraction was a critical path)
        cycle1 = Signal(32, init=1)
        m.d.sync += cycle1.eq(cycle1 + 1)

        dp.add(C=C, D=D, H=H, II=II, LP=LP, M=M, N=N, P=P, QS=QS, RS=RS, V=V, cfg=cfg, cycle1=cycle1, ef=ef)
        dp.add(lf=lf, matching=matching, sf=sf, tm=tm, widths=widths)

    def _inputs(self, dp: CoreParts):
        """The front end's words and pulses, registered once and decoded by opcode."""
        m = dp.m
        # (they fan out to every bank's write enable; INPUT_DELAY in the schedule)
        # (wr_first: the word is its payload's first, compared here so that no index compare sits
        # in front of the support builder's class counters)
        wr_index, wr_data, wr_first = Signal(16), Signal(32), Signal()
        m.d.sync += [wr_index.eq(self.bus.wr_index), wr_first.eq(self.bus.wr_index == 0),
                     wr_data.eq(self.bus.wr_data)]
        # the pulses decoded by opcode before their register (no opcode compare in front of the
        # support builder's and the query buffer's logic)
        in_load, in_run = self.bus.wr_op == int(Opcode.LOAD), self.bus.wr_op == int(Opcode.RUN)
        ld_word, ld_abort, ld_start = Signal(), Signal(), Signal()
        q_word, run_abort, run_start = Signal(), Signal(), Signal()
        m.d.sync += [
            ld_word.eq(self.bus.wr_valid & in_load), ld_abort.eq(self.bus.abort & in_load),
            ld_start.eq(self.bus.start & (self.bus.start_op == int(Opcode.LOAD))),
            q_word.eq(self.bus.wr_valid & in_run), run_abort.eq(self.bus.abort & in_run),
            run_start.eq(self.bus.start & (self.bus.start_op == int(Opcode.RUN))),
        ]
        assert INPUT_DELAY == 1

        dp.add(ld_abort=ld_abort, ld_start=ld_start, ld_word=ld_word, q_word=q_word, run_abort=run_abort)
        dp.add(run_start=run_start, wr_data=wr_data, wr_first=wr_first, wr_index=wr_index)

    def _support(self, dp: CoreParts):
        """LOAD: the support builder, the lane banks and the label (matching) or norm (proto) memory."""
        C, M, N, P, V, cfg, ld_abort, ld_start = dp.C, dp.M, dp.N, dp.P, dp.V, dp.cfg, dp.ld_abort, dp.ld_start
        ld_word, m, matching, platform, sf = dp.ld_word, dp.m, dp.matching, dp.platform, dp.sf
        widths, wr_data, wr_first = dp.widths, dp.wr_data, dp.wr_first
        m.submodules.builder = bld = SupportBuilder(config=cfg)
        m.d.comb += [
            bld.load_valid.eq(ld_word),
            bld.load_first.eq(wr_first),
            bld.load_data.eq(wr_data),
            bld.abort.eq(ld_abort),
            bld.start.eq(ld_start),
            self.bus.done.eq(bld.done),
            self.bus.done_status.eq(bld.status),
        ]

        # lane banks: element d of vector v in bank d % P at address v*C + d//P
        depth = V * C
        AW = max(1, (depth - 1).bit_length())
        # the builder's writes reach the banks one cycle later, through one register copy per
        # BANK_GROUP banks (no single net to all P banks); the first RUN reads them much later
        groups = -(-P // BANK_GROUP)
        bw_copies = _replicated_fields(m, platform, [bld.bw_valid, bld.bw_lane, bld.bw_addr, bld.bw_data],
                                       groups, "bank_write")
        lane_rd = []
        for lane in range(P):
            mem = Memory(shape=shape_of(sf), depth=depth, init=[0] * depth)
            m.submodules[f"bank{lane}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            c_valid, c_lane, c_addr, c_data = bw_copies[lane // BANK_GROUP]
            m.d.comb += [wp.addr.eq(c_addr), wp.data.eq(c_data), wp.en.eq(c_valid & (c_lane == lane))]
            lane_rd.append(rp)

        label_rd = norm_rd = None  # the read port of the labels (matching) or of the norms (proto)
        if matching:
            labels = Memory(shape=range(max(2, N)), depth=M, init=[0] * M)
            m.submodules.labels = labels
            lwp = labels.write_port()
            m.d.comb += [lwp.addr.eq(bld.lw_addr), lwp.data.eq(bld.lw_data), lwp.en.eq(bld.lw_valid)]
            label_rd = labels.read_port()
        else:
            norms = Memory(shape=unsigned(widths["norm"]), depth=N, init=[0] * N)
            m.submodules.norms = norms
            nwp = norms.write_port()
            m.d.comb += [nwp.addr.eq(bld.nw_addr), nwp.data.eq(bld.nw_data), nwp.en.eq(bld.nw_valid)]
            norm_rd = norms.read_port()

        dp.add(AW=AW, depth=depth, groups=groups, label_rd=label_rd, lane_rd=lane_rd, norm_rd=norm_rd)

    def _query_buffer(self, dp: CoreParts):
        """RUN: the query streams into a free slot of the query buffer; the slot flags and accept."""
        C, D, LP, P, QS, cfg, ef, groups, m = dp.C, dp.D, dp.LP, dp.P, dp.QS, dp.cfg, dp.ef, dp.groups, dp.m
        platform, q_word, run_abort, run_start, tm = dp.platform, dp.q_word, dp.run_abort, dp.run_start, dp.tm
        wr_data, wr_first, wr_index = dp.wr_data, dp.wr_first, dp.wr_index
        half_w = Signal(range(QS))  # the slot being filled
        q_full = [Signal(name=f"q_full{h}") for h in range(QS)]
        # their next values as signals, so that the front end's accept can be a register
        q_full_n = [Signal(name=f"q_full_n{h}") for h in range(QS)]
        m.d.comb += [q_full_n[h].eq(q_full[h]) for h in range(QS)]
        m.d.sync += [q_full[h].eq(q_full_n[h]) for h in range(QS)]
        q_bad = [Signal(name=f"q_bad{h}") for h in range(QS)]
        q_wait = [Signal(range(tm.begin_delay + 1), name=f"q_wait{h}") for h in range(QS)]
        fill_bad = Signal()
        # a RUN word carries QP query elements (cfg.query_pack), element h in bits
        # [h*FW, (h+1)*FW) as a two's-complement field: elements QP*w .. QP*w + QP - 1
        QP, LQP = cfg.query_pack, cfg.query_pack.bit_length() - 1
        FW = WORD_BITS // QP
        first_el = Signal(16 + LQP)  # index of the word's element 0
        m.d.comb += first_el.eq(wr_index << LQP)
        el = [wr_data[h * FW:(h + 1) * FW].as_signed() for h in range(QP)]
        el_in = [first_el + h < D for h in range(QP)]  # the last word of an odd D has a pad field
        out_of = Cat(*[el_in[h] & out_of_range(el[h], ef) for h in range(QP)]).any()
        with m.If(run_abort):
            m.d.sync += fill_bad.eq(0)
        with m.Elif(q_word):
            m.d.sync += fill_bad.eq(Mux(wr_first, 0, fill_bad) | out_of)
        # accept (the slot being filled is free) as a register, computed from the next values of
        # the slot pointer and the slot flags: the same value in every cycle as the multiplexer on the
        # current ones, without the core's logic in front of the front end's payload handshake
        accept = Signal(init=1)
        half_w_n = Signal.like(half_w)
        m.d.comb += half_w_n.eq(Mux(run_start, _next(half_w, QS), half_w))
        m.d.sync += [half_w.eq(half_w_n), accept.eq(_mux_list(m, half_w_n, q_full_n, 1, "fill_full") == 0)]
        m.d.comb += self.bus.accept.eq(accept)

        # element d goes to lane d % P, chunk d // P; QP divides P, so lane L takes field L % QP
        q_base = first_el[:LP] if LP else Const(0, 1)  # lane of the word's element 0
        q_chunk = first_el >> LP
        # the writes reach the query banks a cycle later through one register copy per BANK_GROUP
        # banks (as the support writes do); the query's first read comes at least two cycles later
        QAW = max(1, (QS * C - 1).bit_length())
        qw_copies = _replicated_fields(m, platform, [q_word, q_base, Cat(*el_in), (half_w * C + q_chunk)[:QAW],
                                                     wr_data], groups, "qbank_write")
        q_rd = []
        for lane in range(P):
            h = lane % QP
            c_word, c_base, c_in, c_addr, c_data = qw_copies[lane // BANK_GROUP]
            mem = Memory(shape=shape_of(ef), depth=QS * C, init=[0] * (QS * C))
            m.submodules[f"qbank{lane}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(c_addr), wp.data.eq(c_data[h * FW:h * FW + ef.width]),
                         wp.en.eq(c_word & (c_base == lane - h) & c_in[h])]
            q_rd.append(rp)

        # begin = start + begin_delay: the start pulse came INPUT_DELAY late, and the decision
        # takes two cycles (this register, the decision register)
        wait = tm.begin_delay - INPUT_DELAY - 2
        # q_rdy[h] = q_full[h] & (q_wait[h] == 0), as a register computed from the next values
        # (no wait-counter compare in front of the begin decision)
        q_rdy = [Signal(name=f"q_rdy{h}") for h in range(QS)]
        for h in range(QS):
            zero_next = Mux(run_start & (half_w == h), int(wait == 0), q_wait[h] <= 1)
            m.d.sync += q_rdy[h].eq(q_full_n[h] & zero_next)
        for h in range(QS):
            with m.If(run_start & (half_w == h)):
                m.d.comb += q_full_n[h].eq(1)
                m.d.sync += [q_bad[h].eq(fill_bad), q_wait[h].eq(wait)]
            with m.Elif(q_wait[h] != 0):
                m.d.sync += q_wait[h].eq(q_wait[h] - 1)

        dp.add(QAW=QAW, QP=QP, el=el, el_in=el_in, half_w=half_w, q_bad=q_bad, q_full_n=q_full_n, q_rd=q_rd)
        dp.add(q_rdy=q_rdy)

    def _query_norm(self, dp: CoreParts):
        """Matching: |q|^2 (exact) and 1/|q| as (y, k), ready before the query's first dot product."""
        H, QP, QS, cfg, ef, el, el_in, half_w = dp.H, dp.QP, dp.QS, dp.cfg, dp.ef, dp.el, dp.el_in, dp.half_w
        m, q_word, tm, widths, wr_first, wr_index = dp.m, dp.q_word, dp.tm, dp.widths, dp.wr_first, dp.wr_index
        # |q|^2 (exact) and 1/|q| as (y, k), ready before the query's first dot product
        vals = [Signal(shape_of(ef), name=f"qsq_in{h}") for h in range(QP)]
        in_v, in_first, in_last = Signal(), Signal(), Signal()
        in_half = Signal.like(half_w)
        m.d.sync += [vals[h].eq(Mux(el_in[h], el[h][: ef.width], 0)) for h in range(QP)]
        m.d.sync += [in_v.eq(q_word), in_first.eq(wr_first),
                     in_last.eq(wr_index == cfg.query_words - 1), in_half.eq(half_w)]
        qsq = [Signal(unsigned(2 * ef.width), name=f"qsq{h}") for h in range(QP)]
        qs_v, qs_first, qs_last = Signal(), Signal(), Signal()
        qs_half = Signal.like(half_w)
        m.d.sync += [qsq[h].eq(vals[h] * vals[h]) for h in range(QP)]
        m.d.sync += [qs_v.eq(in_v), qs_first.eq(in_first), qs_last.eq(in_last), qs_half.eq(in_half)]
        qn = Signal(unsigned(widths["norm"]))
        qn_last = Signal()
        qn_half = Signal.like(half_w)
        m.d.sync += [qn_last.eq(qs_v & qs_last), qn_half.eq(qs_half)]
        with m.If(qs_v):
            m.d.sync += qn.eq(sum(qsq, Mux(qs_first, 0, qn)))
        assert SQUARE_LATENCY == 3  # word, product, sum
        qrs = RecipUnit(config=cfg, kind="rsqrt", in_width=widths["norm"], tag_width=len(half_w))
        m.submodules.qrsqrt = qrs
        assert qrs.LATENCY == tm.rsqrt_latency
        m.d.comb += [qrs.i.valid.eq(qn_last), qrs.i.payload.x.eq(qn), qrs.i.payload.tag.eq(qn_half)]
        KW = len(qrs.o.payload.exp)
        yq = [Signal(unsigned(H + 1), name=f"yq{h}") for h in range(QS)]
        kq = [Signal(KW, name=f"kq{h}") for h in range(QS)]
        for h in range(QS):
            with m.If(qrs.o.valid & (qrs.o.payload.tag == h)):
                m.d.sync += [yq[h].eq(qrs.o.payload.y), kq[h].eq(qrs.o.payload.exp)]

        dp.add(KW=KW, kq=kq, yq=yq)

    def _begin(self, dp: CoreParts):
        """Begin: the dot-product engine takes the next query (issue counters, result slots)."""
        C, II, QS, RS, V, cycle1, depth, m = dp.C, dp.II, dp.QS, dp.RS, dp.V, dp.cycle1, dp.depth, dp.m
        q_bad, q_full_n, q_rdy = dp.q_bad, dp.q_full_n, dp.q_rdy
        half_r = Signal(range(QS))  # the query slot to issue next
        entry_b = Signal(range(RS))  # the result slot of the next query
        inflight = Signal(range(RS + 1))
        since = Signal(range(II + 1), init=II)
        issuing = Signal()
        icount = Signal(range(depth + 1))
        c = Signal(range(C + 1))
        v = Signal(range(V + 1))
        cur_half, cur_bad, cur_entry = Signal.like(half_r), Signal(), Signal.like(entry_b)
        begin_time = [Signal(32, name=f"begin_time{e}") for e in range(RS)]
        ack = self.bus.presult_ack

        ready_q = _mux_list(m, half_r, q_rdy, 1, "next_ready")
        # since >= II - 1 and inflight < RS as registers of their own, their next values selected by
        # the late decision and acknowledgement from flags of the current counts
        since_ok, inflight_ok = Signal(init=1), Signal(init=1)
        decide = Signal()
        m.d.comb += decide.eq(ready_q & since_ok & inflight_ok)
        m.d.sync += inflight.eq(inflight + decide - ack)
        m.d.sync += [
            since_ok.eq(Mux(decide, int(II <= 1), (since >= II - 2) if II >= 2 else 1)),
            inflight_ok.eq(Mux(decide & ~ack, inflight < RS - 1, Mux(ack & ~decide, 1, inflight < RS))),
        ]
        last_issue = icount == depth - 1
        # the next values of the read counters (the banks' address registers copy them)
        icount_n, c_n, cur_half_n = Signal.like(icount), Signal.like(c), Signal.like(cur_half)
        m.d.comb += [icount_n.eq(icount), c_n.eq(c), cur_half_n.eq(cur_half)]
        m.d.sync += [icount.eq(icount_n), c.eq(c_n), cur_half.eq(cur_half_n)]
        with m.If(issuing):
            m.d.comb += icount_n.eq(icount + 1)
            with m.If(c == C - 1):
                m.d.comb += c_n.eq(0)
                m.d.sync += v.eq(v + 1)
            with m.Else():
                m.d.comb += c_n.eq(c + 1)
            with m.If(last_issue):
                m.d.sync += issuing.eq(0)
                for h in range(QS):
                    with m.If(cur_half == h):
                        m.d.comb += q_full_n[h].eq(0)
        # (after the issue block: a decision in the last issue cycle of a query wins, back to back)
        with m.If(decide):
            m.d.comb += [icount_n.eq(0), c_n.eq(0), cur_half_n.eq(half_r)]
            m.d.sync += [
                since.eq(0), issuing.eq(1), v.eq(0),
                cur_bad.eq(_mux_list(m, half_r, q_bad, 1, "next_bad")),
                cur_entry.eq(entry_b), half_r.eq(_next(half_r, QS)), entry_b.eq(_next(entry_b, RS)),
            ]
            for e in range(RS):
                with m.If(entry_b == e):
                    m.d.sync += begin_time[e].eq(cycle1)
        with m.Elif(since < II):
            m.d.sync += since.eq(since + 1)

        dp.add(ack=ack, begin_time=begin_time, c=c, c_n=c_n, cur_bad=cur_bad, cur_entry=cur_entry)
        dp.add(cur_half=cur_half, cur_half_n=cur_half_n, entry_b=entry_b, half_r=half_r, icount_n=icount_n)
        dp.add(issuing=issuing, v=v)

    def _dot_product(self, dp: CoreParts):
        """Stage 0: every lane read at one address; products, adder tree and the accumulator over chunks."""
        AW, C, D, P, QAW, V, c, c_n, cur_bad = dp.AW, dp.C, dp.D, dp.P, dp.QAW, dp.V, dp.c, dp.c_n, dp.cur_bad
        cur_entry, cur_half, cur_half_n, ef = dp.cur_entry, dp.cur_half, dp.cur_half_n, dp.ef
        entry_b, groups, half_r, icount_n, issuing = dp.entry_b, dp.groups, dp.half_r, dp.icount_n, dp.issuing
        lane_rd, m, platform, q_rd, sf, tm, v = dp.lane_rd, dp.m, dp.platform, dp.q_rd, dp.sf, dp.tm, dp.v
        # (the address reaches every bank: a copy of its register per BANK_GROUP banks, so that
        # no single register drives all P banks across the chip)
        lane_addr = replicated_register(m, platform, icount_n[:AW], groups, name="bank_addr")
        q_addr = replicated_register(m, platform, (cur_half_n * C + c_n)[:QAW], groups, name="qbank_addr")
        for lane, rp in enumerate(lane_rd):
            m.d.comb += [rp.addr.eq(lane_addr[lane // BANK_GROUP]), rp.en.eq(1)]
        for lane, rp in enumerate(q_rd):
            m.d.comb += [rp.addr.eq(q_addr[lane // BANK_GROUP]), rp.en.eq(1)]
        VW = max(1, (V - 1).bit_length())
        EW, HW = len(entry_b), len(half_r)
        tag0 = Cat(issuing, v[:VW], c == 0, c == C - 1, v == 0, v == V - 1, cur_bad, cur_entry, cur_half)
        TAG = {"valid": (0, 1), "v": (1, VW), "first_c": (1 + VW, 1), "last_c": (2 + VW, 1),
               "first_v": (3 + VW, 1), "last_v": (4 + VW, 1), "bad": (5 + VW, 1), "entry": (6 + VW, EW),
               "half": (6 + VW + EW, HW)}

        def field(tag, name):
            lo, w = TAG[name]
            return tag[lo: lo + w]

        # ---------------- stage 1: operands, stage 2: products (each DSP between registers) ----------------
        pw = ef.width + sf.width
        prods = []
        for lane in range(P):
            p = registered_product(m, platform, lane_rd[lane].data, q_rd[lane].data, name=f"prod{lane}")
            assert p.shape() == signed(pw)
            prods.append(p)
        tag = delayed(m, tag0, 3, "tag_mul")

        # ---------------- adder tree, TREE_LEVELS_PER_STAGE levels per register stage ----------------
        level, width, depth_t = prods, pw, 0
        stages = 0
        while len(level) > 1:
            width += 1
            depth_t += 1
            regd = depth_t % TREE_LEVELS_PER_STAGE == 0 or len(level) == 2
            nxt = []
            for i in range(0, len(level), 2):
                s = Signal(signed(width), name=f"tree{depth_t}_{i // 2}", reset_less=True)  # data only
                if regd:
                    m.d.sync += s.eq(level[i] + level[i + 1])
                else:
                    m.d.comb += s.eq(level[i] + level[i + 1])
                nxt.append(s)
            level = nxt
            if regd:
                stages += 1
                tag = delayed(m, tag, 1, f"tag_tree{stages}")
        assert stages == tm.tree_stages
        tree_out = level[0]

        # ---------------- accumulator over the C chunks of a vector ----------------
        dw = pw + D.bit_length()
        dot = Signal(signed(dw))
        with m.If(field(tag, "valid")):
            m.d.sync += dot.eq(Mux(field(tag, "first_c"), 0, dot) + tree_out)
        acc_tag = tag  # the tag entering the accumulator (one cycle before the dot product is ready)
        x_tag = delayed(m, tag, 1, "tag_dot")
        x_valid = field(x_tag, "valid") & field(x_tag, "last_c")
        assert 1 + 1 + 1 + stages + 1 == tm.dot_latency

        dp.add(EW=EW, VW=VW, acc_tag=acc_tag, dot=dot, dw=dw, field=field, x_tag=x_tag, x_valid=x_valid)

    def _logit_setup(self, dp: CoreParts):
        """The exp table and the class sums it feeds; the tag of the logit path."""
        EW, N, VW, cfg, field, lf, m = dp.EW, dp.N, dp.VW, dp.cfg, dp.field, dp.lf, dp.m
        exp_tag_w = VW + 3 + EW  # v, first_v, last_v, bad, entry
        ex = ExpTable(config=cfg, tag_width=exp_tag_w)
        m.submodules.exp = ex
        one = 1 << lf.frac_bits
        S = [Signal(unsigned(cfg.sum_fmt.width), name=f"csum{n}") for n in range(N)]
        T = Signal(unsigned(cfg.sum_fmt.width), name="total")
        fin_go = Signal()  # the class sums and the total are final (F0)
        fin_entry, fin_bad = Signal(EW), Signal()

        def pack(t):
            return Cat(*(field(t, n) for n in ("v", "first_v", "last_v", "bad", "entry")))

        def unpack(t, name):
            lo, w = {"v": (0, VW), "first_v": (VW, 1), "last_v": (VW + 1, 1), "bad": (VW + 2, 1),
                     "entry": (VW + 3, EW)}[name]
            return t[lo: lo + w]

        dp.add(S=S, T=T, ex=ex, exp_tag_w=exp_tag_w, fin_bad=fin_bad, fin_entry=fin_entry, fin_go=fin_go)
        dp.add(one=one, pack=pack, unpack=unpack)

    def _logits_matching(self, dp: CoreParts):
        """Matching: cosine logits (dot * y * 2**-k), exp, and the class sums by label."""
        H, KW, N, S, T, cfg, dot, dw, ex = dp.H, dp.KW, dp.N, dp.S, dp.T, dp.cfg, dp.dot, dp.dw, dp.ex
        exp_tag_w, field, fin_bad, fin_entry = dp.exp_tag_w, dp.field, dp.fin_bad, dp.fin_entry
        fin_go, kq, label_rd, lf, m, one, pack = dp.fin_go, dp.kq, dp.label_rd, dp.lf, dp.m, dp.one, dp.pack
        sf, unpack, x_tag, x_valid, yq = dp.sf, dp.unpack, dp.x_tag, dp.x_valid, dp.yq
        cos = ScaleRound(a_shape=signed(dw), b_shape=unsigned(H + 1),
                         shift_width=(sf.frac_bits + H - lf.frac_bits + (1 << KW) - 1).bit_length(),
                         out_fmt=lf, rounding=cfg.logit_rounding, tag_width=exp_tag_w)
        m.submodules.cosine = cos
        h = field(x_tag, "half")
        m.d.comb += [
            cos.i.valid.eq(x_valid),
            cos.i.payload.a.eq(dot),
            cos.i.payload.b.eq(_mux_list(m, h, yq, unsigned(H + 1), "yq_cur")),
            cos.i.payload.shift.eq(sf.frac_bits + H - lf.frac_bits + _mux_list(m, h, kq, KW, "kq_cur")),
            cos.i.payload.tag.eq(pack(x_tag)),
            ex.i.valid.eq(cos.o.valid),
            ex.i.payload.z.eq(cos.o.payload.value - one),
            ex.i.payload.tag.eq(cos.o.payload.tag),
        ]
        # label of the vector, read one cycle before its exp comes out
        assert ex.LATENCY >= 2
        lt = delayed(m, cos.o.payload.tag, ex.LATENCY - 1, "tag_label")
        m.d.comb += [label_rd.addr.eq(unpack(lt, "v")), label_rd.en.eq(1)]
        et = ex.o.payload.tag
        e = ex.o.payload.e
        with m.If(ex.o.valid):
            first = unpack(et, "first_v")
            for n in range(N):
                hit = label_rd.data == n
                m.d.sync += S[n].eq(Mux(first, 0, S[n]) + Mux(hit, e, 0))
            m.d.sync += T.eq(Mux(first, 0, T) + e)
        m.d.sync += [fin_go.eq(ex.o.valid & unpack(et, "last_v")), fin_entry.eq(unpack(et, "entry")),
                     fin_bad.eq(unpack(et, "bad"))]

    def _logits_proto(self, dp: CoreParts):
        """Proto: logits 2 q.p - |p|^2, their maximum, then one exp per class in a pass."""
        EW, N, S, T, VW, acc_tag, cfg, dot = dp.EW, dp.N, dp.S, dp.T, dp.VW, dp.acc_tag, dp.cfg, dp.dot
        dw, ef, ex, field, fin_bad, fin_entry = dp.dw, dp.ef, dp.ex, dp.field, dp.fin_bad, dp.fin_entry
        fin_go, lf, m, norm_rd, pack, sf, unpack = dp.fin_go, dp.lf, dp.m, dp.norm_rd, dp.pack, dp.sf, dp.unpack
        widths, x_tag, x_valid = dp.widths, dp.x_tag, dp.x_valid
        fa = cfg.acc_fmt.frac_bits
        fe, fs = ef.frac_bits, sf.frac_bits
        m.d.comb += [norm_rd.addr.eq(field(acc_tag, "v")), norm_rd.en.eq(1)]
        xw = max(dw + 1 + fa - fe - fs, widths["norm"] + 1 + fa - 2 * fs) + 1
        xe = Signal(signed(xw), name="logit_exact")
        m.d.sync += xe.eq((dot << (fa - fe - fs + 1)) - (norm_rd.data << (fa - 2 * fs)))
        xr = Signal(signed(xw), name="logit_rounded")
        m.d.sync += xr.eq(round_shift(xe, fa - lf.frac_bits, cfg.logit_rounding))
        logit = Signal(shape_of(lf), name="logit")
        m.d.sync += logit.eq(saturate(xr, lf))
        assert LOGIT_LATENCY == 3  # exact value, rounding, saturation
        t2 = delayed(m, pack(x_tag), LOGIT_LATENCY, "tag_logit")
        v2 = delayed(m, x_valid, LOGIT_LATENCY, "valid_logit")
        xbuf = [Signal(shape_of(lf), name=f"xbuf{n}") for n in range(N)]
        xmax = Signal(shape_of(lf))
        with m.If(v2):
            for n in range(N):
                with m.If(unpack(t2, "v") == n):
                    m.d.sync += xbuf[n].eq(logit)
            m.d.sync += xmax.eq(Mux(unpack(t2, "first_v") | (logit > xmax), logit, xmax))
        copy = Signal()
        m.d.sync += copy.eq(v2 & unpack(t2, "last_v"))
        xf = [Signal(shape_of(lf), name=f"xf{n}") for n in range(N)]
        xmax_f = Signal(shape_of(lf))
        pass_n = Signal(range(N + 1))
        pass_on = Signal()
        pass_entry, pass_bad = Signal(EW), Signal()
        copy_entry = delayed(m, unpack(t2, "entry"), 1, "copy_entry")
        copy_bad = delayed(m, unpack(t2, "bad"), 1, "copy_bad")
        with m.If(copy):
            m.d.sync += [x.eq(b) for x, b in zip(xf, xbuf, strict=True)]
            m.d.sync += [xmax_f.eq(xmax), pass_on.eq(1), pass_n.eq(0), pass_entry.eq(copy_entry),
                         pass_bad.eq(copy_bad)]
        with m.Elif(pass_on):
            m.d.sync += pass_n.eq(pass_n + 1)
            with m.If(pass_n == N - 1):
                m.d.sync += pass_on.eq(0)
        # the pass: one logit per cycle, registered, then its exp
        xn = Signal(shape_of(lf), name="xpass")
        xn_on = Signal()
        xn_tag = Signal(VW + 3 + EW)
        m.d.sync += [xn.eq(_mux_list(m, pass_n, xf, shape_of(lf), "xpass_mux")), xn_on.eq(pass_on),
                     xn_tag.eq(Cat(pass_n[:VW], pass_n == 0, pass_n == N - 1, pass_bad, pass_entry))]
        m.d.comb += [
            ex.i.valid.eq(xn_on),
            ex.i.payload.z.eq(xn - xmax_f),
            ex.i.payload.tag.eq(xn_tag),
        ]
        et = ex.o.payload.tag
        e = ex.o.payload.e
        with m.If(ex.o.valid):
            for n in range(N):
                with m.If(unpack(et, "v") == n):
                    m.d.sync += S[n].eq(e)
            m.d.sync += T.eq(Mux(unpack(et, "first_v"), 0, T) + e)
        m.d.sync += [fin_go.eq(ex.o.valid & unpack(et, "last_v")), fin_entry.eq(unpack(et, "entry")),
                     fin_bad.eq(unpack(et, "bad"))]

    def _finaliser(self, dp: CoreParts):
        """The finaliser: 1/T, the probabilities and the argmax over the N classes."""
        EW, H, N, S, T, cfg, fin_bad = dp.EW, dp.H, dp.N, dp.S, dp.T, dp.cfg, dp.fin_bad
        fin_entry, fin_go, m, tm = dp.fin_entry, dp.fin_go, dp.m, dp.tm
        sfw = cfg.sum_fmt.width
        f_on = Signal()  # the finaliser's pass over the N classes
        S_f = [Signal(unsigned(sfw), name=f"csum_f{n}") for n in range(N)]
        # the finaliser's pass reads them one per cycle from a shift register (S_f[0] is the class of
        # the pass's cycle): no class multiplexer whose select fans out over every bit of the sums
        with m.If(fin_go):
            m.d.sync += [a.eq(b) for a, b in zip(S_f, S, strict=True)]
        with m.Elif(f_on):
            m.d.sync += [a.eq(b) for a, b in zip(S_f[:-1], S_f[1:], strict=True)]
        m.submodules.recip = rcp = RecipUnit(config=cfg, kind="recip", in_width=sfw, tag_width=EW + 1)
        assert rcp.LATENCY == tm.recip_latency
        m.d.comb += [rcp.i.valid.eq(fin_go), rcp.i.payload.x.eq(T),
                     rcp.i.payload.tag.eq(Cat(fin_entry, fin_bad))]
        RW = len(rcp.o.payload.exp)
        yT = Signal(unsigned(H + 1))
        LT = Signal(RW)
        f_entry, f_bad = Signal(EW), Signal()
        f_n = Signal(range(N + 1))
        with m.If(rcp.o.valid):
            m.d.sync += [yT.eq(rcp.o.payload.y), LT.eq(rcp.o.payload.exp), f_entry.eq(rcp.o.payload.tag[:EW]),
                         f_bad.eq(rcp.o.payload.tag[EW]), f_on.eq(1), f_n.eq(0)]
        with m.Elif(f_on):
            m.d.sync += f_n.eq(f_n + 1)
            with m.If(f_n == N - 1):
                m.d.sync += f_on.eq(0)
        s_n = S_f[0]
        pf = cfg.prob_fmt
        NW = max(1, (N - 1).bit_length())
        prob = ScaleRound(a_shape=signed(sfw + 1), b_shape=unsigned(H + 1),
                          shift_width=(H - pf.frac_bits + (1 << RW) - 1).bit_length(), out_fmt=pf,
                          rounding=cfg.prob_rounding, tag_width=NW + 2 + EW)
        m.submodules.prob = prob
        m.d.comb += [
            prob.i.valid.eq(f_on),
            prob.i.payload.a.eq(s_n),
            prob.i.payload.b.eq(yT),
            prob.i.payload.shift.eq(H - pf.frac_bits + LT),
            prob.i.payload.tag.eq(Cat(f_n[:NW], f_n == N - 1, f_entry, f_bad)),
        ]
        # the argmax takes the same class sums one cycle later, from registers (the class-sum
        # selection and its compare chain in one cycle were a critical path); it still finishes
        # long before the probabilities, and its pass's result slot is held in am_entry
        am = Argmax(width=sfw, count=N)
        m.submodules.argmax = am
        am_entry = Signal.like(f_entry)
        am_v, am_first, am_last = Signal(), Signal(), Signal()
        am_val = Signal.like(s_n)
        m.d.sync += [am_v.eq(f_on), am_val.eq(s_n), am_first.eq(f_n == 0), am_last.eq(f_n == N - 1),
                     am_entry.eq(f_entry)]
        m.d.comb += [am.i.valid.eq(am_v), am.i.payload.value.eq(am_val), am.i.payload.first.eq(am_first),
                     am.i.payload.last.eq(am_last)]

        dp.add(NW=NW, am=am, am_entry=am_entry, pf=pf, prob=prob)

    def _results(self, dp: CoreParts):
        """The results: RS slots, answered in order through the head registers."""
        EW, N, NW, RS, ack, am, am_entry = dp.EW, dp.N, dp.NW, dp.RS, dp.ack, dp.am, dp.am_entry
        begin_time, cycle1, m, pf, prob = dp.begin_time, dp.cycle1, dp.m, dp.pf, dp.prob
        # The oldest finished slot is copied into the head registers (HEAD_DELAY) and answered from
        # there: the response words come from one N + 1-way multiplexer on the front end's registered
        # word index, not from a slot multiplexer behind the read pointer. The slot stays counted in
        # ``inflight`` until the front end acknowledges its last beat.
        # (the data registers are reset-less: they are read only behind res_full / head)
        probs = [[Signal(shape_of(pf), name=f"prob{e}_{n}", reset_less=True) for n in range(N)]
                 for e in range(RS)]
        pred = [Signal(range(max(2, N)), name=f"pred{e}", reset_less=True) for e in range(RS)]
        res_full = [Signal(name=f"res_full{e}") for e in range(RS)]
        res_status = [Signal(8, name=f"res_status{e}", reset_less=True) for e in range(RS)]
        rptr = Signal(range(RS))
        head = Signal()  # the head registers hold a response not yet acknowledged
        head_probs = [Signal(shape_of(pf), name=f"head_prob{n}", reset_less=True) for n in range(N)]
        head_pred = Signal(range(max(2, N)), reset_less=True)
        head_status = Signal(8, reset_less=True)
        last_cycles = Signal(32)
        pt = prob.o.payload.tag
        p_n, p_last, p_entry, p_bad = pt[:NW], pt[NW], pt[NW + 1: NW + 1 + EW], pt[NW + 1 + EW]
        with m.If(prob.o.valid):
            for e in range(RS):
                for n in range(N):
                    with m.If((p_entry == e) & (p_n == n)):
                        m.d.sync += probs[e][n].eq(prob.o.payload.value)
                with m.If((p_entry == e) & p_last):
                    m.d.sync += [res_full[e].eq(1),
                                 res_status[e].eq(Mux(p_bad, Status.BAD_VALUE, Status.OK))]
                    with m.If(~p_bad):  # STATUS last_cycles: the last query answered OK
                        m.d.sync += last_cycles.eq(cycle1 - begin_time[e])
        with m.If(am.o.valid):
            for e in range(RS):
                with m.If(am_entry == e):
                    m.d.sync += pred[e].eq(am.o.payload)
        with m.If(ack):
            m.d.sync += head.eq(0)
        with m.If(_mux_list(m, rptr, res_full, 1, "rptr_full") & ~head):
            m.d.sync += [head.eq(1), rptr.eq(_next(rptr, RS))]
            with m.Switch(rptr):
                for e in range(RS):
                    with m.Case(e):
                        m.d.sync += [res_full[e].eq(0), head_pred.eq(pred[e]), head_status.eq(res_status[e])]
                        m.d.sync += [head_probs[n].eq(probs[e][n]) for n in range(N)]
        m.d.comb += [
            self.bus.presult_valid.eq(head),
            self.bus.presult_status.eq(head_status),
            self.bus.last_cycles.eq(last_cycles),
        ]
        rd = Signal(32)
        ext = (lambda x: x.as_signed()) if pf.signed else (lambda x: x)
        with m.Switch(self.bus.rd_index[: NW + 1]):
            for n in range(N + 1):
                with m.Case(n):
                    m.d.comb += rd.eq(ext(head_probs[n]) if n < N else head_pred)
        m.d.comb += self.bus.rd_data.eq(rd)


class MatchEngine(PacketEngine):
    """The similarity engine behind the packet protocol: ports ``i`` and ``o`` (32-bit words + last).

    A :class:`~metafab.hw.frontend.PacketEngine` of a :class:`MatchCore` and
    :func:`match_ops`. The response words leave from registers (the front
    end's word selection is not on the consumer's path): one cycle on every
    response, ``OUTPUT_DELAY`` in the cycle model.

    Parameters
    ----------
    config : MatchConfig
    """

    def __init__(self, *, config: MatchConfig):
        if not isinstance(config, MatchConfig):
            reject(self, TypeError(f"config must be a MatchConfig, got {config!r}"))
        self._cfg = config
        try:
            core = MatchCore(config=config)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        super().__init__(core=core, ops=match_ops(config), out_register=True)

    @property
    def config(self) -> MatchConfig:
        return self._cfg

    @property
    def timing(self):
        return self.core.timing
