"""LOAD of the similarity engine: take the support set, check it, normalise it or build the prototypes.

:class:`SupportBuilder` receives the LOAD payload words from the packet front
end (per support row: its label, then its ``D`` codes in ``emb_fmt``) and
writes what the query datapath reads, exactly as
:func:`metafab.reference.match_fixed.prepare` computes it:

* matching: the raw rows go into a staging memory while a squarer sums each
  row's squared norm exactly and a :class:`~metafab.hw.match_units.RecipUnit`
  computes its inverse square root; after the payload, one element per cycle
  is scaled, ``u = round(s * y * 2**-(H + k))`` (the ``unit`` rounding), and
  written into the lane banks; the labels go to the label memory as they arrive.
* proto: every row is added into its class's exact sum in the staging memory
  (a read-modify-write per word; the first row of a class writes); after
  the payload, one element per cycle is scaled by ``c_k = round(2**H / k)``,
  ``p = round(C * c_k * 2**-H)`` (the ``prototype`` rounding), written into
  the lane banks, and squared into the prototype's exact ``|p|^2``, written
  into the norm memory.

Element ``d`` of stored vector ``v`` goes to lane bank ``d % P`` at address
``v * C + d // P``. A code outside ``emb_fmt``, a label outside ``0..N-1`` or
a class without rows makes the LOAD end with ``BAD_VALUE``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import out_of_range, reject, shape_of
from metafab.hw.match_schedule import prepare_drain, prepare_wait
from metafab.hw.match_units import RecipUnit, ScaleRound
from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig
from metafab.reference.protocol import Status

__all__ = ["SupportBuilder", "support_widths"]


def support_widths(cfg: MatchConfig) -> dict:
    """Widths shared by the builder and the core: ``norm`` (an exact squared norm), ``sum`` (a class sum)."""
    e = cfg.emb_fmt.width
    norm_w = 2 * cfg.emb_fmt.width + cfg.dim.bit_length()
    if cfg.mode == "proto":
        norm_w = 2 * cfg.proto_fmt.width + cfg.dim.bit_length()
    return {"norm": norm_w, "sum": e + cfg.n_support.bit_length()}


class SupportBuilder(wiring.Component):
    """The LOAD path of the similarity engine (see the module docstring).

    Parameters
    ----------
    config : MatchConfig

    Attributes
    ----------
    load_valid, load_first, load_data : In
        One LOAD payload word per cycle (the front end's ``wr_*``); ``load_first``
        marks the first word of a LOAD (a register in the core, not an index
        compare here).
    abort, start : In(1)
        The front end's pulses for a LOAD request.
    done, status : Out
        ``done`` pulses when the LOAD is finished; ``status`` is ``OK`` or ``BAD_VALUE``.
    bw_valid, bw_lane, bw_addr, bw_data : Out
        One lane-bank write per cycle (element of a unit row / prototype).
    lw_valid, lw_addr, lw_data : Out
        Label writes (matching).
    nw_valid, nw_addr, nw_data : Out
        Prototype squared-norm writes (proto).
    busy : Out(1)
        The prepare pass is running.
    """

    def __init__(self, *, config: MatchConfig):
        if not isinstance(config, MatchConfig):
            reject(self, TypeError(f"config must be a MatchConfig, got {config!r}"))
        self._cfg = cfg = config
        V, C = cfg.n_vectors, cfg.chunks
        w = support_widths(cfg)
        super().__init__({
            "load_valid": In(1),
            "load_first": In(1),
            "load_data": In(32),
            "abort": In(1),
            "start": In(1),
            "done": Out(1),
            "status": Out(8),
            "bw_valid": Out(1),
            "bw_lane": Out(range(max(2, cfg.lanes))),
            "bw_addr": Out(range(max(2, V * C))),
            "bw_data": Out(shape_of(cfg.store_fmt)),
            "lw_valid": Out(1),
            "lw_addr": Out(range(max(2, cfg.n_support))),
            "lw_data": Out(range(max(2, cfg.n_way))),
            "nw_valid": Out(1),
            "nw_addr": Out(range(max(2, cfg.n_way))),
            "nw_data": Out(unsigned(w["norm"])),
            "busy": Out(1),
        })

    @property
    def config(self) -> MatchConfig:
        return self._cfg

    def elaborate(self, platform):  # noqa: C901 - one datapath, read top to bottom
        cfg = self._cfg
        m = Module()
        matching = cfg.mode == "matching"
        N, M, D, P = cfg.n_way, cfg.n_support, cfg.dim, cfg.lanes
        C, V = cfg.chunks, cfg.n_vectors
        LP = P.bit_length() - 1
        H = cfg.mant_bits
        ef = cfg.emb_fmt
        w = support_widths(cfg)

        word = self.load_data.as_signed()
        first_word = self.load_first

        # ---------------- position in the payload ----------------
        j_r = Signal(range(M + 1))
        d_r = Signal(range(D + 2))
        d_zero = Signal(init=1)  # d_r == 0, as a register of its own
        j = Mux(first_word, 0, j_r)
        d = Mux(first_word, 0, d_r)
        is_label = first_word | d_zero
        with m.If(self.load_valid):
            with m.If(d == D):
                m.d.sync += [j_r.eq(j + 1), d_r.eq(0), d_zero.eq(1)]
            with m.Else():
                m.d.sync += [j_r.eq(j), d_r.eq(d + 1), d_zero.eq(0)]

        # ---------------- checks, labels, class counts ----------------
        bad = Signal()
        label_bad = (word < 0) | (word >= N)
        value_bad = out_of_range(word, ef)
        this_bad = Mux(is_label, label_bad, value_bad)
        with m.If(self.abort):
            m.d.sync += bad.eq(0)
        with m.Elif(self.load_valid):
            m.d.sync += bad.eq(Mux(first_word, 0, bad) | this_bad)

        LW = max(1, (N - 1).bit_length())
        counts = [Signal(range(M + 1), name=f"count{n}") for n in range(N)]
        label_now = word[:LW]
        is_lab_word = self.load_valid & is_label
        for n, cnt in enumerate(counts):
            base = Mux(first_word, 0, cnt)
            with m.If(self.load_valid & first_word):
                m.d.sync += cnt.eq(0)
            with m.If(is_lab_word & (word == n)):
                m.d.sync += cnt.eq(base + 1)
        if matching:
            m.d.comb += [self.lw_valid.eq(is_lab_word), self.lw_addr.eq(j), self.lw_data.eq(label_now)]

        # ---------------- staging memory ----------------
        is_value = self.load_valid & ~is_label
        if matching:
            stage = Memory(shape=shape_of(ef), depth=M * D, init=[0] * (M * D))
            m.submodules.staging = stage
            sw = stage.write_port()
            sr = stage.read_port()
            waddr = Signal(range(M * D + 1))
            with m.If(is_value):
                m.d.sync += waddr.eq(Mux(first_word, 0, waddr) + 1)
            with m.If(self.load_valid & first_word):
                m.d.sync += waddr.eq(0)
            m.d.comb += [sw.addr.eq(waddr), sw.data.eq(word[: ef.width]), sw.en.eq(is_value)]

            # squared norm of each row (exact) and its inverse square root
            # (the word is registered before the multiplier: the DSP sits between two registers)
            val = Signal(shape_of(ef), name="sq_in")
            in_valid, in_first, in_last = Signal(), Signal(), Signal()
            in_j = Signal.like(j_r)
            m.d.sync += [val.eq(word[: ef.width]), in_valid.eq(is_value), in_first.eq(d == 1),
                         in_last.eq(d == D), in_j.eq(j)]
            sq = Signal(unsigned(2 * ef.width), name="sq")
            sq_valid, sq_first, sq_last = Signal(), Signal(), Signal()
            sq_j = Signal.like(j_r)
            m.d.sync += [sq.eq(val * val), sq_valid.eq(in_valid), sq_first.eq(in_first), sq_last.eq(in_last),
                         sq_j.eq(in_j)]
            ns = Signal(unsigned(w["norm"]), name="row_norm")
            ns_valid, ns_last = Signal(), Signal()
            ns_j = Signal.like(j_r)
            m.d.sync += [ns_valid.eq(sq_valid), ns_last.eq(sq_last), ns_j.eq(sq_j)]
            with m.If(sq_valid):
                m.d.sync += ns.eq(Mux(sq_first, 0, ns) + sq)
            rs = RecipUnit(config=cfg, kind="rsqrt", in_width=w["norm"], tag_width=len(j_r))
            m.submodules.rsqrt = rs
            m.d.comb += [rs.i.valid.eq(ns_valid & ns_last), rs.i.payload.x.eq(ns), rs.i.payload.tag.eq(ns_j)]
            KW = len(rs.o.payload.exp)
            rnorm = Memory(shape=unsigned(H + 1 + KW), depth=M, init=[0] * M)
            m.submodules.rnorm = rnorm
            rw = rnorm.write_port()
            rr = rnorm.read_port()
            m.d.comb += [rw.addr.eq(rs.o.payload.tag), rw.data.eq(Cat(rs.o.payload.y, rs.o.payload.exp)),
                         rw.en.eq(rs.o.valid)]
        else:
            sum_shape = signed(w["sum"])
            stage = Memory(shape=sum_shape, depth=N * D, init=[0] * (N * D))
            m.submodules.staging = stage
            sw = stage.write_port()
            sr = stage.read_port()
            rmw = stage.read_port()
            first_r = Signal()  # this row is its class's first: write, do not add
            base_r = Signal(range(N * D + 1))
            with m.If(is_lab_word):
                cnt_now = Signal(range(M + 1))
                with m.Switch(label_now):
                    for n, cnt in enumerate(counts):
                        with m.Case(n):
                            m.d.comb += cnt_now.eq(Mux(first_word, 0, cnt))
                m.d.sync += [first_r.eq(cnt_now == 0), base_r.eq(label_now * D)]
            addr0 = Signal(range(N * D + 1))
            m.d.comb += [addr0.eq(base_r + d - 1), rmw.addr.eq(addr0), rmw.en.eq(1)]
            v1, f1 = Signal(), Signal()
            a1 = Signal.like(addr0)
            x1 = Signal(shape_of(ef))
            m.d.sync += [v1.eq(is_value), f1.eq(first_r), a1.eq(addr0),
                         x1.eq(word[: ef.width])]
            m.d.comb += [sw.addr.eq(a1), sw.data.eq(Mux(f1, x1, rmw.data + x1)), sw.en.eq(v1)]
            cconst = mx.count_constants(cfg)
            crom = Memory(shape=unsigned(H + 1), depth=len(cconst), init=[int(c) for c in cconst])
            m.submodules.count_constants = crom
            cr = crom.read_port()

        # ---------------- start: check, then the prepare pass ----------------
        status = Signal(8)
        done_r = Signal()
        m.d.comb += [self.done.eq(done_r), self.status.eq(status)]
        m.d.sync += done_r.eq(0)
        empty_class = Signal()
        m.d.comb += empty_class.eq(sum_or([c == 0 for c in counts]))

        e = Signal(range(V * D + 1))
        v = Signal(range(V + 1))
        dd = Signal(range(D + 1))
        vbase = Signal(range(V * C + 1))
        issue = Signal()
        wait_cycles, DRAIN = prepare_wait(cfg), prepare_drain(cfg)
        wait = Signal(range(wait_cycles + 1))
        drain = Signal(range(DRAIN + 1))

        with m.FSM(name="prepare"):
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If(bad | empty_class):
                        m.d.sync += [status.eq(Status.BAD_VALUE), done_r.eq(1), bad.eq(0)]
                    with m.Else():
                        m.d.sync += [status.eq(Status.OK), wait.eq(wait_cycles), e.eq(0), v.eq(0), dd.eq(0),
                                     vbase.eq(0)]
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), issue.eq(1)]
                m.d.sync += e.eq(e + 1)
                with m.If(dd == D - 1):
                    m.d.sync += [dd.eq(0), v.eq(v + 1), vbase.eq(vbase + C)]
                    with m.If(v == V - 1):
                        m.d.sync += drain.eq(DRAIN)
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += dd.eq(dd + 1)
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.d.sync += done_r.eq(1)
                    m.next = "IDLE"

        # stage 0: reads
        m.d.comb += [sr.addr.eq(e), sr.en.eq(1)]
        lane0 = dd[:LP] if LP else Const(0, 1)
        baddr0 = vbase + (dd >> LP)
        i1 = Signal()
        tag1 = Signal(len(self.bw_lane) + len(self.bw_addr) + len(self.nw_addr) + 2)
        tag0 = Cat(lane0, baddr0[: len(self.bw_addr)], v[: len(self.nw_addr)], dd == 0, dd == D - 1)
        m.d.sync += [i1.eq(issue), tag1.eq(tag0)]
        if matching:
            m.d.comb += [rr.addr.eq(v), rr.en.eq(1)]
            y1 = rr.data[: H + 1]
            k1 = rr.data[H + 1:]
            a_shape = shape_of(ef)
            shift1 = H - cfg.unit_fmt.frac_bits + k1
            kmax = (w["norm"] - 1) >> 1
            shift_width = (H - cfg.unit_fmt.frac_bits + kmax).bit_length()
            out_fmt = cfg.unit_fmt
            rounding = cfg.unit_rounding
        else:
            cnt_v = Signal(range(M + 1))
            with m.Switch(v):
                for n, cnt in enumerate(counts):
                    with m.Case(n):
                        m.d.comb += cnt_v.eq(cnt)
            m.d.comb += [cr.addr.eq(cnt_v), cr.en.eq(1)]
            y1 = cr.data
            a_shape = signed(w["sum"])
            const_shift = ef.frac_bits + H - cfg.proto_fmt.frac_bits
            shift1 = Const(const_shift)
            shift_width = max(1, const_shift.bit_length())
            out_fmt = cfg.proto_fmt
            rounding = cfg.prototype_rounding

        # stage 1..3: scale and round
        sc = ScaleRound(a_shape=a_shape, b_shape=unsigned(H + 1), shift_width=shift_width, out_fmt=out_fmt,
                        rounding=rounding, tag_width=len(tag1))
        m.submodules.scale = sc
        m.d.comb += [sc.i.valid.eq(i1), sc.i.payload.a.eq(sr.data), sc.i.payload.b.eq(y1),
                     sc.i.payload.shift.eq(shift1), sc.i.payload.tag.eq(tag1)]
        t = sc.o.payload.tag
        lane_w, addr_w, v_w = len(self.bw_lane), len(self.bw_addr), len(self.nw_addr)
        o_lane = t[:lane_w]
        o_addr = t[lane_w: lane_w + addr_w]
        o_v = t[lane_w + addr_w: lane_w + addr_w + v_w]
        o_first = t[lane_w + addr_w + v_w]
        o_last = t[lane_w + addr_w + v_w + 1]
        m.d.comb += [self.bw_valid.eq(sc.o.valid), self.bw_lane.eq(o_lane), self.bw_addr.eq(o_addr),
                     self.bw_data.eq(sc.o.payload.value)]

        if not matching:
            # squared norm of each prototype, exact
            pw = 2 * cfg.proto_fmt.width
            pp = Signal(unsigned(pw))
            pv, pf, pl = Signal(), Signal(), Signal()
            p_v = Signal(v_w)
            val = sc.o.payload.value
            m.d.sync += [pp.eq(val * val), pv.eq(sc.o.valid), pf.eq(o_first), pl.eq(o_last), p_v.eq(o_v)]
            acc = Signal(unsigned(w["norm"]))
            av = Signal()
            a_v = Signal(v_w)
            m.d.sync += [av.eq(pv & pl), a_v.eq(p_v)]
            with m.If(pv):
                m.d.sync += acc.eq(Mux(pf, 0, acc) + pp)
            m.d.comb += [self.nw_valid.eq(av), self.nw_addr.eq(a_v), self.nw_data.eq(acc)]
        return m


def sum_or(terms):
    """The OR of a list of 1-bit values."""
    out = terms[0]
    for t in terms[1:]:
        out = out | t
    return out
