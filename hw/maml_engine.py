"""The on-chip MAML adaptation engine: forward, backward and SGD update in hardware.

:class:`MamlEngine` = :class:`~metafab.hw.frontend.PacketFrontend` +
:class:`MamlCore`. The core executes the static schedule of
:mod:`metafab.hw.maml_schedule` on ``P`` MAC lanes and computes exactly
:mod:`metafab.reference.maml_fixed` (same formats, same rounding points).
Architecture and schedule: ``docs/maml_engine.md``.

Pipeline of one issue (job ``j``, pass ``t``, reduction index ``r``), one
stage per cycle, never stalled:

0. sequencer registers; register-file reads and weight-bank addresses
1. bank data; gather the ``S`` X slots; double the Y vector
2. rotate Y by ``n0``; lane X-slot indices
3. lane operands ``X_p``, ``Y_p``
4. products
5. accumulators (the sum of a pass is complete after its last ``r``)
6. post-processing: rounding, ReLU, ReLU mask, weight update; then write-back
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import reject, resize, saturate, shape_of
from metafab.hw.frontend import WORD_LAYOUT, OpSpec, PacketFrontend
from metafab.hw.maml_schedule import BACKWARD, ERROR, FORWARD, TAIL, UPDATE, WRITE_DELAY, schedule
from metafab.hw.register_matrix import RegisterMatrix
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, QFormat, sum_format
from metafab.reference.protocol import Opcode, Status

__all__ = ["MamlCore", "MamlEngine", "maml_ops"]

_KIND = {FORWARD: 0, ERROR: 1, BACKWARD: 2, UPDATE: 3}


def maml_ops(cfg: MamlConfig) -> dict:
    """The opcodes of the MAML engine and their packet lengths (see ``docs/protocol.md``)."""
    run_len = cfg.k_support * (cfg.n_in + cfg.n_out) + cfg.n_query * cfg.n_in
    return {
        Opcode.LOAD: OpSpec(req_len=cfg.n_params, resp_len=0, loads=True),
        Opcode.RUN: OpSpec(req_len=run_len, resp_len=cfg.n_query * cfg.n_out, needs_loaded=True,
                           counts_run=True),
    }


def _const_array(values, width=None, signed_=False):
    width = width or max(1, max(int(v).bit_length() for v in values) + (1 if signed_ else 0))
    shape = signed(width) if signed_ else unsigned(width)
    return Array([Const(int(v), shape) for v in values])


def sum_or(terms):
    """The OR of a list of 1-bit values."""
    out = terms[0]
    for t_ in terms[1:]:
        out = out | t_
    return out


def _check_config(cfg: MamlConfig):
    P = cfg.lanes
    if P & (P - 1):
        raise UserError(f"lanes must be a power of two (1, 2, 4, ..., 256) for the banked weights, got {P}")
    err_fmt = sum_format(cfg.act_fmt, cfg.act_fmt)
    for name, width in (("lr_fmt", cfg.lr_fmt.width + 1), ("error", err_fmt.width)):
        if width > 25:
            raise UserError(f"{name} needs {width}-bit multiplier operands; at most 25 are supported")


class MamlCore(wiring.Component):
    """The compute core: weight banks, register files, sequencer and ``P`` lanes.

    Its interface is the front end's core interface (see :mod:`metafab.hw.frontend`).
    """

    def __init__(self, *, config: MamlConfig):
        if not isinstance(config, MamlConfig):
            reject(self, TypeError(f"config must be a MamlConfig, got {config!r}"))
        try:
            _check_config(config)
        except UserError as exc:
            reject(self, exc)
        self._cfg = config
        self._sch = schedule(config)
        super().__init__(
            {
                "wr_valid": In(1),
                "wr_op": In(8),
                "wr_index": In(16),
                "wr_data": In(32),
                "abort": In(1),
                "start": In(1),
                "start_op": In(8),
                "done": Out(1),
                "done_status": Out(8),
                "rd_index": In(16),
                "rd_data": Out(32),
                "last_cycles": Out(32),
                "busy": Out(1),
            }
        )

    @property
    def config(self) -> MamlConfig:
        return self._cfg

    @property
    def schedule(self):
        return self._sch

    # ------------------------------------------------------------------
    def elaborate(self, platform):  # noqa: C901 - one datapath, read top to bottom
        cfg, sch = self._cfg, self._sch
        lay = sch.layout
        m = Module()
        P = cfg.lanes
        LP = max(0, P.bit_length() - 1)
        L = cfg.n_layers
        K, Q = cfg.k_support, cfg.n_query
        layers = cfg.layers
        jobs = list(sch.step_jobs) + list(sch.query_jobs)
        NS = len(sch.step_jobs)
        J = len(jobs)
        S_MAX = sch.max_slots
        N_MAX = sch.max_n
        ROT = min(P, N_MAX)

        act, wfmt, mfmt, gfmt = cfg.act_fmt, cfg.weight_fmt, cfg.master_fmt, cfg.grad_fmt
        accf, lrf = cfg.acc_fmt, cfg.lr_fmt
        efmt = sum_format(act, act)
        XW = max(wfmt.width, gfmt.width, lrf.width + 1)
        YW = max(efmt.width, gfmt.width, act.width)
        sh = {
            FORWARD: accf.frac_bits - (wfmt.frac_bits + act.frac_bits),
            BACKWARD: accf.frac_bits - (wfmt.frac_bits + gfmt.frac_bits),
            UPDATE: accf.frac_bits - (gfmt.frac_bits + act.frac_bits),
            ERROR: accf.frac_bits - (lrf.frac_bits + act.frac_bits),
        }
        one = 1 << act.frac_bits

        # ---------------- storage ----------------
        ash, gsh, msh = shape_of(act), shape_of(gfmt), shape_of(mfmt)
        def matrix(name, rows, cols, shape, const_row=None):
            return RegisterMatrix(name, rows, cols, shape, P, const_row)

        X_s = matrix("xs", cfg.n_in, K, ash, one)
        X_q = matrix("xq", cfg.n_in, Q, ash, one)
        Y_t = matrix("ytgt", cfg.n_out, K, ash)
        Y_hat = matrix("yhat", cfg.n_out, K, ash)
        Y_out = matrix("yout", cfg.n_out, Q, ash)
        A = {0: X_s}  # support activations (inputs of weight layer l)
        AQ = {0: X_q}  # query activations
        POS = {}  # [activation > 0] of the support activations, for the ReLU derivative
        for li in range(1, L):
            A[li] = matrix(f"a{li}", layers[li], K, ash, one)
            AQ[li] = A[li] if Q == K else matrix(f"aq{li}", layers[li], Q, ash, one)
            POS[li] = matrix(f"pos{li}", layers[li], K, unsigned(1))
        D = {L: matrix(f"d{L}", cfg.n_out, K, gsh)}
        for li in range(1, L):
            D[li] = matrix(f"d{li}", layers[li], K, gsh)

        w0_banks, w_banks = [], []
        for b in range(P):
            mem0 = Memory(shape=msh, depth=lay.depth, init=[0] * lay.depth)
            mem1 = Memory(shape=msh, depth=lay.depth, init=[0] * lay.depth)
            m.submodules[f"w0_bank{b}"] = mem0
            m.submodules[f"w_bank{b}"] = mem1
            w0_banks.append((mem0.read_port(), mem0.write_port()))
            w_banks.append((mem1.read_port(), mem1.write_port()))
        AW = max(1, (lay.depth - 1).bit_length())
        EW = max(1, (lay.words + 2 * P * max(lay.stride)).bit_length())

        # ---------------- loader (payload words from the front end) ----------------
        bad = Signal()  # a payload value outside its format
        word = self.wr_data.as_signed()
        is_load = self.wr_valid & (self.wr_op == int(Opcode.LOAD))
        is_run = self.wr_valid & (self.wr_op == int(Opcode.RUN))

        def out_of(fmt: QFormat):
            return (word < fmt.min_code) | (word > fmt.max_code)

        def check(fmt: QFormat):
            with m.If(self.wr_index == 0):
                m.d.sync += bad.eq(out_of(fmt))
            with m.Else():
                m.d.sync += bad.eq(bad | out_of(fmt))

        with m.If(self.abort):
            m.d.sync += bad.eq(0)
        with m.Elif(is_load):
            check(mfmt)
        with m.Elif(is_run):
            check(act)

        # weights: flat index of the next word, layer by layer, row-major with the stride
        ld_e = Signal(EW)
        ld_row = Signal(EW)
        ld_l = Signal(range(L + 1))
        ld_m = Signal(range(max(layers) + 1))
        ld_n = Signal(range(max(lay.cols) + 1))
        cols_a = _const_array(lay.cols)
        rows_a = _const_array(lay.rows)
        stride_a = _const_array(lay.stride)
        base_a = _const_array(list(lay.base) + [0])
        e_now = Mux(self.wr_index == 0, 0, ld_e)
        l_now = Mux(self.wr_index == 0, 0, ld_l)
        m_now = Mux(self.wr_index == 0, 0, ld_m)
        n_now = Mux(self.wr_index == 0, 0, ld_n)
        row_now = Mux(self.wr_index == 0, 0, ld_row)
        with m.If(is_load):
            with m.If(n_now == cols_a[l_now] - 1):
                with m.If(m_now == rows_a[l_now] - 1):
                    m.d.sync += [ld_l.eq(l_now + 1), ld_m.eq(0), ld_n.eq(0),
                                 ld_e.eq(base_a[l_now + 1]), ld_row.eq(base_a[l_now + 1])]
                with m.Else():
                    nxt = row_now + stride_a[l_now]
                    m.d.sync += [ld_l.eq(l_now), ld_m.eq(m_now + 1), ld_n.eq(0), ld_e.eq(nxt),
                                 ld_row.eq(nxt)]
            with m.Else():
                m.d.sync += [ld_l.eq(l_now), ld_m.eq(m_now), ld_n.eq(n_now + 1), ld_e.eq(e_now + 1),
                             ld_row.eq(row_now)]
        for b, (_, wp) in enumerate(w0_banks):
            m.d.comb += [wp.addr.eq(e_now >> LP), wp.data.eq(word[: mfmt.width])]
            bank_hit = (e_now[:LP] == b) if LP else Const(1)
            m.d.comb += wp.en.eq(is_load & bank_hit & ~out_of(mfmt))

        # task inputs: support (x, y) pairs sample by sample, then the queries
        per = cfg.n_in + cfg.n_out
        def load_element(mat, i, j):
            wsig, lo, hi = mat.word_slice(i, j)
            m.d.sync += wsig[lo:hi].eq(word)

        with m.If(is_run):
            for k in range(K):
                for f in range(per):
                    with m.If(self.wr_index == k * per + f):
                        if f < cfg.n_in:
                            load_element(X_s, f, k)
                        else:
                            load_element(Y_t, f - cfg.n_in, k)
            for q in range(Q):
                for f in range(cfg.n_in):
                    with m.If(self.wr_index == K * per + q * cfg.n_in + f):
                        load_element(X_q, f, q)

        # ---------------- job table ----------------
        gap_first, gap_later, gap_query = sch.gaps()
        kind_a = _const_array([_KIND[j.kind] for j in jobs])
        layer_a = _const_array([j.layer for j in jobs])
        R_a = _const_array([j.R for j in jobs])
        T_a = _const_array([j.passes for j in jobs])
        N_a = _const_array([j.N for j in jobs])
        q_a = _const_array([P // j.N for j in jobs] + [0])
        rem_a = _const_array([P % j.N for j in jobs] + [0])
        S_a = _const_array([j.slots for j in jobs])
        MN_a = _const_array([j.outputs for j in jobs])
        g1_a = _const_array(gap_first + gap_query)
        g2_a = _const_array(gap_later + gap_query)

        def job_stride(j):  # flat step of X between slots, per r, per pass row
            st = lay.stride[j.layer] if j.kind in (FORWARD, BACKWARD, UPDATE) else 1
            if j.kind == FORWARD:
                return st, 1, st  # slot step, r step, m step
            if j.kind == BACKWARD:
                return 1, st, 1
            return 0, 0, 0

        sstep_a = _const_array([job_stride(j)[0] for j in jobs])
        rstep_a = _const_array([job_stride(j)[1] for j in jobs])
        mstep_a = _const_array([job_stride(j)[2] for j in jobs])
        mq_a = _const_array([job_stride(j)[2] * (P // j.N) for j in jobs])
        jbase_a = _const_array([lay.base[j.layer] if j.kind != ERROR else 0 for j in jobs])

        # ---------------- sequencer (stage 0) ----------------
        running = Signal()
        jj = Signal(range(J + 1))
        step = Signal(range(cfg.steps + 2))
        in_query = Signal()
        gapc = Signal(8)
        t = Signal(range(sch.max_passes + 1))
        r = Signal(range(sch.max_r + 1))
        m0 = Signal(range(max(j.M for j in jobs) + P + 2))
        n0 = Signal(range(N_MAX + 1))
        e_pass = Signal(EW)
        e_cur = Signal(EW)
        use_w0 = Signal()
        status = Signal(8)
        cycles = Signal(32)
        last_cycles = Signal(32)
        done_r = Signal()
        m.d.comb += [self.done.eq(done_r), self.done_status.eq(status), self.last_cycles.eq(last_cycles),
                     self.busy.eq(running)]
        m.d.sync += done_r.eq(0)

        issue = Signal()
        final = Signal()
        last_r = r == R_a[jj] - 1
        last_t = t == T_a[jj] - 1
        m.d.comb += [
            issue.eq(running & (gapc == 0)),
            final.eq(in_query & (jj == J - 1) & last_t & last_r),
        ]

        def enter_job(idx, first_step):
            if isinstance(first_step, bool):
                gap = g1_a[idx] if first_step else g2_a[idx]
            else:
                gap = Mux(first_step, g1_a[idx], g2_a[idx])
            m.d.sync += [jj.eq(idx), t.eq(0), r.eq(0), m0.eq(0), n0.eq(0), gapc.eq(gap),
                         e_pass.eq(jbase_a[idx]), e_cur.eq(jbase_a[idx])]

        with m.If(self.start):
            m.d.sync += cycles.eq(0)
            with m.If(bad):
                m.d.sync += [status.eq(Status.BAD_VALUE), done_r.eq(1), bad.eq(0)]
            with m.Elif(self.start_op == int(Opcode.LOAD)):
                m.d.sync += [status.eq(Status.OK), done_r.eq(1)]
            with m.Else():
                m.d.sync += [status.eq(Status.OK), running.eq(1), step.eq(0)]
                if cfg.steps > 0:
                    m.d.sync += [in_query.eq(0), use_w0.eq(1)]
                    enter_job(0, True)
                else:
                    m.d.sync += [in_query.eq(1), use_w0.eq(1)]
                    enter_job(NS, True)
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(running & (gapc != 0)):
            m.d.sync += gapc.eq(gapc - 1)
        with m.If(issue):
            with m.If(~last_r):
                m.d.sync += [r.eq(r + 1), e_cur.eq(e_cur + rstep_a[jj])]
            with m.Elif(~last_t):
                nsum = n0 + rem_a[jj]
                carry = nsum >= N_a[jj]
                e_next = e_pass + mq_a[jj] + Mux(carry, mstep_a[jj], 0)
                m.d.sync += [
                    r.eq(0),
                    t.eq(t + 1),
                    n0.eq(Mux(carry, nsum - N_a[jj], nsum)),
                    m0.eq(m0 + q_a[jj] + carry),
                    e_pass.eq(e_next),
                    e_cur.eq(e_next),
                ]
            with m.Else():
                # next job
                with m.If(in_query):
                    with m.If(jj == J - 1):
                        m.d.sync += running.eq(0)
                    with m.Else():
                        enter_job(jj + 1, False)
                with m.Elif(jj == NS - 1):
                    with m.If(step == cfg.steps - 1):
                        m.d.sync += [in_query.eq(1), use_w0.eq(0)]
                        enter_job(NS, False)
                    with m.Else():
                        m.d.sync += [step.eq(step + 1), use_w0.eq(0)]
                        enter_job(0, False)
                with m.Else():
                    enter_job(jj + 1, step == 0)

        # ---------------- stage 0: reads and bank addresses ----------------
        kind0 = kind_a[jj]
        # X gather from the weight banks: slot s at flat e_cur + s * sstep
        slot_e = [Signal(EW, name=f"slot_e{s}") for s in range(S_MAX)]
        for s in range(S_MAX):
            m.d.comb += slot_e[s].eq(e_cur + s * sstep_a[jj])
        upd_addr = (jbase_a[jj] >> LP) + t
        for b in range(P):
            addr = Signal(AW, name=f"raddr{b}")
            with m.If(kind0 == _KIND[UPDATE]):
                m.d.comb += addr.eq(upd_addr)
            with m.Else():
                for s in reversed(range(S_MAX)):
                    hit = ((slot_e[s][:LP] == b) if LP else Const(1)) & (s < S_a[jj])
                    with m.If(hit):
                        m.d.comb += addr.eq(slot_e[s] >> LP)
            for rp, _ in (w0_banks[b], w_banks[b]):
                m.d.comb += [rp.addr.eq(addr), rp.en.eq(1)]

        # Y vector sources: one row read and one column read per matrix, shared by the jobs
        reads = {}

        def read(mat, how, width):
            key = (id(mat), how, width)
            if key not in reads:
                reads[key] = mat.row(r, width) if how == "row" else mat.column(r, width)
            return reads[key]

        yvec0 = [Signal(signed(YW), name=f"yraw{i}") for i in range(N_MAX)]
        dcol0 = [Signal(gsh, name=f"dcol{i}") for i in range(max(max(layers[1:]), 1))]
        err = [Y_hat.el(o, k) - Y_t.el(o, k) for o in range(cfg.n_out) for k in range(K)]
        with m.Switch(jj):
            for idx, j in enumerate(jobs):
                with m.Case(idx):
                    if j.kind == FORWARD:
                        vec = read((AQ if j.query else A)[j.layer], "row", N_MAX)
                    elif j.kind == BACKWARD:
                        vec = read(D[j.layer + 1], "row", N_MAX)
                    elif j.kind == UPDATE:
                        vec = read(A[j.layer], "col", N_MAX)
                        col = read(D[j.layer + 1], "col", len(dcol0))
                        m.d.comb += [d.eq(v) for d, v in zip(dcol0, col, strict=True)]
                    else:
                        vec = err + [Const(0, signed(YW))] * (N_MAX - len(err))
                    m.d.comb += [y.eq(v) for y, v in zip(yvec0, vec, strict=True)]

        # ---------------- pipeline of the issue information ----------------
        def stage_regs(k):
            return {
                "valid": Signal(name=f"v{k}"),
                "jj": Signal(range(J + 1), name=f"jj{k}"),
                "t": Signal(range(sch.max_passes + 1), name=f"t{k}"),
                "first": Signal(name=f"first{k}"),
                "last": Signal(name=f"last{k}"),
                "final": Signal(name=f"final{k}"),
            }

        st = [None] + [stage_regs(k) for k in range(1, 7)]
        m.d.sync += [
            st[1]["valid"].eq(issue),
            st[1]["jj"].eq(jj),
            st[1]["t"].eq(t),
            st[1]["first"].eq(r == 0),
            st[1]["last"].eq(last_r),
            st[1]["final"].eq(issue & final),
        ]
        for k in range(2, 7):
            m.d.sync += [st[k][n].eq(st[k - 1][n]) for n in st[k]]

        # stage-1 registers of data
        yvec1 = [Signal(signed(YW), name=f"yvec1_{i}") for i in range(N_MAX)]
        dcol1 = [Signal(gsh, name=f"dcol1_{i}") for i in range(len(dcol0))]
        m0_1, n0_1, w0sel1 = Signal.like(m0), Signal.like(n0), Signal()
        slot_bank1 = [Signal(max(1, LP), name=f"sbank1_{s}") for s in range(S_MAX)]
        m.d.sync += [a.eq(b) for a, b in zip(yvec1, yvec0, strict=True)]
        m.d.sync += [a.eq(b) for a, b in zip(dcol1, dcol0, strict=True)]
        m.d.sync += [m0_1.eq(m0), n0_1.eq(n0), w0sel1.eq(use_w0)]
        m.d.sync += [slot_bank1[s].eq(slot_e[s][:LP] if LP else 0) for s in range(S_MAX)]

        # ---------------- stage 1: gather X slots, double Y ----------------
        jj1 = st[1]["jj"]
        kind1 = kind_a[jj1]
        bank_data = []
        for b in range(P):
            bank_data.append(Mux(w0sel1, w0_banks[b][0].data, w_banks[b][0].data))
        bank_arr = Array(bank_data)
        xslot2 = [Signal(signed(XW), name=f"xslot2_{s}") for s in range(S_MAX)]
        lr_const = Const(cfg.lr_code, signed(XW))
        dcol_arr = Array(dcol1)
        for s in range(S_MAX):
            wv = bank_arr[slot_bank1[s]]
            if mfmt != wfmt:
                wv = resize(wv, mfmt, wfmt, cfg.weight_read_rounding, Overflow.SATURATE)
            dv = dcol_arr[m0_1 + s] if len(dcol1) > 1 else dcol1[0]
            with m.Switch(kind1):
                with m.Case(_KIND[FORWARD], _KIND[BACKWARD]):
                    m.d.sync += xslot2[s].eq(wv)
                with m.Case(_KIND[UPDATE]):
                    m.d.sync += xslot2[s].eq(dv)
                with m.Default():
                    m.d.sync += xslot2[s].eq(lr_const)
        # old weights for updates travel down the pipeline to the post stage
        wold = [[Signal(msh, name=f"wold{k}_{b}") for b in range(P)] for k in range(2, 7)]
        m.d.sync += [wold[0][b].eq(bank_data[b]) for b in range(P)]
        for k in range(1, len(wold)):
            m.d.sync += [wold[k][b].eq(wold[k - 1][b]) for b in range(P)]

        # doubled Y: dbl[q] = y[q] for q < N, y[q - N] for q >= N (per job's N)
        n_values = sorted({j.N for j in jobs})
        N1 = N_a[jj1]
        dbl_len = N_MAX + ROT
        dbl2 = [Signal(signed(YW), name=f"dbl2_{i}") for i in range(dbl_len)]
        for qi in range(dbl_len):
            choices = {}
            for nv in n_values:
                if qi < nv:
                    choices[nv] = yvec1[qi] if qi < N_MAX else Const(0, signed(YW))
                elif qi - nv < nv and qi - nv < N_MAX:
                    choices[nv] = yvec1[qi - nv]
                else:
                    choices[nv] = Const(0, signed(YW))
            with m.Switch(N1):
                for nv, v in choices.items():
                    with m.Case(nv):
                        m.d.sync += dbl2[qi].eq(v)
        n0_2 = Signal.like(n0)
        m0_2 = Signal.like(m0)
        m.d.sync += [n0_2.eq(n0_1), m0_2.eq(m0_1)]

        # ---------------- stage 2: rotate by n0, lane slot indices ----------------
        jj2 = st[2]["jj"]
        vec = list(dbl2)
        for bit in range(max(1, (N_MAX - 1).bit_length())):
            amount = 1 << bit
            vec = [Mux(n0_2[bit], vec[i + amount] if i + amount < len(vec) else Const(0, signed(YW)), vec[i])
                   for i in range(len(vec))]
        rot3 = [Signal(signed(YW), name=f"rot3_{i}") for i in range(ROT)]
        m.d.sync += [rot3[i].eq(vec[i]) for i in range(ROT)]
        xslot3 = [Signal(signed(XW), name=f"xslot3_{s}") for s in range(S_MAX)]
        m.d.sync += [a.eq(b) for a, b in zip(xslot3, xslot2, strict=True)]
        slot_idx3 = [Signal(range(S_MAX + 1), name=f"sidx3_{p}") for p in range(P)]
        thr = [_const_array([k * j.N for j in jobs]) for k in range(1, S_MAX)]
        for p in range(P):
            v = n0_2 + p
            m.d.sync += slot_idx3[p].eq(sum((v >= thr_k[jj2]) for thr_k in thr) if thr else 0)

        # ---------------- stage 3: lane operands ----------------
        jj3 = st[3]["jj"]
        N3 = N_a[jj3]
        xop4 = [Signal(signed(XW), name=f"xop4_{p}") for p in range(P)]
        yop4 = [Signal(signed(YW), name=f"yop4_{p}") for p in range(P)]
        xs_arr = Array(xslot3)
        for p in range(P):
            m.d.sync += xop4[p].eq(xs_arr[slot_idx3[p]] if S_MAX > 1 else xslot3[0])
            with m.Switch(N3):
                for nv in n_values:
                    with m.Case(nv):
                        m.d.sync += yop4[p].eq(rot3[p % nv])

        # ---------------- stage 4: products ----------------
        prod5 = [Signal(signed(XW + YW), name=f"prod5_{p}") for p in range(P)]
        m.d.sync += [prod5[p].eq(xop4[p] * yop4[p]) for p in range(P)]
        shift5 = Signal(range(max(sh.values()) + 1))
        m.d.sync += shift5.eq(_const_array([sh[j.kind] for j in jobs])[st[4]["jj"]])

        # ---------------- stage 5: accumulate ----------------
        acc = [Signal(shape_of(accf), name=f"acc{p}") for p in range(P)]
        res6 = [Signal(shape_of(accf), name=f"res6_{p}") for p in range(P)]
        first5, last5, valid5 = st[5]["first"], st[5]["last"], st[5]["valid"]
        for p in range(P):
            aligned = prod5[p] << shift5
            new = (Mux(first5, 0, acc[p]) + aligned)[: accf.width].as_signed()
            with m.If(valid5):
                m.d.sync += acc[p].eq(new)
                with m.If(last5):
                    m.d.sync += res6[p].eq(new)
        post_valid6 = Signal()
        m.d.sync += post_valid6.eq(valid5 & last5)

        # ---------------- stage 6: post-processing ----------------
        jj6, t6 = st[6]["jj"], st[6]["t"]
        kind6, layer6 = kind_a[jj6], layer_a[jj6]
        OW = max(act.width, gfmt.width, mfmt.width)
        out7 = [Signal(signed(OW), name=f"out7_{p}") for p in range(P)]
        pos7 = [Signal(name=f"pos7_{p}") for p in range(P)]
        wr7 = Signal()
        jj7, t7 = Signal.like(jj6), Signal.like(t6)
        m.d.sync += [wr7.eq(post_valid6), jj7.eq(jj6), t7.eq(t6)]
        upd_fmt = QFormat(accf.int_bits + 1, mfmt.frac_bits)
        # ReLU mask of a backward job: the [a > 0] bits of this pass's elements, one per lane
        mask_word = Signal(P)
        with m.Switch(jj6):
            for idx, j in enumerate(jobs):
                if j.kind == BACKWARD:
                    with m.Case(idx):
                        m.d.comb += mask_word.eq(POS[j.layer].word_array()[t6])
        for p in range(P):
            a_val = resize(res6[p], accf, act, cfg.forward_rounding, Overflow.SATURATE)
            e_val = resize(res6[p], accf, gfmt, cfg.error_rounding, Overflow.SATURATE)
            b_val = resize(res6[p], accf, gfmt, cfg.backward_rounding, Overflow.SATURATE)
            upd = resize(res6[p], accf, upd_fmt, cfg.update_rounding, Overflow.WRAP)
            w_new = saturate(wold[-1][p].as_signed() - upd, mfmt)
            mask = mask_word[p]
            hidden = layer6 < L - 1
            with m.Switch(kind6):
                with m.Case(_KIND[FORWARD]):
                    relu = Mux(hidden & (a_val < 0), 0, a_val)
                    m.d.sync += [out7[p].eq(relu), pos7[p].eq(a_val > 0)]
                with m.Case(_KIND[ERROR]):
                    m.d.sync += out7[p].eq(e_val)
                with m.Case(_KIND[BACKWARD]):
                    m.d.sync += out7[p].eq(Mux(mask, b_val, 0))
                with m.Case(_KIND[UPDATE]):
                    m.d.sync += out7[p].eq(w_new)

        # ---------------- write-back (end of stage 6) ----------------
        writers = {}  # matrix -> job indices that write it

        def add_writer(mat, idx):
            writers.setdefault(id(mat), (mat, []))[1].append(idx)

        for idx, j in enumerate(jobs):
            if j.kind == FORWARD:
                if j.layer == L - 1:
                    add_writer(Y_out if j.query else Y_hat, idx)
                else:
                    add_writer((AQ if j.query else A)[j.layer + 1], idx)
                    if not j.query:
                        add_writer(POS[j.layer + 1], idx)
            elif j.kind == ERROR:
                add_writer(D[L], idx)
            elif j.kind == BACKWARD:
                add_writer(D[j.layer], idx)
        for mat, idxs in writers.values():
            en = Signal(name=f"we_{mat.name}")
            m.d.comb += en.eq(wr7 & sum_or([jj7 == i for i in idxs]))
            values = pos7 if mat.shape.width == 1 and mat.name.startswith("pos") else out7
            mat.write_pass(m, en, t7, values)

        # weight updates: lane p writes bank p at address base/P + t
        upd_jobs = [idx for idx, j in enumerate(jobs) if j.kind == UPDATE]
        is_upd7 = Signal()
        m.d.comb += is_upd7.eq(wr7 & (kind_a[jj7] == _KIND[UPDATE]))
        for b, (_, wp) in enumerate(w_banks):
            lane_ok = (t7 * P + b) < MN_a[jj7]
            m.d.comb += [
                wp.addr.eq((jbase_a[jj7] >> LP) + t7),
                wp.data.eq(out7[b][: mfmt.width]),
                wp.en.eq(is_upd7 & lane_ok),
            ]
        assert upd_jobs

        # done: the final issue's results are written at the end of stage 7
        final7 = Signal()
        m.d.sync += final7.eq(st[6]["final"])
        with m.If(final7):
            m.d.sync += [done_r.eq(1), last_cycles.eq(cycles + TAIL)]

        # response payload: query outputs, sample by sample
        rd = Signal(32)
        with m.Switch(self.rd_index):
            for q in range(Q):
                for o in range(cfg.n_out):
                    with m.Case(q * cfg.n_out + o):
                        m.d.comb += rd.eq(Y_out.el(o, q))
        m.d.comb += self.rd_data.eq(rd)
        assert WRITE_DELAY == 8 and TAIL == 8
        return m


class MamlEngine(wiring.Component):
    """The MAML engine behind the packet protocol: ports ``i`` and ``o`` (32-bit words + last).

    Parameters
    ----------
    config : MamlConfig
    """

    def __init__(self, *, config: MamlConfig):
        if not isinstance(config, MamlConfig):
            reject(self, TypeError(f"config must be a MamlConfig, got {config!r}"))
        self._cfg = config
        try:
            self._core = MamlCore(config=config)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        self._front = PacketFrontend(ops=maml_ops(config))
        super().__init__({"i": In(stream.Signature(WORD_LAYOUT)),
                          "o": Out(stream.Signature(WORD_LAYOUT))})

    @property
    def config(self) -> MamlConfig:
        return self._cfg

    @property
    def schedule(self):
        return self._core.schedule

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = self._front
        m.submodules.core = core = self._core
        wiring.connect(m, wiring.flipped(self.i), front.i)
        wiring.connect(m, front.o, wiring.flipped(self.o))
        for name in ("wr_valid", "wr_op", "wr_index", "wr_data", "abort", "start", "start_op", "rd_index"):
            m.d.comb += getattr(core, name).eq(getattr(front, name))
        for name in ("done", "done_status", "rd_data", "last_cycles"):
            m.d.comb += getattr(front, name).eq(getattr(core, name))
        return m
