"""The on-chip MAML adaptation engine: forward, backward and SGD update in hardware.

:class:`MamlEngine` = :class:`~metafab.hw.frontend.PacketFrontend` +
:class:`MamlCore`. The core executes the static schedule of
:mod:`metafab.hw.maml_schedule` on ``P`` MAC lanes and computes exactly
:mod:`metafab.reference.maml_fixed` (same formats, same rounding points).
Architecture and schedule: ``docs/maml_engine.md``.

Every matrix lives in a :class:`~metafab.hw.tile_memory.TileMemory` whose
word is a tile; one issue (one cycle) of a job reads one word of the
matrix that gives the ``X`` operands and one of the matrix that gives the
``Y`` operands. Pipeline of one issue (cycle ``c`` = issue), never stalled:

======  =========================================================================
c       sequencer registers (job, tile coordinates); word addresses, selector codes
c+1     addresses registered at the memories' read ports
c+2     read data; c+3 read data registered (block RAM clock-to-out)
c+4     extraction of the ``X`` tile (``pm x pr``) and ``Y`` tile (``pr x pn``)
c+5     lane operands: lane ``p = ((i pn) + j) pr + k`` takes ``X[i,k]`` and ``Y[k,j]``
c+6     products (one multiplier per lane)
c+6+l   adder tree level ``l`` (``l = log2 pr``); the accumulators add the group sums
A       (= c+7+l at the last issue of a pass) accumulator results; ReLU mask and old weights read
A+1     rounding (shift and round bit)
A+2     saturation, ReLU, mask
A+3     update subtraction and saturation; the output tile is written
======  =========================================================================
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import clamp, fits, out_of_range, registered_product, reject, resize, round_shift_parts
from metafab.hw.frontend import CoreBusSignature, CoreParts, OpSpec, PacketEngine
from metafab.hw.maml_schedule import (
    BACKWARD,
    ERROR,
    FORWARD,
    UPDATE,
    accumulate_stage,
    adapted_layers,
    aux_read_offset,
    error_input_fmt,
    is_classifier,
    product_stage,
    schedule,
    write_latency,
)
from metafab.hw.match_units import ExpTable, RecipUnit, ScaleRound
from metafab.hw.tile_memory import TileMemory
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, QFormat, Rounding
from metafab.reference.protocol import Opcode, Status

__all__ = ["MamlCore", "MamlEngine", "maml_ops"]

_KIND = {FORWARD: 0, ERROR: 1, BACKWARD: 2, UPDATE: 3}


def maml_ops(cfg: MamlConfig) -> dict:
    """The opcodes of the MAML engine and their packet lengths (see ``docs/protocol.md``)."""
    return {
        Opcode.LOAD: OpSpec(req_len=cfg.load_words, resp_len=0, loads=True),
        Opcode.RUN: OpSpec(req_len=cfg.run_words, resp_len=cfg.result_words, needs_loaded=True,
                           counts_run=True),
        Opcode.READ_WEIGHTS: OpSpec(req_len=0, resp_len=cfg.n_params, needs_loaded=True),
    }


def _const_array(values, width=None, signed_=False):
    values = [int(v) for v in values]
    width = width or max(1, max(v.bit_length() for v in values) + (1 if signed_ else 0))
    shape = signed(width) if signed_ else unsigned(width)
    return Array([Const(v, shape) for v in values])


def _log2(x: int) -> int:
    return x.bit_length() - 1


def _times(x, c: int):
    """``x * c`` for a constant ``c >= 0`` as shifts and adds (no multiplier is inferred)."""
    terms = [x << b for b in range(c.bit_length()) if (c >> b) & 1]
    if not terms:
        return Const(0, 1)
    out = terms[0]
    for t_ in terms[1:]:
        out = out + t_
    return out


def _select(m, target, selector, choices, domain="sync", default=None, early=None):
    """``target <= expr`` of the choice whose pattern equals ``selector``.

    ``choices`` is a list of ``(pattern, key, expr)``; choices with the same
    ``key`` share one case. Without ``default`` the most frequent choice is
    the default (patterns that no choice names are don't-cares).

    ``early``: the selector's value one cycle earlier. The pattern match is
    then decoded a cycle ahead into a small registered choice code that
    belongs to this target alone, so the wide selector decode does not fan
    out across the chip in the data path's cycle (with ``domain="comb"`` the
    target is the value a ``sync`` target would take at the next edge).
    """
    stmts = m.d.sync if domain == "sync" else m.d.comb
    if not choices:
        if default is not None:
            stmts += target.eq(default)
        return
    groups, exprs = {}, {}
    for pat, key, expr in choices:
        groups.setdefault(key, []).append(pat)
        exprs[key] = expr
    dkey = None
    if default is None:
        dkey = max(groups, key=lambda k: len(groups[k]))
        default = exprs[dkey]
        if len(groups) == 1:
            stmts += target.eq(default)
            return
    if early is not None:
        keys = [key for key in groups if key != dkey]
        code = Signal(range(len(keys) + 1), name=f"{target.name}_code")
        with m.Switch(early):
            for n, key in enumerate(keys):
                with m.Case(*sorted(set(groups[key]))):
                    m.d.sync += code.eq(n + 1)
            with m.Default():
                m.d.sync += code.eq(0)
        with m.Switch(code):
            for n, key in enumerate(keys):
                with m.Case(n + 1):
                    stmts += target.eq(exprs[key])
            with m.Default():
                stmts += target.eq(default)
        return
    with m.Switch(selector):
        for key, pats in groups.items():
            if key != dkey:
                with m.Case(*sorted(set(pats))):
                    stmts += target.eq(exprs[key])
        with m.Default():
            stmts += target.eq(default)


def _check_config(cfg: MamlConfig):
    if cfg.lanes & (cfg.lanes - 1):
        raise UserError(f"lanes must be a power of two (1, 2, 4, ..., 256), got {cfg.lanes}")
    err_fmt = error_input_fmt(cfg)
    for name, width in (("lr_eff", cfg.lr_code.bit_length() + 1), ("error", err_fmt.width)):
        if width > 25:
            raise UserError(f"{name} needs {width}-bit multiplier operands; at most 25 are supported")
    for point in ("forward_rounding", "error_rounding", "backward_rounding", "update_rounding",
                  "weight_read_rounding"):
        if getattr(cfg, point) is Rounding.STOCHASTIC:
            raise UserError(f"{point}=stochastic is not supported by the MAML engine (reference only)")


class _Pipe:
    """A bundle of control fields copied from stage to stage."""

    def __init__(self, fields: dict, tag: str):
        self.f = {name: Signal(shape, name=f"{name}_{tag}") for name, shape in fields.items()}

    def __getattr__(self, name):
        try:
            return self.__dict__["f"][name]
        except KeyError:
            raise AttributeError(name) from None

    def eq(self, other):
        return [self.f[n].eq(other.f[n]) for n in self.f]


class MamlCore(wiring.Component):
    """The compute core: tile memories, sequencer, ``P`` lanes, adder tree, accumulators, post-processing.

    Attributes
    ----------
    bus : In(CoreBusSignature(pipelined=False))
        The core bus from the front end (see :mod:`metafab.hw.frontend`).
    busy : Out(1)
        A RUN is in progress.
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
        super().__init__({"bus": In(CoreBusSignature.for_ops(maml_ops(config))), "busy": Out(1)})

    @property
    def config(self) -> MamlConfig:
        return self._cfg

    @property
    def schedule(self):
        return self._sch

    def elaborate(self, platform):
        """The core, part by part in the order of the pipeline (see the module docstring)."""
        dp = CoreParts(m=Module(), platform=platform)
        self._plan(dp)
        self._storage(dp)
        self._loader(dp)
        self._sequencer(dp)
        self._issue(dp)
        self._operands(dp)
        self._lanes(dp)
        self._accumulators(dp)
        self._post_control(dp)
        self._post_addresses(dp)
        self._aux_operands(dp)
        self._round_saturate(dp)
        self._write_back(dp)
        if dp.cls:
            self._softmax(dp)
            self._cls_response(dp)
        else:
            self._response(dp)
        self._readback(dp)
        for name, mem in dp.mems.items():
            mem.elaborate_into(dp.m, f"mem_{name.lower()}", platform)
        return dp.m

    def _plan(self, dp: CoreParts):
        """Formats, operand widths and the schedule's dimensions shared by every part."""
        cfg, sch = self._cfg, self._sch
        P = cfg.lanes
        L = cfg.n_layers
        K, Q = cfg.k_support, cfg.n_query
        layers = cfg.layers
        jobs = sch.all_kinds()
        NS = len(sch.step_jobs)
        J = len(jobs)
        T = sch.tensors
        NACC = sch.accumulators
        MAXL = sch.max_level
        levels = sorted({j.shape.level for j in jobs})
        shapes = sorted({j.shape for j in jobs})
        shape_id = {s: i for i, s in enumerate(shapes)}
        TX = max(j.shape.pm * j.shape.pr for j in jobs)
        TY = max(j.shape.pr * j.shape.pn for j in jobs)

        act, wfmt, mfmt, gfmt = cfg.act_fmt, cfg.weight_fmt, cfg.master_fmt, cfg.grad_fmt
        accf, lrf = cfg.acc_fmt, cfg.lr_fmt
        efmt = error_input_fmt(cfg)  # the error job's Y operand: Yhat - Y, or a classifier's p - onehot
        XW = max(wfmt.width, gfmt.width, cfg.lr_code.bit_length() + 1)
        YW = max(efmt.width, gfmt.width, act.width)
        # lr_eff enters the multiplier pre-scaled to the accumulator's binary point when it fits:
        # the error's sum is then aligned like the backward job's (one rounding path for both)
        lr_shift = max(0, accf.frac_bits - (lrf.frac_bits + efmt.frac_bits))
        if (cfg.lr_code << lr_shift).bit_length() + 1 > XW:
            lr_shift = 0
        lr_code = cfg.lr_code << lr_shift
        lr_frac = lrf.frac_bits + lr_shift
        prod_frac = {
            FORWARD: wfmt.frac_bits + act.frac_bits,
            BACKWARD: wfmt.frac_bits + gfmt.frac_bits,
            UPDATE: gfmt.frac_bits + act.frac_bits,
            ERROR: lr_frac + efmt.frac_bits,
        }
        AW = accf.width
        one = 1 << act.frac_bits

        dp.add(AW=AW, J=J, K=K, L=L, MAXL=MAXL, NACC=NACC, NS=NS, P=P, Q=Q, T=T, TX=TX, TY=TY, XW=XW, YW=YW)
        dp.add(accf=accf, act=act, cfg=cfg, gfmt=gfmt, jobs=jobs, layers=layers, levels=levels, lr_code=lr_code)
        dp.add(mfmt=mfmt, one=one, prod_frac=prod_frac, sch=sch, shape_id=shape_id, shapes=shapes)
        dp.add(wfmt=wfmt, cls=is_classifier(cfg), adapted=adapted_layers(cfg))

    def _storage(self, dp: CoreParts):
        """The tile memories (one per matrix; W holds two copies) and the tile addressing helpers."""
        L, T, mfmt, one = dp.L, dp.T, dp.mfmt, dp.one
        wts = [T[f"W{l}"] for l in range(L)]
        W_WORDS = sum(t.words for t in wts)
        mems = {"W": TileMemory("w", depth=2 * W_WORDS, elements=max(t.elements for t in wts),
                                width=mfmt.width, read_ports=1 if dp.sch.shared_w_port else 2)}
        for name, t in T.items():
            if t.memory == "W":
                continue
            init = None
            if t.const_row is not None:
                init = []
                for w in range(t.words):
                    tr, tc = divmod(w, t.tile_cols)
                    for e in range(t.elements):
                        row = tr * t.grid[0] + e // t.grid[1]
                        init.append(one if row == t.const_row else 0)
            # a classifier's softmax unit reads the logits at a second port
            ports = 2 if is_classifier(self._cfg) and name == f"A{L}" else 1
            mems[name] = TileMemory(name.lower(), depth=t.words, elements=t.elements, width=t.width,
                                    signed_=t.width > 1, init=init, read_ports=ports)
        self._mems = mems  # for white-box tests (added to the module at the end of elaborate)

        def tile_addr(t, row, col, copy=None):
            """Word address of the tile of ``t`` at (row, col); ``copy`` (1 bit) selects the W copy."""
            gr, gc = t.grid
            addr = t.base + _times(row >> _log2(gr), t.tile_cols) + (col >> _log2(gc))
            if copy is not None:
                addr = addr + Mux(copy, W_WORDS, 0)
            return addr

        def local_code(acc, t, row, col):
            """Which ``rows x cols`` tile of the word: bits of the coordinates below the grid."""
            gr, gc = t.grid
            cw, rw = _log2(gc) - _log2(acc.cols), _log2(gr) - _log2(acc.rows)
            col_bits = (col >> _log2(acc.cols))[:cw] if cw else Const(0, 0)
            row_bits = (row >> _log2(acc.rows))[:rw] if rw else Const(0, 0)
            return Cat(col_bits, row_bits)

        def offsets(job, acc, t):
            """``(local code, row offset, col offset)`` reachable by ``acc`` in ``job``."""
            s = job.shape
            vals = {"m": range(0, job.M, s.pm), "n": range(0, job.N, s.pn), "r": range(0, job.R, s.pr)}
            gr, gc = t.grid
            seen = {}
            for r in vals[acc.row]:
                for c in vals[acc.col]:
                    ro, co = r % gr, c % gc
                    loc = (ro // acc.rows) * (gc // acc.cols) + co // acc.cols
                    seen[loc] = (ro, co)
            return sorted((loc, ro, co) for loc, (ro, co) in seen.items())

        dp.add(local_code=local_code, mems=mems, offsets=offsets, tile_addr=tile_addr, wts=wts)

    def _loader(self, dp: CoreParts):
        """The payload words of LOAD (weights) and RUN (task inputs) into the memories; the range checks."""
        K, L, Q, T, act, cfg, layers, m, mems = dp.K, dp.L, dp.Q, dp.T, dp.act, dp.cfg, dp.layers, dp.m, dp.mems
        mfmt, tile_addr, wts = dp.mfmt, dp.tile_addr, dp.wts
        # The front end's write and start signals enter through one register, decoded by opcode
        # before it: every load and start decision starts from a register of the core, not from the
        # input stream's handshake through the front end (in a board top that path ran from the UART
        # bridge through the front end's state machine into the weight memory's write data). All of
        # them move by the same cycle, so their order is the front end's.
        is_load, is_run, first_word = Signal(), Signal(), Signal()
        abort, start, start_load, start_read = Signal(), Signal(), Signal(), Signal()
        word = Signal(signed(32))
        m.d.sync += [
            is_load.eq(self.bus.wr_valid & (self.bus.wr_op == int(Opcode.LOAD))),
            is_run.eq(self.bus.wr_valid & (self.bus.wr_op == int(Opcode.RUN))),
            first_word.eq(self.bus.wr_index == 0),
            word.eq(self.bus.wr_data),
            abort.eq(self.bus.abort),
            start.eq(self.bus.start),
            start_load.eq(self.bus.start_op == int(Opcode.LOAD)),
            start_read.eq(self.bus.start_op == int(Opcode.READ_WEIGHTS)),
        ]
        bad = Signal()  # a payload value outside its format

        def check(fmt: QFormat):
            with m.If(first_word):
                m.d.sync += bad.eq(out_of_range(word, fmt))
            with m.Else():
                m.d.sync += bad.eq(bad | out_of_range(word, fmt))

        # task inputs: support (x, y) pairs sample by sample, then the queries (a classifier's support
        # sample is its inputs and one word: its label)
        cls = dp.cls
        per = cfg.n_in + (1 if cls else cfg.n_out)
        ld_k = Signal(range(max(K, Q) + 1))
        ld_f = Signal(range(per + 1))
        ld_q = Signal()  # in the query part
        k_now = Mux(first_word, 0, ld_k)
        f_now = Mux(first_word, 0, ld_f)
        q_now = Mux(first_word, 0, ld_q)
        is_x = f_now < cfg.n_in

        with m.If(abort):
            m.d.sync += bad.eq(0)
        with m.Elif(is_load):
            check(mfmt)
        with m.Elif(is_run):
            if cls:
                is_label = ~q_now & ~is_x
                bad_now = Mux(is_label, (word < 0) | (word >= cfg.n_out), out_of_range(word, act))
                with m.If(first_word):
                    m.d.sync += bad.eq(bad_now)
                with m.Else():
                    m.d.sync += bad.eq(bad | bad_now)
            else:
                check(act)

        def element_write(mem, t, row, col, value, enable):
            """Write one element (row, col) of ``t``: one-hot element enable, data on every element."""
            gr, gc = t.grid
            pos = Signal(range(max(2, t.elements)), name=f"ldpos_{t.name}")
            m.d.comb += pos.eq(_times(row & (gr - 1), gc) + (col & (gc - 1)))
            m.d.comb += [
                mem.write.addr.eq(tile_addr(t, row, col)),
                mem.write.data.eq(Cat(*([value[: mem.width]] * mem.elements))),
            ]
            with m.If(enable):
                m.d.comb += mem.write.en.eq(1 << pos)

        # weights: layer by layer, row-major [W | b], into copy 0 of the W memory
        ld_l = Signal(range(L + 1))
        ld_m = Signal(range(max(layers) + 1))
        ld_c = Signal(range(max(layers) + 2))
        l_now = Mux(first_word, 0, ld_l)
        m_now = Mux(first_word, 0, ld_m)
        c_now = Mux(first_word, 0, ld_c)
        cols_a = _const_array([layers[l] + 1 for l in range(L)] + [1])
        rows_a = _const_array(list(layers[1:]) + [1])
        with m.If(is_load):
            with m.If(c_now == cols_a[l_now] - 1):
                with m.If(m_now == rows_a[l_now] - 1):
                    m.d.sync += [ld_l.eq(l_now + 1), ld_m.eq(0), ld_c.eq(0)]
                with m.Else():
                    m.d.sync += [ld_l.eq(l_now), ld_m.eq(m_now + 1), ld_c.eq(0)]
            with m.Else():
                m.d.sync += [ld_l.eq(l_now), ld_m.eq(m_now), ld_c.eq(c_now + 1)]
        wmem = mems["W"]
        ld_waddr = Signal.like(wmem.write.addr)
        ld_wpos = Signal(range(max(2, wmem.elements)))
        with m.Switch(l_now):
            for l in range(L):
                with m.Case(l):
                    t = wts[l]
                    gr, gc = t.grid
                    m.d.comb += [
                        ld_waddr.eq(tile_addr(t, m_now, c_now)),
                        ld_wpos.eq(_times(m_now & (gr - 1), gc) + (c_now & (gc - 1))),
                    ]
        ld_wen = is_load & ~out_of_range(word, mfmt)

        with m.If(is_run):
            rec = Mux(q_now, cfg.n_in, per)
            with m.If(f_now == rec - 1):
                with m.If(~q_now & (k_now == K - 1)):
                    m.d.sync += [ld_q.eq(1), ld_k.eq(0), ld_f.eq(0)]
                with m.Else():
                    m.d.sync += [ld_q.eq(q_now), ld_k.eq(k_now + 1), ld_f.eq(0)]
            with m.Else():
                m.d.sync += [ld_q.eq(q_now), ld_k.eq(k_now), ld_f.eq(f_now + 1)]
        element_write(mems["A0"], T["A0"], f_now, k_now, word, is_run & ~q_now & is_x)
        if cls:
            # the labels, one per support sample, for the softmax unit
            NWL = max(1, (cfg.n_out - 1).bit_length())
            labels = Memory(shape=unsigned(NWL), depth=max(K, 1), init=[])
            m.submodules.labels = labels
            lwp = labels.write_port()
            m.d.comb += [lwp.addr.eq(k_now), lwp.data.eq(word[:NWL]), lwp.en.eq(is_run & ~q_now & ~is_x)]
            dp.add(labels=labels)
        else:
            element_write(mems["Y"], T["Y"], f_now - cfg.n_in, k_now, word, is_run & ~q_now & ~is_x)
        element_write(mems["Q0"], T["Q0"], f_now, k_now, word, is_run & q_now)

        dp.add(bad=bad, ld_waddr=ld_waddr, ld_wen=ld_wen, ld_wpos=ld_wpos, start=start, start_load=start_load,
               start_read=start_read)
        dp.add(wmem=wmem, word=word)

    def _sequencer(self, dp: CoreParts):
        """The job table and the issue stage: job, tile coordinates and the cycle count of a run."""
        J, NS, bad, cfg, jobs, m, sch, start = dp.J, dp.NS, dp.bad, dp.cfg, dp.jobs, dp.m, dp.sch, dp.start
        start_load = dp.start_load
        gap_first, gap_later, gap_query = sch.gaps()
        pm_a = _const_array([j.shape.pm for j in jobs])
        pn_a = _const_array([j.shape.pn for j in jobs])
        pr_a = _const_array([j.shape.pr for j in jobs])
        mlast_a = _const_array([max(0, j.M - j.shape.pm) for j in jobs])
        nlast_a = _const_array([max(0, j.N - j.shape.pn) for j in jobs])
        rlast_a = _const_array([max(0, j.R - j.shape.pr) for j in jobs])
        inner_m_a = _const_array([j.inner == "m" for j in jobs], 1)
        g1_a = _const_array(list(gap_first) + list(gap_query))
        g2_a = _const_array(list(gap_later) + list(gap_query))

        # ---------------- sequencer (issue stage) ----------------
        running = Signal()
        busy = Signal()
        jj = Signal(range(J + 1))
        step = Signal(range(cfg.steps + 2))
        in_query = Signal()
        gapc = Signal(range(max(2, max(list(gap_first) + list(gap_later) + list(gap_query)) + 1)))
        MX = max(max(j.M for j in jobs), 2)
        NX = max(max(j.N for j in jobs), 2)
        RX = max(max(j.R for j in jobs), 2)
        m0 = Signal(range(2 * MX))
        n0 = Signal(range(2 * NX))
        r0 = Signal(range(2 * RX))
        use_w0 = Signal()
        status = Signal(8)
        cycles = Signal(32)
        last_cycles = Signal(32)
        done_r = Signal()
        m.d.comb += [self.bus.done.eq(done_r), self.bus.done_status.eq(status),
                     self.bus.last_cycles.eq(last_cycles), self.busy.eq(busy)]
        m.d.sync += done_r.eq(0)

        issue = Signal()
        last_r = Signal()
        last_m = Signal()
        last_n = Signal()
        final = Signal()
        m.d.comb += [
            issue.eq(running & (gapc == 0)),
            last_r.eq(r0 >= rlast_a[jj]),
            last_m.eq(m0 >= mlast_a[jj]),
            last_n.eq(n0 >= nlast_a[jj]),
            final.eq(in_query & (jj == J - 1) & last_r & last_m & last_n),
        ]

        def enter_job(idx, first_step):
            if isinstance(first_step, bool):
                gap = g1_a[idx] if first_step else g2_a[idx]
            else:
                gap = Mux(first_step, g1_a[idx], g2_a[idx])
            m.d.sync += [jj.eq(idx), m0.eq(0), n0.eq(0), r0.eq(0), gapc.eq(gap)]

        # the W copy 1 holds adapted weights: a RUN has started since the last LOAD (READ_WEIGHTS)
        adapted_valid = Signal()
        with m.If(start & dp.start_read):
            m.d.sync += status.eq(Status.OK)  # answered by the read-back (_readback) when its words are ready
        with m.Elif(start):
            m.d.sync += cycles.eq(1)
            with m.If(bad):
                m.d.sync += [status.eq(Status.BAD_VALUE), done_r.eq(1), bad.eq(0)]
            with m.Elif(start_load):
                m.d.sync += [status.eq(Status.OK), done_r.eq(1), adapted_valid.eq(0)]
            with m.Else():
                m.d.sync += [status.eq(Status.OK), running.eq(1), busy.eq(1), step.eq(0), use_w0.eq(1),
                             adapted_valid.eq(1)]
                if cfg.steps > 0:
                    m.d.sync += in_query.eq(0)
                    enter_job(0, True)
                else:
                    m.d.sync += in_query.eq(1)
                    enter_job(NS, True)
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(running & (gapc != 0)):
            m.d.sync += gapc.eq(gapc - 1)
        with m.If(issue):
            with m.If(~last_r):
                m.d.sync += r0.eq(r0 + pr_a[jj])
            with m.Else():
                m.d.sync += r0.eq(0)
                job_end = Signal()
                m.d.comb += job_end.eq(last_m & last_n)
                with m.If(inner_m_a[jj]):
                    with m.If(~last_m):
                        m.d.sync += m0.eq(m0 + pm_a[jj])
                    with m.Elif(~last_n):
                        m.d.sync += [m0.eq(0), n0.eq(n0 + pn_a[jj])]
                with m.Else():
                    with m.If(~last_n):
                        m.d.sync += n0.eq(n0 + pn_a[jj])
                    with m.Elif(~last_m):
                        m.d.sync += [n0.eq(0), m0.eq(m0 + pm_a[jj])]
                with m.If(job_end):
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

        dp.add(adapted_valid=adapted_valid, busy=busy, cycles=cycles, done_r=done_r, final=final, issue=issue,
               jj=jj)
        dp.add(last_cycles=last_cycles, last_m=last_m, last_n=last_n, last_r=last_r, m0=m0, n0=n0, r0=r0, use_w0=use_w0)

    def _issue(self, dp: CoreParts):
        """Issue stage c: read addresses and selector codes; the control pipeline that follows every issue."""
        J, MAXL, T, final, issue, jj, jobs = dp.J, dp.MAXL, dp.T, dp.final, dp.issue, dp.jj, dp.jobs
        last_r, levels, local_code, m, m0, mems = dp.last_r, dp.levels, dp.local_code, dp.m, dp.m0, dp.mems
        n0, r0, tile_addr, use_w0 = dp.n0, dp.r0, dp.tile_addr, dp.use_w0
        coord = {"m": m0, "n": n0, "r": r0}
        issue_mems = ["W"] + [n for n in mems if not n.startswith("P") and n != "W"]
        addr0 = {n: Signal.like(mems[n].reads[0].addr, name=f"raddr0_{n.lower()}") for n in issue_mems}
        LXW = 1
        LYW = 1
        for j in jobs:
            if j.x is not None:
                t = T[j.x.tensor]
                LXW = max(LXW, _log2(t.grid[0] // j.x.rows) + _log2(t.grid[1] // j.x.cols))
            for a in j.y:
                t = T[a.tensor]
                LYW = max(LYW, _log2(t.grid[0] // a.rows) + _log2(t.grid[1] // a.cols))
        xloc0 = Signal(LXW)
        yloc0 = Signal(LYW)
        with m.Switch(jj):
            for idx, job in enumerate(jobs):
                with m.Case(idx):
                    if job.x is None:  # error: lr_eff on the diagonal m == r
                        m.d.comb += xloc0.eq(m0 == r0)
                    else:
                        t = T[job.x.tensor]
                        row, col = coord[job.x.row], coord[job.x.col]
                        copy = ~use_w0 if t.memory == "W" else None
                        if t.memory == "W" and job.layer not in dp.adapted:
                            copy = None  # a layer the inner loop does not adapt: its loaded weights
                        m.d.comb += [addr0[t.memory].eq(tile_addr(t, row, col, copy)),
                                     xloc0.eq(local_code(job.x, t, row, col))]
                    for a in job.y:
                        t = T[a.tensor]
                        row, col = coord[a.row], coord[a.col]
                        m.d.comb += [addr0[t.memory].eq(tile_addr(t, row, col)),
                                     yloc0.eq(local_code(a, t, row, col))]

        # ---------------- control pipeline ----------------
        ctl_fields = {
            "valid": 1, "jj": range(J + 1), "m0": m0.shape(), "n0": n0.shape(),
            "first": 1, "last": 1, "final": 1, "w0": 1, "lvl": len(levels), "jobend": 1,
        }
        lvl_a = _const_array([1 << levels.index(j.shape.level) for j in jobs], len(levels))
        NCTL = product_stage() + MAXL + 1
        ctl = [None] + [_Pipe(ctl_fields, f"s{k}") for k in range(1, NCTL + 1)]
        m.d.sync += [
            ctl[1].valid.eq(issue), ctl[1].jj.eq(jj), ctl[1].m0.eq(m0), ctl[1].n0.eq(n0),
            ctl[1].first.eq(r0 == 0), ctl[1].last.eq(last_r), ctl[1].final.eq(issue & final),
            ctl[1].w0.eq(use_w0), ctl[1].lvl.eq(lvl_a[jj]),
            ctl[1].jobend.eq(issue & last_r & dp.last_m & dp.last_n),
        ]
        for k in range(2, NCTL + 1):
            m.d.sync += ctl[k].eq(ctl[k - 1])

        # stage c+1: addresses at the read ports
        for n in issue_mems:
            if n != "W" or not dp.sch.shared_w_port:  # (a shared weight port: set with the old-weight reads)
                mems[n].read_next(0, addr0[n])  # registered, one copy per physical part of the memory
        xloc1, yloc1 = Signal.like(xloc0, name="xloc1"), Signal.like(yloc0, name="yloc1")
        xloc2, yloc2 = Signal.like(xloc0, name="xloc2"), Signal.like(yloc0, name="yloc2")
        xloc3, yloc3 = Signal.like(xloc0, name="xloc3"), Signal.like(yloc0, name="yloc3")
        m.d.sync += [xloc1.eq(xloc0), yloc1.eq(yloc0), xloc2.eq(xloc1), yloc2.eq(yloc1),
                     xloc3.eq(xloc2), yloc3.eq(yloc2)]

        dp.add(LXW=LXW, LYW=LYW, addr0=addr0, ctl=ctl, ctl_fields=ctl_fields, xloc2=xloc2, xloc3=xloc3)
        dp.add(yloc2=yloc2)
        dp.add(yloc3=yloc3)

    def _operands(self, dp: CoreParts):
        """c+3: the X and Y tiles extracted from the registered memory words; c+4: the lane operands."""
        LXW, LYW, P, T, TX, TY, XW, YW, cfg = dp.LXW, dp.LYW, dp.P, dp.T, dp.TX, dp.TY, dp.XW, dp.YW, dp.cfg
        ctl, jobs, lr_code, m, mems, mfmt = dp.ctl, dp.jobs, dp.lr_code, dp.m, dp.mems, dp.mfmt
        offsets, shape_id, shapes, wfmt, xloc2 = dp.offsets, dp.shape_id, dp.shapes, dp.wfmt, dp.xloc2
        xloc3, yloc2, yloc3 = dp.xloc3, dp.yloc2, dp.yloc3
        lr_const = Const(lr_code, signed(XW))

        def weight_operand(mem, e):
            v = mem.element_of(0, e)
            if mfmt != wfmt:
                v = resize(v, mfmt, wfmt, cfg.weight_read_rounding, Overflow.SATURATE)
            return v

        X3 = [Signal(signed(XW), name=f"x3_{x}") for x in range(TX)]
        Y3 = [Signal(signed(YW), name=f"y3_{y}") for y in range(TY)]
        xch = [[] for _ in range(TX)]
        ych = [[] for _ in range(TY)]
        jj3 = ctl[3].jj
        for idx, job in enumerate(jobs):
            s = job.shape
            if job.x is None:
                xch[0] += [(1 | (idx << LXW), ("lr",), lr_const), (0 | (idx << LXW), ("zero",), Const(0))]
            else:
                t = T[job.x.tensor]
                mem = mems[t.memory]
                for loc, ro, co in offsets(job, job.x, t):
                    for i in range(s.pm):
                        for k in range(s.pr):
                            a, b = (k, i) if job.kind == BACKWARD else (i, k)
                            pos = (ro + a) * t.grid[1] + co + b
                            expr = weight_operand(mem, pos) if t.memory == "W" else mem.element_of(0, pos)
                            xch[i * s.pr + k].append((loc | (idx << LXW), (t.memory, pos), expr))
            ref = job.y[0]
            t = T[ref.tensor]
            for loc, ro, co in offsets(job, ref, t):
                for k in range(s.pr):
                    for j in range(s.pn):
                        a, b = (j, k) if job.kind == UPDATE else (k, j)
                        pos = (ro + a) * t.grid[1] + co + b
                        if job.kind == ERROR and "Y" in mems:
                            expr = mems[t.memory].element_of(0, pos) - mems["Y"].element_of(0, pos)
                            key = ("err", pos)
                        else:
                            expr = mems[t.memory].element_of(0, pos)
                            key = (t.memory, pos)
                        ych[k * s.pn + j].append((loc | (idx << LYW), key, expr))
        xsel3, ysel3 = Cat(xloc3, jj3), Cat(yloc3, jj3)
        xsel2, ysel2 = Cat(xloc2, ctl[2].jj), Cat(yloc2, ctl[2].jj)  # the same, a cycle earlier
        for x in range(TX):
            _select(m, X3[x], xsel3, xch[x], early=xsel2)
        for y in range(TY):
            _select(m, Y3[y], ysel3, ych[y], early=ysel2)

        # ---------------- c+4: lane operands ----------------
        shp_a = _const_array([shape_id[j.shape] for j in jobs])
        shp3 = Signal(range(max(2, len(shapes))))
        m.d.sync += shp3.eq(shp_a[ctl[3].jj])
        shp2 = Signal.like(shp3)  # shp3's next value, for the lanes' own choice codes
        m.d.comb += shp2.eq(shp_a[ctl[3].jj])
        # the lane operands, as the values registered at c+4 (the multiplier's input registers)
        x4 = [Signal(signed(XW), name=f"x4_next{p}") for p in range(P)]
        y4 = [Signal(signed(YW), name=f"y4_next{p}") for p in range(P)]
        for p in range(P):
            xc, yc = [], []
            for s, sid in shape_id.items():
                if p >= s.pm * s.pn * s.pr:
                    continue
                i, rest = divmod(p, s.pn * s.pr)
                j, k = divmod(rest, s.pr)
                xc.append((sid, i * s.pr + k, X3[i * s.pr + k]))
                yc.append((sid, k * s.pn + j, Y3[k * s.pn + j]))
            _select(m, x4[p], shp3, xc, domain="comb", early=shp2)
            _select(m, y4[p], shp3, yc, domain="comb", early=shp2)

        dp.add(x4=x4, y4=y4)

    def _lanes(self, dp: CoreParts):
        """c+4: one registered product per lane; c+5..: the adder tree."""
        MAXL, P, XW, YW, m, platform, x4, y4 = dp.MAXL, dp.P, dp.XW, dp.YW, dp.m, dp.platform, dp.x4, dp.y4
        tree = [[registered_product(m, platform, x4[p], y4[p], name=f"prod5_{p}") for p in range(P)]]
        assert all(t.shape() == signed(XW + YW) for t in tree[0])
        for lvl in range(1, MAXL + 1):
            prev = tree[-1]
            cur = [Signal(signed(len(prev[0]) + 1), name=f"tree{lvl}_{q}", reset_less=True)  # data only
                   for q in range(len(prev) // 2)]
            m.d.sync += [cur[q].eq(prev[2 * q] + prev[2 * q + 1]) for q in range(len(cur))]
            tree.append(cur)

        dp.add(tree=tree)

    def _accumulators(self, dp: CoreParts):
        """The accumulators: which tree level reaches them in a cycle, and the sums of a pass (cycle A)."""
        AW, NACC, P, ctl, ctl_fields, levels, m = dp.AW, dp.NACC, dp.P, dp.ctl, dp.ctl_fields, dp.levels, dp.m
        tree = dp.tree
        # which tree level reaches the accumulators this cycle (``hit``), and that pass's control
        # fields (``hctl``): decoded from the control pipeline a stage early and registered, so
        # that only registers drive the accumulators' input selection and carry chains
        hit, hit_early = {}, {}
        for li, lvl in enumerate(levels):
            c_ = ctl[product_stage() + lvl - 1]
            h, he = Signal(name=f"acc_hit{lvl}"), Signal(name=f"acc_hit_early{lvl}")
            m.d.comb += he.eq(c_.valid & c_.lvl[li])
            m.d.sync += h.eq(he)
            hit[lvl], hit_early[lvl] = h, he
        any_hit = Signal()
        m.d.sync += any_hit.eq(Cat(*hit_early.values()).any())
        hctl = _Pipe(ctl_fields, "hit")
        for name, sig in hctl.f.items():
            v = Const(0, sig.shape())
            for lvl in levels:
                v = Mux(hit_early[lvl], getattr(ctl[product_stage() + lvl - 1], name), v)
            m.d.sync += sig.eq(v)
        # the sum of a pass stays in its accumulator during cycle A (the next accumulation of
        # any later issue comes at the end of A or later): post-processing reads it there
        acc = [Signal(signed(AW), name=f"acc{a}") for a in range(NACC)]
        for a in range(NACC):
            val = Const(0, signed(AW))
            for lvl in levels:
                if a < (P >> lvl):
                    val = Mux(hit[lvl], tree[lvl][a], val)
            nxt = Signal(signed(AW), name=f"accnext{a}")
            m.d.comb += nxt.eq((Mux(hctl.first, 0, acc[a]) + val)[:AW])
            with m.If(any_hit):
                m.d.sync += acc[a].eq(nxt)
        rctl = _Pipe(ctl_fields, "res")  # valid during A (= accumulate_stage after the pass's last issue)
        m.d.sync += rctl.eq(hctl)
        m.d.sync += rctl.valid.eq(any_hit & hctl.last)
        assert accumulate_stage(0) == product_stage() + 1

        dp.add(acc=acc, any_hit=any_hit, hctl=hctl, rctl=rctl)

    def _post_control(self, dp: CoreParts):
        """Post-processing: result formats per job kind and the control of stages A+1 .. A+3."""
        AW, L, accf, act, cfg, ctl_fields, gfmt = dp.AW, dp.L, dp.accf, dp.act, dp.cfg, dp.ctl_fields, dp.gfmt
        jobs, m, mfmt, prod_frac, rctl = dp.jobs, dp.m, dp.mfmt, dp.prod_frac, dp.rctl
        kind_a = _const_array([_KIND[j.kind] for j in jobs])
        upd_fmt = QFormat(accf.int_bits + 1, mfmt.frac_bits)
        targets = {  # kind -> (destination format, rounding, overflow)
            FORWARD: (act, cfg.forward_rounding, Overflow.SATURATE),
            ERROR: (gfmt, cfg.error_rounding, Overflow.SATURATE),
            BACKWARD: (gfmt, cfg.backward_rounding, Overflow.SATURATE),
            UPDATE: (upd_fmt, cfg.update_rounding, Overflow.WRAP),
        }
        raw_fmt = {}
        for kind, pf in prod_frac.items():
            sh = accf.frac_bits - pf
            raw_fmt[kind] = QFormat.from_width(AW - sh, pf)
        kinds_present = sorted({j.kind for j in jobs}, key=lambda k: _KIND[k])

        p1ctl, p2ctl, p3ctl = (_Pipe(ctl_fields, f"p{i}") for i in (1, 2, 3))
        m.d.sync += [p1ctl.eq(rctl), p2ctl.eq(p1ctl), p3ctl.eq(p2ctl)]
        kind0, kind1, kind2 = Signal(2), Signal(2), Signal(2)
        layer_a = _const_array([j.layer for j in jobs])
        hidden2 = Signal()
        m.d.comb += [kind0.eq(kind_a[rctl.jj]), kind1.eq(kind_a[p1ctl.jj]), kind2.eq(kind_a[p2ctl.jj]),
                     hidden2.eq(layer_a[p2ctl.jj] < L - 1 if L > 1 else 0)]

        dp.add(hidden2=hidden2, kind0=kind0, kind1=kind1, kind2=kind2, kinds_present=kinds_present, p1ctl=p1ctl)
        dp.add(p2ctl=p2ctl, p3ctl=p3ctl, raw_fmt=raw_fmt, targets=targets)

    def _post_addresses(self, dp: CoreParts):
        """Reads of ReLU masks and old weights in A; output tile codes, write addresses and valid mask."""
        NACC, T, hctl, jobs, local_code, m, mems = dp.NACC, dp.T, dp.hctl, dp.jobs, dp.local_code, dp.m, dp.mems
        p1ctl, p2ctl, rctl, tile_addr, wmem = dp.p1ctl, dp.p2ctl, dp.rctl, dp.tile_addr, dp.wmem
        # ReLU masks (backward) and old weights (update) are read in cycle A; their registered
        # data is there in A+2, for the last post-processing stage. Their addresses are computed
        # from the control a cycle before A (rctl is hctl registered) and registered in one copy
        # per part of the memory (read_next), so the tile-address adders do not share a cycle with
        # the route to the LUT or block RAMs
        def aux_read(mem, port, name, tile_of, shared=None):
            """Port ``port`` of ``mem`` reads, in A, the tile ``tile_of(job)`` = (tensor, copy) or None.
            ``shared``: the port's issue address, which it takes in every cycle without such a read."""
            nxt = Signal.like(mem.reads[port].addr, name=name)
            active = Signal(name=f"{name}_active")
            with m.Switch(hctl.jj):
                for idx, job in enumerate(jobs):
                    tile = tile_of(job)
                    if tile is not None:
                        with m.Case(idx):
                            m.d.comb += [nxt.eq(tile_addr(tile[0], hctl.m0, hctl.n0, tile[1])),
                                         active.eq(dp.any_hit & hctl.last)]
            mem.read_next(port, nxt if shared is None else Mux(active, nxt, shared))

        pos_mems = [n for n in mems if n.startswith("P")]
        for n in pos_mems:
            aux_read(mems[n], 0, f"paux_next_{n.lower()}",
                     lambda job, n=n: (T[n], None) if job.aux is not None and job.aux.tensor == n else None)
        # the old weights: at a second read port, or (a schedule with a shared weight port) at the issue's
        # port in the cycles the schedule keeps free of issue reads of W
        shared = dp.sch.shared_w_port
        aux_read(wmem, 0 if shared else 1, "waux_next",
                 lambda job: (T[job.aux.tensor], ~hctl.w0) if job.kind == UPDATE else None,
                 shared=dp.addr0["W"] if shared else None)
        assert aux_read_offset(BACKWARD, 0) == accumulate_stage(0)
        assert aux_read_offset(UPDATE, 0) == accumulate_stage(0)

        def out_local(job, t, m0_, n0_):
            o = job.outs[0]
            return local_code(o, t, m0_, n0_)

        OLW = 1
        for j in jobs:
            for o in j.outs + ((j.aux,) if j.aux is not None else ()):
                t = T[o.tensor]
                OLW = max(OLW, _log2(t.grid[0] // o.rows) + _log2(t.grid[1] // o.cols))
        oloc1 = Signal(OLW)
        with m.Switch(rctl.jj):
            for idx, job in enumerate(jobs):
                with m.Case(idx):
                    t = T[job.outs[0].tensor]
                    m.d.comb += oloc1.eq(out_local(job, t, rctl.m0, rctl.n0))
        oloc2, oloc3, oloc4 = Signal(OLW), Signal(OLW), Signal(OLW)
        m.d.sync += [oloc2.eq(oloc1), oloc3.eq(oloc2), oloc4.eq(oloc3)]
        # the auxiliary tile's own code (its matrix may have another grid than the output's)
        aloc1 = Signal(OLW)
        with m.Switch(rctl.jj):
            for idx, job in enumerate(jobs):
                if job.aux is not None:
                    with m.Case(idx):
                        m.d.comb += aloc1.eq(local_code(job.aux, T[job.aux.tensor], rctl.m0, rctl.n0))
        aloc2, aloc3 = Signal(OLW), Signal(OLW)
        m.d.sync += [aloc2.eq(aloc1), aloc3.eq(aloc2)]
        # the output tile's address is computed at A+2 and registered for the write in A+3
        out_mems = sorted({T[o.tensor].memory for j in jobs for o in j.outs})
        # (the memories other than W take it in one register copy per part: write_next)
        oaddr2 = {n: Signal.like(mems[n].write.addr, name=f"waddr2_{n.lower()}") for n in out_mems}
        with m.Switch(p2ctl.jj):
            for idx, job in enumerate(jobs):
                with m.Case(idx):
                    for o in job.outs:
                        t = T[o.tensor]
                        copy = Const(1) if t.memory == "W" else None
                        m.d.comb += oaddr2[t.memory].eq(tile_addr(t, p2ctl.m0, p2ctl.n0, copy))
        oaddr3 = {}
        for n in out_mems:
            if n == "W":
                oaddr3[n] = Signal.like(mems[n].write.addr, name=f"waddr3_{n.lower()}")
                m.d.sync += oaddr3[n].eq(oaddr2[n])
            else:
                mems[n].write_next(oaddr2[n])

        # output element validity (ragged tiles): decoded from the pass's control at A+1,
        # registered twice (its compares stay off the write-back's cycle)
        vmask2, vmask3 = Signal(NACC), Signal(NACC)
        with m.Switch(p1ctl.jj):
            for idx, job in enumerate(jobs):
                with m.Case(idx):
                    s = job.shape
                    vm = Signal(range(s.pm + 1), name=f"vm_{idx}")
                    vn = Signal(range(s.pn + 1), name=f"vn_{idx}")
                    m.d.comb += [
                        vm.eq(Mux(p1ctl.m0 + s.pm > job.M, job.M - p1ctl.m0, s.pm)),
                        vn.eq(Mux(p1ctl.n0 + s.pn > job.N, job.N - p1ctl.n0, s.pn)),
                    ]
                    bits = [((a // s.pn) < vm) & ((a % s.pn) < vn) if a < s.pm * s.pn else Const(0)
                            for a in range(NACC)]
                    m.d.sync += vmask2.eq(Cat(*bits))
        m.d.sync += vmask3.eq(vmask2)

        dp.add(OLW=OLW, aloc2=aloc2, aloc3=aloc3, oaddr3=oaddr3, oloc3=oloc3, oloc4=oloc4, out_mems=out_mems)
        dp.add(pos_mems=pos_mems, vmask3=vmask3)

    def _aux_operands(self, dp: CoreParts):
        """Per accumulator: the auxiliary element (ReLU mask bit or old weight) of the pass at A+2."""
        NACC, OLW, T, aloc2, aloc3, jobs, m = dp.NACC, dp.OLW, dp.T, dp.aloc2, dp.aloc3, dp.jobs, dp.m
        mems, mfmt, offsets, p1ctl, p2ctl = dp.mems, dp.mfmt, dp.offsets, dp.p1ctl, dp.p2ctl
        pos_mems = dp.pos_mems
        def aux_elements(mem_names, ctl_, loc, port, early):
            """Per accumulator: the auxiliary element (mask bit or old weight) of the pass in ``ctl_``
            (``early``: the selector a cycle before, for the choice codes decoded ahead)."""
            outs = []
            for a in range(NACC):
                choices = []
                for idx, job in enumerate(jobs):
                    if job.aux is None or T[job.aux.tensor].memory not in mem_names:
                        continue
                    s = job.shape
                    if a >= s.pm * s.pn:
                        continue
                    t = T[job.aux.tensor]
                    mem = mems[t.memory]
                    i, j = divmod(a, s.pn)
                    for lc, ro, co in offsets(job, job.aux, t):
                        pos = (ro + i) * t.grid[1] + co + j
                        choices.append((lc | (idx << OLW), (t.memory, pos), mem.element_of(port, pos)))
                if choices:
                    shape = unsigned(1) if mem_names == pos_mems else signed(mfmt.width)
                    sig = Signal(shape, name=f"aux_{port}_{a}")
                    _select(m, sig, Cat(loc, ctl_.jj), choices, domain="comb", early=early)
                    outs.append(sig)
                else:
                    outs.append(None)
            return outs

        # (their choice of element decoded a cycle ahead, from the selector of A+1: the decode of
        # the pass's job and tile position sat in front of the update's subtraction)
        aux_early = Cat(aloc2, p1ctl.jj)
        mask3 = aux_elements(pos_mems, p2ctl, aloc3, 0, aux_early) if pos_mems else [None] * NACC
        wold3 = aux_elements(["W"], p2ctl, aloc3, 0 if dp.sch.shared_w_port else 1, aux_early)

        dp.add(mask3=mask3, wold3=wold3)

    def _round_saturate(self, dp: CoreParts):
        """A -> A+3: rounding, saturation, ReLU and mask; the update's subtraction from the old weight."""
        L, NACC, acc, act, gfmt, hidden2, kind0 = dp.L, dp.NACC, dp.acc, dp.act, dp.gfmt, dp.hidden2, dp.kind0
        kind1, kind2, kinds_present, m, mask3 = dp.kind1, dp.kind2, dp.kinds_present, dp.m, dp.mask3
        mfmt, raw_fmt, targets, wold3 = dp.mfmt, dp.raw_fmt, dp.targets, dp.wold3
        # Saturation never compares wide values: a code fits ``n`` bits when its bits from
        # ``n-1`` up are all equal. Post 1 keeps ``n+1`` bits of the shifted code and a flag
        # for "far out of range", so the rounding adder and the update's subtraction are narrow.
        # Kinds whose rounding drops the same number of bits share the shifted bits.
        mw = mfmt.width
        nbits = {k: (mw + 1 if k == UPDATE else targets[k][0].width) for k in kinds_present}
        NQ = max(nbits.values()) + 1
        drop = {k: raw_fmt[k].frac_bits - targets[k][0].frac_bits for k in kinds_present}
        qn1 = [Signal(signed(NQ), name=f"qn1_{a}") for a in range(NACC)]
        up1 = [Signal(name=f"up1_{a}") for a in range(NACC)]
        big1 = [Signal(name=f"big1_{a}") for a in range(NACC)]
        sgn1 = [Signal(name=f"sgn1_{a}") for a in range(NACC)]
        v2 = [Signal(signed(NQ + 1), name=f"v2_{a}") for a in range(NACC)]
        big2 = [Signal(name=f"big2_{a}") for a in range(NACC)]
        sgn2 = [Signal(name=f"sgn2_{a}") for a in range(NACC)]
        OW = max(act.width, gfmt.width, mfmt.width)
        out3 = [Signal(signed(OW), name=f"out3_{a}") for a in range(NACC)]
        sat_widths = sorted({targets[k][0].width for k in kinds_present if k != UPDATE})
        for a in range(NACC):
            # A -> A+1: shifted bits, rounding increment, range flag
            parts = {}  # (drop, rounding, sign-extension bit if inside the slice) -> kinds
            for kind in kinds_present:
                rf = raw_fmt[kind]
                d = drop[kind]
                inside = max(d, 0) + NQ <= rf.width
                key = (d, targets[kind][1] if d > 0 else None, None if inside else rf.width)
                parts.setdefault(key, []).append(kind)
            qsel = Signal(signed(NQ), name=f"qsel_{a}")
            usel = Signal(name=f"usel_{a}")
            with m.Switch(kind0):
                for kinds in parts.values():
                    rf = raw_fmt[kinds[0]]
                    raw = acc[a][: rf.width].as_signed()
                    q, up = round_shift_parts(raw, rf.frac_bits - targets[kinds[0]][0].frac_bits, targets[kinds[0]][1])
                    with m.Case(*[_KIND[k] for k in kinds]):
                        m.d.comb += [qsel.eq(q[:NQ].as_signed()), usel.eq(up)]
            m.d.sync += [qn1[a].eq(qsel), up1[a].eq(usel)]
            with m.Switch(kind0):
                for kind in kinds_present:
                    rf = raw_fmt[kind]
                    q = acc[a][: rf.width].as_signed() >> drop[kind] if drop[kind] > 0 else \
                        acc[a][: rf.width].as_signed() << -drop[kind]
                    with m.Case(_KIND[kind]):
                        m.d.sync += [big1[a].eq(~fits(q, nbits[kind] + 1)), sgn1[a].eq(acc[a][rf.width - 1])]
            # A+1 -> A+2: round and saturate (the update keeps its exact rounded value)
            v = Signal(signed(NQ + 1), name=f"v_{a}")
            m.d.comb += v.eq(qn1[a] + up1[a])
            neg = Mux(big1[a], sgn1[a], v[-1])
            m.d.sync += [big2[a].eq(big1[a]), sgn2[a].eq(Mux(kind1 == _KIND[UPDATE], sgn1[a], neg))]
            sat = {}
            for w in sat_widths:
                dst = QFormat.from_width(w, 0)
                sat[w] = clamp(v, ~big1[a] & fits(v, w), neg, dst)
            with m.Switch(kind1):
                for kind in kinds_present:
                    with m.Case(_KIND[kind]):
                        m.d.sync += v2[a].eq(v if kind == UPDATE else sat[targets[kind][0].width])
            # A+2 -> A+3: ReLU and mask; the update's subtraction from the old weight, saturated
            zero = Const(0, 1)
            if FORWARD in kinds_present and L > 1:
                zero = zero | ((kind2 == _KIND[FORWARD]) & hidden2 & sgn2[a])
            if mask3[a] is not None:
                zero = zero | ((kind2 == _KIND[BACKWARD]) & ~mask3[a])
            with m.If(kind2 == _KIND[UPDATE]):
                if wold3[a] is not None:
                    diff = Signal(signed(NQ + 3), name=f"diff_{a}")
                    m.d.comb += diff.eq(wold3[a] - v2[a])
                    far = Mux(sgn2[a], mfmt.max_code, mfmt.min_code)
                    m.d.sync += out3[a].eq(Mux(big2[a], far,
                                               clamp(diff, fits(diff, mw), diff[-1], mfmt)))
            with m.Else():
                m.d.sync += out3[a].eq(Mux(zero, 0, v2[a]))

        dp.add(out3=out3)

    def _write_back(self, dp: CoreParts):
        """A+3: the output tile written (and the weight memory's LOAD writes)."""
        OLW, T, jobs, ld_waddr, ld_wen, ld_wpos = dp.OLW, dp.T, dp.jobs, dp.ld_waddr, dp.ld_wen, dp.ld_wpos
        m, mems, oaddr3, offsets, oloc3, oloc4 = dp.m, dp.mems, dp.oaddr3, dp.offsets, dp.oloc3, dp.oloc4
        out3, out_mems, p2ctl, p3ctl, vmask3 = dp.out3, dp.out_mems, dp.p2ctl, dp.p3ctl, dp.vmask3
        wmem, word = dp.wmem, dp.word
        wvalid = p3ctl.valid
        wsel = Cat(oloc4, p3ctl.jj)
        wsel_early = Cat(oloc3, p2ctl.jj)  # the same, a cycle earlier: each element's choice is decoded ahead
        upd_write = Signal()
        for n in out_mems:
            mem = mems[n]
            en_bits = []
            for e in range(mem.elements):
                dch, ech = [], []
                for idx, job in enumerate(jobs):
                    for o in job.outs:
                        t = T[o.tensor]
                        if t.memory != n:
                            continue
                        s = job.shape
                        for lc, ro, co in offsets(job, o, t):
                            r_, c_ = divmod(e, t.grid[1])
                            i, j = r_ - ro, c_ - co
                            if 0 <= i < s.pm and 0 <= j < s.pn and e < t.elements:
                                a = i * s.pn + j
                                pat = lc | (idx << OLW)
                                value = (out3[a] > 0) if n.startswith("P") else out3[a][: mem.width]
                                dch.append((pat, ("a", a, n.startswith("P")), value))
                                ech.append((pat, ("v", a), vmask3[a]))
                d = Signal(mem.width, name=f"wd_{n.lower()}_{e}")
                en = Signal(name=f"we_{n.lower()}_{e}")
                _select(m, d, wsel, dch, domain="comb", early=wsel_early)
                if ech:
                    _select(m, en, wsel, ech, domain="comb", default=Const(0), early=wsel_early)
                en_bits.append((d, en))
            data = Cat(*(d for d, _ in en_bits))
            ens = Cat(*(en for _, en in en_bits)) & Cat(*([wvalid] * mem.elements))
            if n == "W":
                m.d.comb += upd_write.eq(wvalid)
                with m.If(ld_wen):
                    m.d.comb += [wmem.write.addr.eq(ld_waddr),
                                 wmem.write.data.eq(Cat(*([word[: wmem.width]] * wmem.elements))),
                                 wmem.write.en.eq(1 << ld_wpos)]
                with m.Else():
                    m.d.comb += [wmem.write.addr.eq(oaddr3[n]), wmem.write.data.eq(data),
                                 wmem.write.en.eq(ens)]
            else:
                m.d.comb += [mem.write.data.eq(data), mem.write.en.eq(ens)]

        dp.add(wvalid=wvalid)

    def _response(self, dp: CoreParts):
        """The query predictions, the done pulse and the response payload."""
        J, Q, act, busy, cfg, cycles, done_r = dp.J, dp.Q, dp.act, dp.busy, dp.cfg, dp.cycles, dp.done_r
        jobs, last_cycles, m, out3, p3ctl, sch = dp.jobs, dp.last_cycles, dp.m, dp.out3, dp.p3ctl, dp.sch
        wvalid = dp.wvalid
        # predictions of the queries, for the response
        last_q = J - 1
        lj = jobs[last_q]
        yout = [[Signal(act.width, name=f"yout_{q}_{o}") for o in range(cfg.n_out)] for q in range(Q)]
        for q in range(Q):
            for o in range(cfg.n_out):
                s = lj.shape
                a = (o % s.pm) * s.pn + q % s.pn
                with m.If(wvalid & (p3ctl.jj == last_q) & (p3ctl.m0 == o - o % s.pm)
                          & (p3ctl.n0 == q - q % s.pn)):
                    m.d.sync += yout[q][o].eq(out3[a][: act.width])

        # done: the final pass's results are written in A+3 and readable from the next cycle
        with m.If(wvalid & p3ctl.final):
            m.d.sync += [done_r.eq(1), busy.eq(0), last_cycles.eq(cycles + 1)]
        assert sch.tail == write_latency(lj.shape.level) + 1

        # response payload: query outputs, sample by sample
        rd = Signal(32)
        with m.Switch(self.bus.rd_index):
            for q in range(Q):
                for o in range(cfg.n_out):
                    with m.Case(q * cfg.n_out + o):
                        m.d.comb += rd.eq(yout[q][o].as_signed())
        dp.add(run_rd=rd)

    def _softmax(self, dp: CoreParts):
        """A classifier's softmax unit: per sample (a column of the logits) its class probabilities.

        After the support pass it writes ``E[n, k] = p_n - onehot(y_k)`` (the error job's operand);
        after the queries it writes each query's ``N`` probabilities and its class into the result
        memory. One sample at a time, on the timing of
        :class:`~metafab.hw.maml_schedule.SoftmaxTiming`; the exp table, reciprocal and
        scale-and-round are the similarity engine's units (:mod:`metafab.hw.match_units`).
        """
        K, L, Q, T, cfg, m, mems, tile_addr = dp.K, dp.L, dp.Q, dp.T, dp.cfg, dp.m, dp.mems, dp.tile_addr
        p3ctl, wvalid, labels = dp.p3ctl, dp.wvalid, dp.labels
        sm = self._sch.softmax
        N = cfg.n_out
        H, pf = cfg.mant_bits, cfg.prob_fmt
        al, almem = T[f"A{L}"], mems[f"A{L}"]
        et, emem = T["E"], mems["E"]
        NW = max(1, (N - 1).bit_length())
        cols = max(K, Q)

        # start: the cycle after the last logit of the support pass (its last forward job's last pass)
        # or of the queries (the task's final pass) is written
        go_s = Signal()
        go_q = Signal()
        m.d.comb += [go_s.eq(wvalid & p3ctl.jobend & (p3ctl.jj == L - 1)), go_q.eq(wvalid & p3ctl.final)]
        on, query = Signal(), Signal()
        k = Signal(range(cols + 1))
        t = Signal(range(sm.period))
        last_k = Signal()
        m.d.comb += last_k.eq(k == Mux(query, Q - 1, K - 1))
        with m.If(go_s | go_q):
            m.d.sync += [on.eq(1), query.eq(go_q), k.eq(0), t.eq(0)]
        with m.Elif(on):
            with m.If(t == sm.period - 1):
                m.d.sync += t.eq(0)
                with m.If(last_k):
                    m.d.sync += on.eq(0)
                with m.Else():
                    m.d.sync += k.eq(k + 1)
            with m.Else():
                m.d.sync += t.eq(t + 1)

        def phase(at: int, n: int = N):
            return on & (t >= at) & (t < at + n)

        # t = n: logit n's address at the logits' second port; t = n + 3: the logit in z3
        gr, gc = al.grid
        row = t[: max(1, (N - 1).bit_length())] if N > 1 else Const(0, 1)
        m.d.comb += almem.reads[1].addr.eq(tile_addr(al, row, k))
        pos1, pos2 = Signal(range(max(2, al.elements))), Signal(range(max(2, al.elements)))
        m.d.sync += [pos1.eq(_times(row & (gr - 1), gc) + (k & (gc - 1))), pos2.eq(pos1)]
        lw = cfg.act_fmt.width
        z3 = Signal(signed(lw))
        with m.Switch(pos2):
            for e in range(al.elements):
                with m.Case(e):
                    m.d.sync += z3.eq(almem.element_of(1, e))
        # the running maximum and argmax (the first on ties), and the logits in a shift register
        zmax = Signal(signed(lw))
        zarg = Signal(NW)
        zbuf = [Signal(signed(lw), name=f"sm_z{n}") for n in range(N)]
        capture = phase(sm.READ_TO_LOGIT)
        with m.If(capture):
            better = (t == sm.READ_TO_LOGIT) | (z3 > zmax)
            with m.If(better):
                m.d.sync += [zmax.eq(z3), zarg.eq((t - sm.READ_TO_LOGIT)[:NW])]
        with m.If(capture | phase(sm.exp_at)):
            m.d.sync += [a.eq(b) for a, b in zip(zbuf[:-1], zbuf[1:], strict=True)] + [zbuf[-1].eq(z3)]

        # t = exp_at + n: z_n - max z into the exp table; its entries summed exactly
        m.submodules.sm_exp = ex = ExpTable(config=cfg, tag_width=NW)
        m.d.comb += [ex.i.valid.eq(phase(sm.exp_at)), ex.i.payload.z.eq(zbuf[0] - zmax),
                     ex.i.payload.tag.eq((t - sm.exp_at)[:NW])]
        ew = cfg.exp_fmt.width
        sw = ew + max(1, N.bit_length())
        total = Signal(unsigned(sw))
        ebuf = [Signal(unsigned(ew), name=f"sm_e{n}") for n in range(N)]
        with m.If(ex.o.valid):
            m.d.sync += [total.eq(Mux(ex.o.payload.tag == 0, 0, total) + ex.o.payload.e)]
            m.d.sync += [a.eq(b) for a, b in zip(ebuf[:-1], ebuf[1:], strict=True)] + [ebuf[-1].eq(ex.o.payload.e)]

        # t = recip_at: the reciprocal of the sum; t = prob_at + n: p_n = round(e_n y_T 2**-(H + L_T))
        m.submodules.sm_recip = rc = RecipUnit(config=cfg, kind="recip", in_width=sw, tag_width=1)
        assert rc.LATENCY == sm.recip_latency and ex.LATENCY == sm.exp_latency
        m.d.comb += [rc.i.valid.eq(on & (t == sm.recip_at)), rc.i.payload.x.eq(total)]
        RW = len(rc.o.payload.exp)
        yT, LT = Signal(unsigned(H + 1)), Signal(RW)
        with m.If(rc.o.valid):
            m.d.sync += [yT.eq(rc.o.payload.y), LT.eq(rc.o.payload.exp)]
        prob = ScaleRound(a_shape=unsigned(ew), b_shape=unsigned(H + 1),
                          shift_width=(H - pf.frac_bits + (1 << RW) - 1).bit_length(), out_fmt=pf,
                          rounding=cfg.prob_rounding, tag_width=NW)
        m.submodules.sm_prob = prob
        assert prob.LATENCY == sm.scale_latency
        in_prob = phase(sm.prob_at)
        m.d.comb += [prob.i.valid.eq(in_prob), prob.i.payload.a.eq(ebuf[0]), prob.i.payload.b.eq(yT),
                     prob.i.payload.shift.eq(H - pf.frac_bits + LT),
                     prob.i.payload.tag.eq((t - sm.prob_at)[:NW])]
        with m.If(in_prob):
            m.d.sync += [a.eq(b) for a, b in zip(ebuf[:-1], ebuf[1:], strict=True)]

        # t = write_at + n: the support's E[n, k] = p_n - onehot(y_k), or a query's p_n
        lrp = labels.read_port()
        m.d.comb += lrp.addr.eq(k)
        n_out = prob.o.payload.tag
        p_out = prob.o.payload.value
        onehot = Mux(lrp.data == n_out, 1 << pf.frac_bits, 0)
        egr, egc = et.grid
        epos = Signal(range(max(2, et.elements)))
        m.d.comb += [
            epos.eq(_times(n_out & (egr - 1), egc) + (k & (egc - 1))),
            emem.write.addr.eq(tile_addr(et, n_out, k)),
            emem.write.data.eq(Cat(*([(p_out - onehot)[: emem.width]] * emem.elements))),
        ]
        with m.If(prob.o.valid & ~query):
            m.d.comb += emem.write.en.eq(1 << epos)
        # the result memory: per query N probabilities, then the class (read by the response)
        RWD = max(pf.width, NW)
        results = Memory(shape=unsigned(RWD), depth=Q * (N + 1), init=[])
        m.submodules.results = results
        rwp = results.write_port()
        rbase = Signal(range(Q * (N + 1) + 1))
        with m.If(go_q):
            m.d.sync += rbase.eq(0)
        with m.Elif(on & query & (t == sm.period - 1)):
            m.d.sync += rbase.eq(rbase + N + 1)
        at_class = on & query & (t == sm.class_at)
        m.d.comb += [
            rwp.addr.eq(rbase + Mux(at_class, N, n_out)),
            rwp.data.eq(Mux(at_class, zarg, p_out)),
            rwp.en.eq((prob.o.valid & query) | at_class),
        ]
        dp.add(results=results, sm_done=at_class & last_k)

    def _cls_response(self, dp: CoreParts):
        """A classifier's done pulse (the last query's class written) and the response payload."""
        busy, cycles, done_r, m = dp.busy, dp.cycles, dp.done_r, dp.m
        with m.If(dp.sm_done):
            m.d.sync += [done_r.eq(1), busy.eq(0), dp.last_cycles.eq(cycles + 1)]
        rp = dp.results.read_port(domain="comb")
        m.d.comb += rp.addr.eq(self.bus.rd_index)
        dp.add(run_rd=rp.data)


    #: Entries of the read-back's ring buffer: enough that a response word can leave every cycle while
    #: the next ones are read (address to ring: five cycles).
    READBACK_DEPTH = 8

    def _readback(self, dp: CoreParts):
        """READ_WEIGHTS: the weights of the last RUN, element by element in LOAD order, as the response.

        A walker reads the W memory at the issue's read port (no job runs between requests): layer by
        layer, row-major ``[W | b]``, from copy 1 for the layers the inner loop adapted once a RUN has
        started since the last LOAD, else from copy 0 (the loaded weights). Each element is picked out
        of the registered word and registered once more, then lands, five cycles after its address,
        in a ring buffer of :attr:`READBACK_DEPTH` entries; a read is issued only against a free entry
        (credits), so the ring never overflows. The front end reads the response combinationally at
        ``rd_index``, which moves by one after each word sent: its lowest bit against the head's says
        whether the head was sent, so the ring offers its head or the entry after it, and drops the
        head in that cycle. ``done`` comes when the ring is full (or holds every word), so the answer
        streams at one word a cycle without a gap.
        """
        L, cfg, layers, m, tile_addr, wts = dp.L, dp.cfg, dp.layers, dp.m, dp.tile_addr, dp.wts
        wmem, mfmt = dp.wmem, dp.mfmt
        D = self.READBACK_DEPTH
        NP = cfg.n_params
        PW = (2 * D - 1).bit_length()  # ring pointers count modulo 2 D: full and empty differ
        rb_active = Signal()  # the response being sent is a read-back
        rb_l = Signal(range(L + 1))
        rb_m = Signal(range(max(layers) + 1))
        rb_c = Signal(range(max(layers) + 2))
        rb_n = Signal(range(NP + 1))  # elements whose read was issued
        credits = Signal(range(D + 1))  # ring entries neither filled nor awaited
        wp, rp = Signal(PW, name="rb_wp"), Signal(PW, name="rb_rp")
        head_lsb = Signal()  # the lowest bit of the response index of the ring's head
        buf = Array(Signal(mfmt.width, name=f"rb_buf{k}") for k in range(D))
        v = [Signal(name=f"rb_v{k}") for k in range(1, 5)]  # an issued read, 1..4 cycles on
        pos = [Signal(range(max(2, wmem.elements)), name=f"rb_pos{k}") for k in range(4)]
        copy1 = Signal(name="rb_copy")  # read copy 1 for the adapted layers
        rb_issue = Signal()
        m.d.comb += rb_issue.eq(rb_active & (rb_n != NP) & (credits != 0))

        # the walker: one element address per issue, in LOAD order
        cols_a = _const_array([layers[l] + 1 for l in range(L)] + [1])
        rows_a = _const_array(list(layers[1:]) + [1])
        raddr = Signal.like(dp.addr0["W"], name="rb_addr")
        with m.Switch(rb_l):
            for l in range(L):
                with m.Case(l):
                    t = wts[l]
                    gr, gc = t.grid
                    copy = copy1 if l in dp.adapted else Const(0)
                    m.d.comb += [raddr.eq(tile_addr(t, rb_m, rb_c, copy)),
                                 pos[0].eq(_times(rb_m & (gr - 1), gc) + (rb_c & (gc - 1)))]
        with m.If(rb_issue):
            m.d.comb += dp.addr0["W"].eq(raddr)  # the issue's read port: no job is running
            m.d.sync += rb_n.eq(rb_n + 1)
            with m.If(rb_c == cols_a[rb_l] - 1):
                with m.If(rb_m == rows_a[rb_l] - 1):
                    m.d.sync += [rb_l.eq(rb_l + 1), rb_m.eq(0), rb_c.eq(0)]
                with m.Else():
                    m.d.sync += [rb_m.eq(rb_m + 1), rb_c.eq(0)]
            with m.Else():
                m.d.sync += rb_c.eq(rb_c + 1)
        m.d.sync += [v[0].eq(rb_issue)] + [v[k + 1].eq(v[k]) for k in range(3)]
        m.d.sync += [pos[k + 1].eq(pos[k]) for k in range(3)]
        # W's registered read word holds the element three cycles after the issue; picked, registered
        elem = Signal(mfmt.width)
        elems = Array(wmem.element_of(0, e)[: mfmt.width] for e in range(wmem.elements))
        m.d.sync += elem.eq(elems[pos[3]])
        push = v[3]

        # the ring; rd_index belongs to this response from the cycle after done (the front end then
        # sets it to 0)
        rb_send = Signal()
        with m.If(dp.done_r & rb_active):
            m.d.sync += rb_send.eq(1)
        pop = Signal()
        m.d.comb += pop.eq(rb_send & (self.bus.rd_index[0] != head_lsb) & (wp != rp))
        with m.If(push):
            m.d.sync += [buf[wp[: PW - 1]].eq(elem), wp.eq(wp + 1)]
        with m.If(pop):
            m.d.sync += [rp.eq(rp + 1), head_lsb.eq(~head_lsb)]
        m.d.sync += credits.eq(credits - rb_issue + pop)
        rb_word = Signal(32)
        m.d.comb += rb_word.eq(Mux(self.bus.rd_index[0] == head_lsb, buf[rp[: PW - 1]],
                                   buf[(rp + 1)[: PW - 1]]).as_signed())

        # done once the ring is full (or holds every word): the front end then sends without waiting
        rb_wait = Signal()  # a read-back started and not yet answered
        filled = Signal()
        m.d.comb += filled.eq((wp - rp)[:PW] >= min(NP, D))
        with m.If(dp.start):
            m.d.sync += rb_wait.eq(dp.start_read)
        with m.Elif(rb_wait & filled):
            m.d.sync += [rb_wait.eq(0), dp.done_r.eq(1)]
        m.d.comb += self.bus.rd_data.eq(Mux(rb_active, rb_word, dp.run_rd))
        # a new request: the walker and the ring start again (last, so it wins over the updates above)
        with m.If(dp.start):
            m.d.sync += [rb_active.eq(dp.start_read), rb_send.eq(0), rb_l.eq(0), rb_m.eq(0), rb_c.eq(0), rb_n.eq(0),
                         credits.eq(D), wp.eq(0), rp.eq(0), head_lsb.eq(0),
                         copy1.eq(dp.adapted_valid & (cfg.steps > 0))]


class MamlEngine(PacketEngine):
    """The MAML engine behind the packet protocol: ports ``i`` and ``o`` (32-bit words + last).

    A :class:`~metafab.hw.frontend.PacketEngine` of a :class:`MamlCore` and :func:`maml_ops`.

    Parameters
    ----------
    config : MamlConfig
    """

    def __init__(self, *, config: MamlConfig):
        if not isinstance(config, MamlConfig):
            reject(self, TypeError(f"config must be a MamlConfig, got {config!r}"))
        self._cfg = config
        try:
            core = MamlCore(config=config)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        super().__init__(core=core, ops=maml_ops(config))

    @property
    def config(self) -> MamlConfig:
        return self._cfg

    @property
    def schedule(self):
        return self.core.schedule
