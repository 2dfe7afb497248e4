"""The few-shot encoder in hardware: 3x3 convolutions, ReLU, 2x2 max pooling and dense layers on ``L`` MAC lanes.

:class:`Encoder` computes exactly :func:`metafab.reference.encoder.encode_fixed`
for an :class:`~metafab.reference.encoder.EncoderConfig`, one image at a
time. Every conv and dense layer is a matrix product ``W_aug @ [P; 1]``
(``docs/fewshot_engine.md``):

* lane ``l`` owns the weight rows ``r`` with ``r % L == l`` (its own weight
  bank, ``stage.wbase + (r // L) * cols + k``); the ``L`` lanes compute ``L``
  output channels (features) of one output position at once, one column
  ``k`` of the augmented row per cycle, the operand (a patch element, or the
  constant 1.0 of the bias column) broadcast to every lane;
* a conv layer's positions are issued pool window by pool window, so that the
  lanes keep a running maximum of the window's rounded outputs and emit one
  pooled value per window; ReLU is applied on emission (``relu(max) ==
  max(relu)`` on codes);
* the products are exact, summed exactly in ``acc_fmt`` and rounded once into
  ``act_fmt`` (:func:`metafab.hw.fixed.resize`), as in the reference;
* the emitted values go out one per cycle through a shift register into the
  other half of the activation buffer (layer ``i`` reads half ``i % 2``, the
  image memory for the first layer), channel-major, which is also the
  flatten's order; the last layer's values go to the ``o_*`` port instead.

The schedule is static: :func:`encoder_plan` gives every stage's cycles, and
:mod:`metafab.hw.fewshot_cycles` adds them up.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import registered_product, reject, resize, shape_of
from metafab.reference.encoder import EncoderConfig
from metafab.reference.errors import UserError

__all__ = ["EMIT_DELAY", "DRAIN_MARGIN", "EncoderStage", "encoder_plan", "check_encoder", "Encoder"]

#: Cycles from a window's last issue cycle to its first emitted value (address register, memory read,
#: operand register, the multiplier's input and output registers, accumulate, round, pool).
EMIT_DELAY = 8
#: Cycles between a stage's last emitted value being written and the next stage's first issue
#: (the read of the next stage sees the write).
DRAIN_MARGIN = 1


@dataclass(frozen=True)
class EncoderStage:
    """One conv or dense layer of the encoder as the lanes run it.

    ``rows x cols`` augmented weights; ``in_shape`` ``(C, H, W)`` (conv) or ``(n,)`` (dense); ``relu`` and
    ``pool`` (conv only) follow the layer; ``groups = ceil(rows / L)`` passes of the lanes, each over
    ``positions`` output positions (``H W`` for a conv, 1 for a dense layer) of ``cols`` cycles; the
    output is stored channel-major with ``out_hw`` values per channel; ``wbase`` is its first word in
    every lane's weight bank.
    """

    index: int
    kind: str
    rows: int
    cols: int
    in_shape: tuple
    relu: bool
    pool: bool
    lanes: int
    wbase: int

    @property
    def groups(self) -> int:
        return -(-self.rows // self.lanes)

    @property
    def positions(self) -> int:
        return self.in_shape[1] * self.in_shape[2] if self.kind == "conv3x3" else 1

    @property
    def window(self) -> int:
        """Positions per emitted value: 4 with a pool, else 1."""
        return 4 if self.pool else 1

    @property
    def out_hw(self) -> int:
        return self.positions // self.window

    @property
    def out_size(self) -> int:
        return self.rows * self.out_hw

    @property
    def in_size(self) -> int:
        n = 1
        for v in self.in_shape:
            n *= v
        return n

    @property
    def issue_cycles(self) -> int:
        return self.groups * self.positions * self.cols

    @property
    def last_group_rows(self) -> int:
        """Lanes that hold a row in the last group (the values of its last emission)."""
        return self.rows - (self.groups - 1) * self.lanes

    @property
    def bank_words(self) -> int:
        return self.groups * self.cols

    @property
    def macs(self) -> int:
        return self.rows * self.cols * self.positions


def encoder_plan(cfg: EncoderConfig) -> list[EncoderStage]:
    """The stages (conv / dense layers with their ReLU and pool) of ``cfg``'s encoder, in order.

    Raises UserError for an encoder the lanes cannot run (:func:`check_encoder`).
    """
    spec, L = cfg.spec, cfg.lanes
    layers = spec.layers
    stages: list[EncoderStage] = []
    shapes = [spec.input_shape, *spec.shapes()]
    wbase = 0
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.kind not in ("conv3x3", "dense"):
            i += 1
            continue
        j = i + 1
        relu = pool = False
        if j < len(layers) and layers[j].kind == "relu":
            relu, j = True, j + 1
        if layer.kind == "conv3x3" and j < len(layers) and layers[j].kind == "maxpool2x2":
            pool, j = True, j + 1
            if j < len(layers) and layers[j].kind == "maxpool2x2":
                raise UserError(f"encoder {spec}: the hardware encoder pools once after a conv layer, not twice "
                                f"(layer {j})")
        in_shape = shapes[i]
        rows = layer.size
        cols = (9 * in_shape[0] if layer.kind == "conv3x3" else in_shape[0]) + 1
        st = EncoderStage(index=len(stages), kind=layer.kind, rows=rows, cols=cols, in_shape=tuple(in_shape),
                          relu=relu, pool=pool, lanes=L, wbase=wbase)
        stages.append(st)
        wbase += st.bank_words
        i = j
    for st in stages:
        need = min(st.rows, L)
        if st.window * st.cols < need:
            raise UserError(f"encoder {spec}: layer stage {st.index} ({st.kind}, {st.cols} columns per output"
                            f"{', pooled' if st.pool else ''}) emits {need} values every {st.window * st.cols} "
                            f"cycles; use at most {st.window * st.cols} lanes")
    return stages


def check_encoder(cfg: EncoderConfig) -> list[EncoderStage]:
    """The plan of ``cfg`` after the hardware's own checks: 16-bit ``act_fmt`` and ``weight_fmt`` (two
    pixel codes per payload word), a sum that fits the lanes' accumulator."""
    if not isinstance(cfg, EncoderConfig):
        raise TypeError(f"config must be an EncoderConfig, got {cfg!r}")
    for name in ("act_fmt", "weight_fmt"):
        f = getattr(cfg, name)
        if f.width != 16:
            raise UserError(f"{name} {f} is {f.width} bits; the fewshot engine takes 16-bit codes (two per payload "
                            f"word)")
    return encoder_plan(cfg)


def _bits(n: int) -> int:
    """Bits of an unsigned counter that holds 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


class Encoder(wiring.Component):
    """The encoder datapath (see the module docstring).

    Parameters
    ----------
    config : EncoderConfig
    slots : int
        Images the image memory holds (``slot`` selects one for a job).

    Attributes
    ----------
    w_valid, w_first, w_code : In
        One weight code (``weight_fmt``) per cycle in LOAD order: layer by layer, row by row, the
        augmented row's columns; ``w_first`` marks the first code of a LOAD.
    img_we, img_waddr, img_wdata : In
        The image memory's write port: word ``a`` of slot ``s`` at ``s * words_per_image + a``; word ``a``
        holds pixel ``2a`` in bits 15..0 and ``2a + 1`` in bits 31..16 (``act_fmt`` codes).
    start, slot : In
        Begin encoding the image in ``slot`` (only while ``busy`` is low).
    busy : Out
        A job is running (from the cycle after ``start`` until the last value has left).
    o_valid, o_code, o_last : Out
        The ``D`` embedding codes (``act_fmt``) of the job, in order, at most one per cycle.
    """

    def __init__(self, *, config: EncoderConfig, slots: int):
        try:
            self._plan = check_encoder(config)
        except (UserError, TypeError) as exc:
            reject(self, exc)
        if not isinstance(slots, int) or slots < 1:
            reject(self, ValueError(f"slots must be a positive int, got {slots!r}"))
        self._cfg = config
        self._slots = slots
        self._wpi = -(-config.spec.n_inputs // 2)
        act = shape_of(config.act_fmt)
        super().__init__({
            "w_valid": In(1), "w_first": In(1), "w_code": In(shape_of(config.weight_fmt)),
            "img_we": In(1), "img_waddr": In(_bits(slots * self._wpi)), "img_wdata": In(32),
            "start": In(1), "slot": In(_bits(slots)), "busy": Out(1),
            "o_valid": Out(1), "o_code": Out(act), "o_last": Out(1),
        })

    @property
    def config(self) -> EncoderConfig:
        return self._cfg

    @property
    def plan(self) -> list[EncoderStage]:
        return list(self._plan)

    @property
    def words_per_image(self) -> int:
        return self._wpi

    @property
    def bank_words(self) -> int:
        return sum(st.bank_words for st in self._plan)

    @property
    def half_words(self) -> int:
        """Words of one half of the activation buffer: the largest stored stage output."""
        return max([1] + [st.out_size for st in self._plan[:-1]])

    def elaborate(self, platform):
        m = Module()
        cfg, plan, L = self._cfg, self._plan, self._cfg.lanes
        af, wf, accf = cfg.act_fmt, cfg.weight_fmt, cfg.acc_fmt
        act = shape_of(af)
        shift = accf.frac_bits - af.frac_bits - wf.frac_bits
        one = 1 << af.frac_bits
        HALF = self.half_words
        BW = self.bank_words
        n_st = len(plan)
        wpi = self._wpi

        # ---------------- memories ----------------
        m.submodules.img = img = Memory(shape=32, depth=self._slots * wpi, init=[])
        img_w = img.write_port()
        img_r = img.read_port()
        m.d.comb += [img_w.en.eq(self.img_we), img_w.addr.eq(self.img_waddr), img_w.data.eq(self.img_wdata)]
        m.submodules.act = actm = Memory(shape=act, depth=2 * HALF, init=[])
        act_w = actm.write_port()
        act_r = actm.read_port()
        banks = []
        for lane in range(L):
            mem = Memory(shape=shape_of(wf), depth=BW, init=[])
            m.submodules[f"wbank{lane}"] = mem
            banks.append((mem.write_port(), mem.read_port()))

        # ---------------- weight load: counters over layer, row, column ----------------
        ld_st = Signal(_bits(n_st))
        ld_k = Signal(16)
        ld_lane = Signal(_bits(L))
        ld_g = Signal(16)
        ld_row = Signal(16)  # bank address of column 0 of the current row
        with m.If(self.w_valid):
            cur_k, cur_lane, cur_g, cur_row, cur_st = (Mux(self.w_first, 0, v) for v in
                                                       (ld_k, ld_lane, ld_g, ld_row, ld_st))
            addr = Signal(16)
            m.d.comb += addr.eq(cur_row + cur_k)
            for lane, (wp, _) in enumerate(banks):
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(self.w_code), wp.en.eq(cur_lane == lane)]
            with m.Switch(cur_st):
                for st in plan:
                    with m.Case(st.index):
                        row = cur_g * L + cur_lane
                        with m.If(cur_k != st.cols - 1):
                            m.d.sync += [ld_k.eq(cur_k + 1), ld_lane.eq(cur_lane), ld_g.eq(cur_g),
                                         ld_row.eq(cur_row), ld_st.eq(cur_st)]
                        with m.Elif(row != st.rows - 1):
                            m.d.sync += ld_k.eq(0)
                            with m.If(cur_lane != L - 1):
                                m.d.sync += [ld_lane.eq(cur_lane + 1), ld_g.eq(cur_g), ld_row.eq(cur_row),
                                             ld_st.eq(cur_st)]
                            with m.Else():
                                m.d.sync += [ld_lane.eq(0), ld_g.eq(cur_g + 1), ld_row.eq(cur_row + st.cols),
                                             ld_st.eq(cur_st)]
                        with m.Else():  # the stage's last weight: the next stage's bank region
                            nxt = plan[st.index + 1].wbase if st.index + 1 < n_st else 0
                            m.d.sync += [ld_k.eq(0), ld_lane.eq(0), ld_g.eq(0), ld_row.eq(nxt),
                                         ld_st.eq(st.index + 1 if st.index + 1 < n_st else 0)]

        # ---------------- issue: counters of one stage ----------------
        # k: column of the augmented row (c, ky, kx for a conv, then the bias); d: position in the pool
        # window; win: the window (output position) of the group; g: the group of L rows
        stage = Signal(_bits(n_st + 1))
        running = Signal()
        drain = Signal(16)
        c = Signal(16)
        ky, kx = Signal(2), Signal(2)
        bias = Signal()
        kcnt = Signal(16)
        d = Signal(2)
        y, x = Signal(16), Signal(16)  # the output position's coordinates
        worig = Signal(16)  # y * W + x of the window's first position
        win = Signal(16)
        g = Signal(16)
        wrow = Signal(16)  # bank address of column 0 of the group's rows
        obase = Signal(16)  # g * L * out_hw
        img_base = Signal(16)

        tail = Signal(4)  # after the job's last issue: cycles until its last values reach the emitter
        with m.If(tail != 0):
            m.d.sync += tail.eq(tail - 1)
        issue = Signal()  # an issue cycle
        m.d.comb += issue.eq(running & (drain == 0))

        # the combinational read address and flags of this cycle
        a_addr = Signal(16)
        a_oob = Signal()
        a_kfirst, a_klast, a_wfirst, a_wlast = Signal(), Signal(), Signal(), Signal()
        a_waddr = Signal(16)
        a_oaddr = Signal(16)
        m.d.comb += [a_waddr.eq(wrow + kcnt), a_oaddr.eq(obase + win), a_klast.eq(bias)]

        def start_stage(st: EncoderStage):
            return [stage.eq(st.index), c.eq(0), ky.eq(0), kx.eq(0), bias.eq(0), kcnt.eq(0), d.eq(0), y.eq(0),
                    x.eq(0), worig.eq(0), win.eq(0), g.eq(0), wrow.eq(st.wbase), obase.eq(0)]

        with m.If(self.start & ~running & ~self.busy):
            m.d.sync += [running.eq(1), drain.eq(0), *start_stage(plan[0])]
            with m.Switch(self.slot):
                for s in range(self._slots):
                    with m.Case(s):
                        m.d.sync += img_base.eq(s * wpi)

        with m.If(running & (drain != 0)):
            m.d.sync += drain.eq(drain - 1)

        with m.Switch(stage):
            for st in plan:
                with m.Case(st.index):
                    conv = st.kind == "conv3x3"
                    if conv:
                        cin, H, W = st.in_shape
                        base_c = Signal(16, name=f"cbase{st.index}")
                        m.d.comb += base_c.eq(c * (H * W)) if (H * W) & (H * W - 1) else base_c.eq(c << ((H * W).bit_length() - 1))
                        dy = d[1] if st.pool else Const(0, 1)
                        dx = d[0] if st.pool else Const(0, 1)
                        kyo = Mux(ky == 0, -W, Mux(ky == 1, 0, W))
                        pos = worig + Mux(dy, W, 0) + dx
                        m.d.comb += [
                            a_addr.eq(base_c + pos + kyo + kx - 1),
                            a_oob.eq(~bias & (((y == 0) & (ky == 0)) | ((y == H - 1) & (ky == 2))
                                              | ((x == 0) & (kx == 0)) | ((x == W - 1) & (kx == 2)))),
                            a_kfirst.eq((c == 0) & (ky == 0) & (kx == 0) & ~bias),
                            a_wfirst.eq(d == 0),
                            a_wlast.eq(d == st.window - 1),
                        ]
                    else:
                        m.d.comb += [a_addr.eq(c), a_oob.eq(0), a_kfirst.eq((c == 0) & ~bias),
                                     a_wfirst.eq(1), a_wlast.eq(1)]
                    last_k = bias
                    with m.If(issue):
                        # the next column
                        with m.If(~bias):
                            m.d.sync += kcnt.eq(kcnt + 1)
                            if conv:
                                with m.If(kx != 2):
                                    m.d.sync += kx.eq(kx + 1)
                                with m.Else():
                                    m.d.sync += kx.eq(0)
                                    with m.If(ky != 2):
                                        m.d.sync += ky.eq(ky + 1)
                                    with m.Else():
                                        m.d.sync += ky.eq(0)
                                        with m.If(c != cin - 1):
                                            m.d.sync += c.eq(c + 1)
                                        with m.Else():
                                            m.d.sync += [c.eq(0), bias.eq(1)]
                            else:
                                with m.If(c != st.cols - 2):
                                    m.d.sync += c.eq(c + 1)
                                with m.Else():
                                    m.d.sync += [c.eq(0), bias.eq(1)]
                        with m.If(last_k):
                            # the next position: in the window, the next window, the next group, done
                            m.d.sync += [bias.eq(0), kcnt.eq(0), c.eq(0)]
                            end_win = d == st.window - 1
                            if conv:
                                with m.If(~end_win):
                                    m.d.sync += d.eq(d + 1)
                                    if st.pool:
                                        # d = (dy, dx): 0 (0,0) 1 (0,1) 2 (1,0) 3 (1,1)
                                        m.d.sync += [x.eq(Mux(d[0], x - 1, x + 1)), y.eq(Mux(d[0], y + 1, y))]
                            last_win = win == st.out_hw - 1
                            with m.If(end_win):
                                m.d.sync += d.eq(0)
                                with m.If(~last_win):
                                    m.d.sync += win.eq(win + 1)
                                    if conv:
                                        step = 2 if st.pool else 1
                                        # the next window's first position
                                        oy = y - (1 if st.pool else 0)
                                        ox = x - (1 if st.pool else 0)
                                        at_row_end = ox == W - step
                                        m.d.sync += [
                                            x.eq(Mux(at_row_end, 0, ox + step)),
                                            y.eq(Mux(at_row_end, oy + step, oy)),
                                            worig.eq(Mux(at_row_end, (oy + step) * W if W & (W - 1) else
                                                         (oy + step) << (W.bit_length() - 1), worig + step)),
                                        ]
                                with m.Else():
                                    m.d.sync += [win.eq(0), y.eq(0), x.eq(0), worig.eq(0)]
                                    with m.If(g != st.groups - 1):
                                        m.d.sync += [g.eq(g + 1), wrow.eq(wrow + st.cols),
                                                     obase.eq(obase + L * st.out_hw)]
                                    with m.Else():
                                        # the stage's last issue: drain, then the next stage
                                        if st.index + 1 < n_st:
                                            m.d.sync += [*start_stage(plan[st.index + 1]),
                                                         drain.eq(EMIT_DELAY + st.last_group_rows - 1
                                                                  + DRAIN_MARGIN)]
                                        else:
                                            m.d.sync += [running.eq(0), stage.eq(n_st), tail.eq(EMIT_DELAY)]

        # ---------------- pipeline ----------------
        # t+1: addresses registered; the flags travel with them
        def reg(v, name, n=1):
            """``v`` delayed by ``n`` registers."""
            out = Value.cast(v)
            for k in range(n):
                r = Signal(out.shape(), name=f"{name}_{k + 1}")
                m.d.sync += r.eq(out)
                out = r
            return out

        v1 = reg(issue, "valid")
        st1 = reg(stage, "stage")
        addr1 = reg(a_addr, "aaddr")
        waddr1 = reg(a_waddr, "waddr")
        oob1 = reg(a_oob, "oob")
        bias1 = reg(bias, "bias")
        kf1, kl1, wf1, wl1 = (reg(s, n) for s, n in ((a_kfirst, "kfirst"), (a_klast, "klast"),
                                                      (a_wfirst, "wfirst"), (a_wlast, "wlast")))
        oaddr1 = reg(a_oaddr, "oaddr")
        ibase1 = reg(img_base, "ibase")
        # memory reads (data at t+2)
        img_addr = Signal(16)
        m.d.comb += [img_addr.eq(ibase1 + (addr1 >> 1)), img_r.addr.eq(img_addr)]
        half_src = Signal(16)
        with m.Switch(st1):
            for st in plan:
                with m.Case(st.index):
                    src_half = (st.index - 1) % 2
                    m.d.comb += half_src.eq(addr1 + src_half * HALF)
        m.d.comb += act_r.addr.eq(half_src)
        for _, rp in banks:
            m.d.comb += rp.addr.eq(waddr1)
        # t+2: the operand
        st2 = reg(st1, "stage2")
        oob2, bias2, odd2 = reg(oob1, "oob2"), reg(bias1, "bias2"), reg(addr1[0], "odd2")
        pix = Mux(odd2, img_r.data[16:32], img_r.data[0:16]).as_signed()
        src = Mux(st2 == 0, pix, act_r.data)
        # t+3: the operand in a register of its own (the memories' outputs and the source multiplexer are not
        # on the path into the multipliers), the weights one register behind the banks to stay beside it
        opnd = Signal(act, name="opnd")
        m.d.sync += opnd.eq(Mux(oob2, 0, Mux(bias2, one, src)))
        wregs = []
        for lane, (_, rp) in enumerate(banks):
            wr = Signal(shape_of(wf), name=f"wreg{lane}")
            m.d.sync += wr.eq(rp.data)
            wregs.append(wr)
        prods = [registered_product(m, platform, opnd, wregs[lane], name=f"prod{lane}") for lane in range(L)]
        # t+5: accumulate; t+6: round; t+7: pool, emission
        kf4 = reg(kf1, "kf", 4)
        kl5 = reg(kl1, "kl", 5)
        v5 = reg(v1, "v", 5)
        wf6, wl6 = reg(wf1, "wf", 6), reg(wl1, "wl", 6)
        oaddr6 = reg(oaddr1, "oa", 6)
        st6 = reg(st1, "st", 6)
        fire5 = v5 & kl5  # the acc holds a finished sum
        fire6 = reg(fire5, "fire6")
        em = [Signal(act, name=f"em{lane}") for lane in range(L)]
        em_cnt = Signal(_bits(L + 1))
        em_addr = Signal(16)
        em_st = Signal(_bits(n_st + 1))
        em_step = Signal(16)
        for lane in range(L):
            acc = Signal(signed(accf.width), name=f"acc{lane}")
            m.d.sync += acc.eq(Mux(kf4, 0, acc) + (prods[lane] << shift))
            rr = Signal(act, name=f"rnd{lane}")
            with m.If(fire5):
                m.d.sync += rr.eq(resize(acc, accf, af, cfg.rounding))
            mx = Signal(act, name=f"max{lane}")
            cand = Signal(act, name=f"cand{lane}")
            m.d.comb += cand.eq(Mux(wf6 | (rr > mx), rr, mx))
            with m.If(fire6):
                m.d.sync += mx.eq(cand)
            relu_v = Signal(act, name=f"relu{lane}")
            with m.Switch(st6):
                for st in plan:
                    with m.Case(st.index):
                        m.d.comb += relu_v.eq(Mux(cand < 0, 0, cand) if st.relu else cand)
            with m.If(fire6 & wl6):
                m.d.sync += em[lane].eq(relu_v)
            with m.Elif(em_cnt != 0):
                m.d.sync += em[lane].eq(em[lane + 1] if lane + 1 < L else 0)
        with m.If(fire6 & wl6):
            with m.Switch(st6):
                for st in plan:
                    with m.Case(st.index):
                        # the lanes of this group that hold a row
                        rows_here = Mux(oaddr6 >= (st.groups - 1) * L * st.out_hw, st.last_group_rows, L) \
                            if st.groups > 1 else min(st.rows, L)
                        m.d.sync += [em_cnt.eq(rows_here), em_step.eq(st.out_hw)]
            m.d.sync += [em_addr.eq(oaddr6), em_st.eq(st6)]
        with m.Elif(em_cnt != 0):
            m.d.sync += [em_cnt.eq(em_cnt - 1), em_addr.eq(em_addr + em_step)]
        # the emitted value: to the next stage's half, or out
        last_st = em_st == n_st - 1
        with m.Switch(em_st):
            for st in plan:
                with m.Case(st.index):
                    m.d.comb += act_w.addr.eq(em_addr + (st.index % 2) * HALF)
        m.d.comb += [
            act_w.data.eq(em[0]),
            act_w.en.eq((em_cnt != 0) & ~last_st),
            self.o_valid.eq((em_cnt != 0) & last_st),
            self.o_code.eq(em[0]),
            self.o_last.eq((em_cnt != 0) & last_st & (em_addr == plan[-1].rows - 1)),
            self.busy.eq(running | (tail != 0) | (em_cnt != 0)),
        ]
        return m
