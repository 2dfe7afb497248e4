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

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import delayed, registered_product, reject, resize, shape_of
from metafab.reference.encoder import EncoderConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import fewshot_image_words

__all__ = ["EMIT_DELAY", "emit_delay", "DRAIN_MARGIN", "EncoderStage", "encoder_plan", "check_encoder", "Encoder"]

#: Cycles from a window's last issue cycle to its first emitted value with one lane slice (address
#: register, memory read, operand register, the multiplier's input and output registers, accumulate,
#: round, pool); each level of the slices' adder tree adds one (:func:`emit_delay`).
EMIT_DELAY = 8


def emit_delay(split: int) -> int:
    """Cycles from a window's last issue cycle to its first emitted value with ``split`` lane slices."""
    return EMIT_DELAY + (split.bit_length() - 1)
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
    split: int = 1

    @property
    def slice_cols(self) -> int:
        """Columns of a row each of the ``split`` lane slices takes, ``ceil(cols / split)``: the cycles of one
        output position."""
        return -(-self.cols // self.split)

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
        return self.groups * self.positions * self.slice_cols

    @property
    def last_group_rows(self) -> int:
        """Lanes that hold a row in the last group (the values of its last emission)."""
        return self.rows - (self.groups - 1) * self.lanes

    @property
    def bank_words(self) -> int:
        return self.groups * self.slice_cols

    @property
    def macs(self) -> int:
        return self.rows * self.cols * self.positions


def encoder_plan(cfg: EncoderConfig) -> list[EncoderStage]:
    """The stages (conv / dense layers with their ReLU and pool) of ``cfg``'s encoder, in order.

    Raises UserError for an encoder the lanes cannot run (:func:`check_encoder`).
    """
    spec, L, S = cfg.spec, cfg.lanes, cfg.split
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
                          relu=relu, pool=pool, lanes=L, wbase=wbase, split=S)
        stages.append(st)
        wbase += st.bank_words
        i = j
    for st in stages:
        need, every = min(st.rows, L), st.window * st.slice_cols
        if every < need:
            raise UserError(f"encoder {spec}: layer stage {st.index} ({st.kind}, {st.slice_cols} cycles per output"
                            f"{', pooled' if st.pool else ''}) emits {need} values every {every} "
                            f"cycles; use at most {every} lanes")
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
        A job is running (from the cycle after ``start`` until the last value has left; the job's first
        issue is two cycles after ``start``: the start is registered).
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
        self._wpi = fewshot_image_words(config.spec.n_inputs)
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
        cfg, plan, L, S = self._cfg, self._plan, self._cfg.lanes, self._cfg.split
        af, wf, accf = cfg.act_fmt, cfg.weight_fmt, cfg.acc_fmt
        act = shape_of(af)
        shift = accf.frac_bits - af.frac_bits - wf.frac_bits
        one = 1 << af.frac_bits
        HALF = self.half_words
        BW = self.bank_words
        n_st = len(plan)
        wpi = self._wpi
        T = S.bit_length() - 1  # levels of the slices' adder tree
        ED = emit_delay(S)

        # ---------------- memories: the image and activation memories once per lane slice ----------------
        img_r, act_r, act_w = [], [], []
        for sl in range(S):
            img = Memory(shape=32, depth=self._slots * wpi, init=[])
            m.submodules[f"img{sl}"] = img
            wp = img.write_port()
            m.d.comb += [wp.en.eq(self.img_we), wp.addr.eq(self.img_waddr), wp.data.eq(self.img_wdata)]
            img_r.append(img.read_port())
            actm = Memory(shape=act, depth=2 * HALF, init=[])
            m.submodules[f"act{sl}"] = actm
            act_w.append(actm.write_port())
            act_r.append(actm.read_port())
        # bank (lane, slice): rows r % L == lane, columns k // slice_cols == slice
        banks = [[None] * S for _ in range(L)]
        for lane in range(L):
            for sl in range(S):
                mem = Memory(shape=shape_of(wf), depth=BW, init=[])
                m.submodules[f"wbank{lane}_{sl}"] = mem
                banks[lane][sl] = (mem.write_port(), mem.read_port())

        # ---------------- weight load: counters over stage, row, column ----------------
        ld_st = Signal(_bits(n_st))
        ld_k = Signal(16)
        ld_ks = Signal(16)  # column within the slice
        ld_sl = Signal(_bits(S))
        ld_lane = Signal(_bits(L))
        ld_g = Signal(16)
        ld_row = Signal(16)  # bank address of slice column 0 of the current row
        with m.If(self.w_valid):
            cur_k, cur_ks, cur_sl, cur_lane, cur_g, cur_row, cur_st = (
                Mux(self.w_first, 0, v) for v in (ld_k, ld_ks, ld_sl, ld_lane, ld_g, ld_row, ld_st))
            addr = Signal(16)
            m.d.comb += addr.eq(cur_row + cur_ks)
            for lane in range(L):
                for sl in range(S):
                    wp = banks[lane][sl][0]
                    m.d.comb += [wp.addr.eq(addr), wp.data.eq(self.w_code),
                                 wp.en.eq((cur_lane == lane) & (cur_sl == sl))]
            with m.Switch(cur_st):
                for st in plan:
                    with m.Case(st.index):
                        row = cur_g * L + cur_lane
                        kc = st.slice_cols
                        with m.If(cur_k != st.cols - 1):
                            m.d.sync += [ld_k.eq(cur_k + 1), ld_lane.eq(cur_lane), ld_g.eq(cur_g),
                                         ld_row.eq(cur_row), ld_st.eq(cur_st)]
                            with m.If(cur_ks != kc - 1):
                                m.d.sync += [ld_ks.eq(cur_ks + 1), ld_sl.eq(cur_sl)]
                            with m.Else():
                                m.d.sync += [ld_ks.eq(0), ld_sl.eq(cur_sl + 1)]
                        with m.Elif(row != st.rows - 1):
                            m.d.sync += [ld_k.eq(0), ld_ks.eq(0), ld_sl.eq(0)]
                            with m.If(cur_lane != L - 1):
                                m.d.sync += [ld_lane.eq(cur_lane + 1), ld_g.eq(cur_g), ld_row.eq(cur_row),
                                             ld_st.eq(cur_st)]
                            with m.Else():
                                m.d.sync += [ld_lane.eq(0), ld_g.eq(cur_g + 1), ld_row.eq(cur_row + kc),
                                             ld_st.eq(cur_st)]
                        with m.Else():  # the stage's last weight: the next stage's bank region
                            nxt = plan[st.index + 1].wbase if st.index + 1 < n_st else 0
                            m.d.sync += [ld_k.eq(0), ld_ks.eq(0), ld_sl.eq(0), ld_lane.eq(0), ld_g.eq(0),
                                         ld_row.eq(nxt), ld_st.eq(st.index + 1 if st.index + 1 < n_st else 0)]

        # ---------------- issue: counters of one stage ----------------
        # per slice: the column it reads (c, ky, kx for a conv; the bias; past the row's end: pad); shared:
        # j (the cycle of the position), d (position in the pool window), win (the window), g (the group)
        stage = Signal(_bits(n_st + 1))
        running = Signal()
        drain = Signal(16)
        c = [Signal(16, name=f"c{sl}") for sl in range(S)]
        ky = [Signal(2, name=f"ky{sl}") for sl in range(S)]
        kx = [Signal(2, name=f"kx{sl}") for sl in range(S)]
        bias = [Signal(name=f"bias{sl}") for sl in range(S)]
        pad = [Signal(name=f"pad{sl}") for sl in range(S)]
        j = Signal(16)
        d = Signal(2)
        y, x = Signal(16), Signal(16)  # the output position's coordinates
        worig = Signal(16)  # y * W + x of the window's first position
        win = Signal(16)
        g = Signal(16)
        wrow = Signal(16)  # bank address of slice column 0 of the group's rows
        obase = Signal(16)  # g * L * out_hw
        img_base = Signal(16)

        tail = Signal(5)  # after the job's last issue: cycles until its last values reach the emitter
        with m.If(tail != 0):
            m.d.sync += tail.eq(tail - 1)
        issue = Signal()  # an issue cycle
        m.d.comb += issue.eq(running & (drain == 0))

        # the combinational read addresses and flags of this cycle
        a_addr = [Signal(16, name=f"a_addr{sl}") for sl in range(S)]
        a_zero = [Signal(name=f"a_zero{sl}") for sl in range(S)]  # padding of the image or past the row: 0
        a_kfirst, a_klast, a_wfirst, a_wlast = Signal(), Signal(), Signal(), Signal()
        a_waddr = Signal(16)
        a_oaddr = Signal(16)

        def slice_start(st: EncoderStage, sl: int):
            """The counters of slice ``sl`` at a position's first cycle: its first column ``sl * slice_cols``."""
            k0 = sl * st.slice_cols
            if k0 > st.cols - 1:
                return [c[sl].eq(0), ky[sl].eq(0), kx[sl].eq(0), bias[sl].eq(0), pad[sl].eq(1)]
            if k0 == st.cols - 1:
                return [c[sl].eq(0), ky[sl].eq(0), kx[sl].eq(0), bias[sl].eq(1), pad[sl].eq(0)]
            if st.kind == "conv3x3":
                return [c[sl].eq(k0 // 9), ky[sl].eq(k0 % 9 // 3), kx[sl].eq(k0 % 3), bias[sl].eq(0), pad[sl].eq(0)]
            return [c[sl].eq(k0), ky[sl].eq(0), kx[sl].eq(0), bias[sl].eq(0), pad[sl].eq(0)]

        def start_stage(st: EncoderStage):
            return [stage.eq(st.index), j.eq(0), d.eq(0), y.eq(0), x.eq(0), worig.eq(0), win.eq(0), g.eq(0),
                    wrow.eq(st.wbase), obase.eq(0), *(a for sl in range(S) for a in slice_start(st, sl))]

        m.d.comb += [a_waddr.eq(wrow + j), a_oaddr.eq(obase + win)]

        # the start in a register of its own (it fans out to every counter; the caller's start logic stays
        # off those paths): the job begins the cycle after it
        go = Signal()
        go_slot = Signal.like(self.slot)
        m.d.sync += [go.eq(self.start & ~self.busy), go_slot.eq(self.slot)]
        with m.If(go):
            m.d.sync += [running.eq(1), drain.eq(0), *start_stage(plan[0])]
            with m.Switch(go_slot):
                for n in range(self._slots):
                    with m.Case(n):
                        m.d.sync += img_base.eq(n * wpi)

        with m.If(running & (drain != 0)):
            m.d.sync += drain.eq(drain - 1)

        with m.Switch(stage):
            for st in plan:
                with m.Case(st.index):
                    conv = st.kind == "conv3x3"
                    kc = st.slice_cols
                    m.d.comb += [a_kfirst.eq(j == 0), a_klast.eq(j == kc - 1)]
                    if conv:
                        cin, H, W = st.in_shape
                        dy = d[1] if st.pool else Const(0, 1)
                        dx = d[0] if st.pool else Const(0, 1)
                        pos = worig + Mux(dy, W, 0) + dx
                        m.d.comb += [a_wfirst.eq(d == 0), a_wlast.eq(d == st.window - 1)]
                        for sl in range(S):
                            base_c = Signal(16, name=f"cbase{st.index}_{sl}")
                            hw = H * W
                            m.d.comb += base_c.eq(c[sl] * hw) if hw & (hw - 1) else base_c.eq(
                                c[sl] << (hw.bit_length() - 1))
                            kyo = Mux(ky[sl] == 0, -W, Mux(ky[sl] == 1, 0, W))
                            oob = (((y == 0) & (ky[sl] == 0)) | ((y == H - 1) & (ky[sl] == 2))
                                   | ((x == 0) & (kx[sl] == 0)) | ((x == W - 1) & (kx[sl] == 2)))
                            m.d.comb += [a_addr[sl].eq(base_c + pos + kyo + kx[sl] - 1),
                                         a_zero[sl].eq(pad[sl] | (~bias[sl] & oob))]
                    else:
                        m.d.comb += [a_wfirst.eq(1), a_wlast.eq(1)]
                        for sl in range(S):
                            m.d.comb += [a_addr[sl].eq(c[sl]), a_zero[sl].eq(pad[sl])]
                    with m.If(issue):
                        with m.If(j != kc - 1):
                            m.d.sync += j.eq(j + 1)
                            for sl in range(S):  # each slice's next column
                                with m.If(bias[sl]):
                                    m.d.sync += [bias[sl].eq(0), pad[sl].eq(1)]
                                with m.Elif(~pad[sl]):
                                    if conv:
                                        with m.If(kx[sl] != 2):
                                            m.d.sync += kx[sl].eq(kx[sl] + 1)
                                        with m.Else():
                                            m.d.sync += kx[sl].eq(0)
                                            with m.If(ky[sl] != 2):
                                                m.d.sync += ky[sl].eq(ky[sl] + 1)
                                            with m.Else():
                                                m.d.sync += ky[sl].eq(0)
                                                with m.If(c[sl] != cin - 1):
                                                    m.d.sync += c[sl].eq(c[sl] + 1)
                                                with m.Else():
                                                    m.d.sync += [c[sl].eq(0), bias[sl].eq(1)]
                                    else:
                                        with m.If(c[sl] != st.cols - 2):
                                            m.d.sync += c[sl].eq(c[sl] + 1)
                                        with m.Else():
                                            m.d.sync += [c[sl].eq(0), bias[sl].eq(1)]
                        with m.Else():
                            # the next position: in the window, the next window, the next group, done
                            m.d.sync += [j.eq(0), *(a for sl in range(S) for a in slice_start(st, sl))]
                            end_win = d == st.window - 1
                            if conv and st.pool:
                                with m.If(~end_win):
                                    # d = (dy, dx): 0 (0,0) 1 (0,1) 2 (1,0) 3 (1,1)
                                    m.d.sync += [d.eq(d + 1), x.eq(Mux(d[0], x - 1, x + 1)),
                                                 y.eq(Mux(d[0], y + 1, y))]
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
                                        m.d.sync += [g.eq(g + 1), wrow.eq(wrow + kc),
                                                     obase.eq(obase + L * st.out_hw)]
                                    with m.Else():
                                        # the stage's last issue: drain, then the next stage
                                        if st.index + 1 < n_st:
                                            m.d.sync += [*start_stage(plan[st.index + 1]),
                                                         drain.eq(ED + st.last_group_rows - 1 + DRAIN_MARGIN)]
                                        else:
                                            m.d.sync += [running.eq(0), stage.eq(n_st), tail.eq(ED)]

        # ---------------- pipeline ----------------
        def reg(v, name, n=1):
            return delayed(m, v, n, name)

        # t+1: addresses registered; the flags travel with them
        v1 = reg(issue, "valid")
        st1 = reg(stage, "stage")
        waddr1 = reg(a_waddr, "waddr")
        kf1, kl1, wf1, wl1 = (reg(sig, n) for sig, n in ((a_kfirst, "kfirst"), (a_klast, "klast"),
                                                          (a_wfirst, "wfirst"), (a_wlast, "wlast")))
        oaddr1 = reg(a_oaddr, "oaddr")
        ibase1 = reg(img_base, "ibase")
        src_half = Signal(16)
        with m.Switch(st1):
            for st in plan:
                with m.Case(st.index):
                    m.d.comb += src_half.eq(((st.index - 1) % 2) * HALF)
        st2 = reg(st1, "stage2")
        opnds = []
        for sl in range(S):
            addr1 = reg(a_addr[sl], f"aaddr{sl}")
            zero1 = reg(a_zero[sl], f"zero{sl}")
            bias1 = reg(bias[sl], f"biasf{sl}")
            # memory reads (data at t+2)
            m.d.comb += [img_r[sl].addr.eq(ibase1 + (addr1 >> 1)), act_r[sl].addr.eq(addr1 + src_half)]
            zero2, bias2, odd2 = reg(zero1, f"zero2_{sl}"), reg(bias1, f"bias2_{sl}"), reg(addr1[0], f"odd2_{sl}")
            pix = Mux(odd2, img_r[sl].data[16:32], img_r[sl].data[0:16]).as_signed()
            src = Mux(st2 == 0, pix, act_r[sl].data)
            # t+3: the operand in a register of its own (the memories' outputs and the source multiplexer are
            # not on the path into the multipliers)
            opnd = Signal(act, name=f"opnd{sl}")
            m.d.sync += opnd.eq(Mux(zero2, 0, Mux(bias2, one, src)))
            opnds.append(opnd)
        # t+3: the weights one register behind the banks (beside the operand); t+5: the products
        kf5 = reg(kf1, "kf", 4)
        accs = []
        for lane in range(L):
            row = []
            for sl in range(S):
                rp = banks[lane][sl][1]
                m.d.comb += rp.addr.eq(waddr1)
                wr = Signal(shape_of(wf), name=f"wreg{lane}_{sl}")
                m.d.sync += wr.eq(rp.data)
                prod = registered_product(m, platform, opnds[sl], wr, name=f"prod{lane}_{sl}")
                acc = Signal(signed(accf.width), name=f"acc{lane}_{sl}")
                m.d.sync += acc.eq(Mux(kf5, 0, acc) + (prod << shift))
                row.append(acc)
            # t+6 .. t+6+T: the slices' sums, one registered level of the adder tree a cycle (exact: the
            # config checks that the whole sum fits acc_fmt, so every partial sum does)
            level = 0
            while len(row) > 1:
                nxt = []
                for a, b in zip(row[0::2], row[1::2], strict=True):
                    r = Signal(signed(accf.width), name=f"sum{lane}_{level}_{len(nxt)}")
                    m.d.sync += r.eq(a + b)
                    nxt.append(r)
                row, level = nxt, level + 1
            accs.append(row[0])
        # t+6+T: the sum; t+7+T: rounded; t+8+T: pooled, emitted
        fire_a = reg(v1, "v", 5 + T) & reg(kl1, "kl", 5 + T)  # the sum is finished
        fire_b = reg(fire_a, "fire_b")
        wf_b, wl_b = reg(wf1, "wf", 6 + T), reg(wl1, "wl", 6 + T)
        oaddr_b = reg(oaddr1, "oa", 6 + T)
        st_b = reg(st1, "st", 6 + T)
        em = [Signal(act, name=f"em{lane}") for lane in range(L)]
        em_cnt = Signal(_bits(L + 1))
        em_addr = Signal(16)
        em_st = Signal(_bits(n_st + 1))
        em_step = Signal(16)
        for lane in range(L):
            rr = Signal(act, name=f"rnd{lane}")
            with m.If(fire_a):
                m.d.sync += rr.eq(resize(accs[lane], accf, af, cfg.rounding))
            mx = Signal(act, name=f"max{lane}")
            cand = Signal(act, name=f"cand{lane}")
            m.d.comb += cand.eq(Mux(wf_b | (rr > mx), rr, mx))
            with m.If(fire_b):
                m.d.sync += mx.eq(cand)
            relu_v = Signal(act, name=f"relu{lane}")
            with m.Switch(st_b):
                for st in plan:
                    with m.Case(st.index):
                        m.d.comb += relu_v.eq(Mux(cand < 0, 0, cand) if st.relu else cand)
            with m.If(fire_b & wl_b):
                m.d.sync += em[lane].eq(relu_v)
            with m.Elif(em_cnt != 0):
                m.d.sync += em[lane].eq(em[lane + 1] if lane + 1 < L else 0)
        with m.If(fire_b & wl_b):
            with m.Switch(st_b):
                for st in plan:
                    with m.Case(st.index):
                        # the lanes of this group that hold a row
                        rows_here = Mux(oaddr_b >= (st.groups - 1) * L * st.out_hw, st.last_group_rows, L) \
                            if st.groups > 1 else min(st.rows, L)
                        m.d.sync += [em_cnt.eq(rows_here), em_step.eq(st.out_hw)]
            m.d.sync += [em_addr.eq(oaddr_b), em_st.eq(st_b)]
        with m.Elif(em_cnt != 0):
            m.d.sync += [em_cnt.eq(em_cnt - 1), em_addr.eq(em_addr + em_step)]
        # the emitted value: to the next stage's half of every slice's copy, or out
        last_st = em_st == n_st - 1
        dst = Signal(16)
        with m.Switch(em_st):
            for st in plan:
                with m.Case(st.index):
                    m.d.comb += dst.eq(em_addr + (st.index % 2) * HALF)
        for wp in act_w:
            m.d.comb += [wp.addr.eq(dst), wp.data.eq(em[0]), wp.en.eq((em_cnt != 0) & ~last_st)]
        m.d.comb += [
            self.o_valid.eq((em_cnt != 0) & last_st),
            self.o_code.eq(em[0]),
            self.o_last.eq((em_cnt != 0) & last_st & (em_addr == plan[-1].rows - 1)),
            self.busy.eq(go | running | (tail != 0) | (em_cnt != 0)),
        ]
        return m
