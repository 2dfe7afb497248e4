"""Arithmetic blocks of the similarity engine, bit-equal to :mod:`metafab.reference.match_fixed`.

Every block is a fixed-latency pipeline that takes one input per cycle and
never stalls: its ports are ``lib.stream`` signatures with
``always_ready=True`` (``valid`` and ``payload``, no ``ready``), and a
``tag`` field of the caller's width travels with each value, so the caller
can attach an index or flags. ``LATENCY`` is the number of cycles from an
input beat to its output beat.

* :class:`ScaleRound`: ``saturate(round(a * b * 2**-shift))`` with a shift
  that may change every beat (:func:`round_shift_var`).
* :class:`RecipUnit`: reciprocal or inverse square root as (mantissa,
  exponent): normalise, table, optional Newton-Raphson step
  (:func:`~metafab.reference.match_fixed.reciprocal`,
  :func:`~metafab.reference.match_fixed.rsqrt`).
* :class:`ExpTable`: ``exp(z)`` of a softmax input through the exp table
  (:func:`~metafab.reference.match_fixed.exp_lookup`).
* :class:`Argmax`: index of the largest of a sequence, the first one on ties.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import half_even_up, product_register, reject, round_shift, saturate, shape_of
from metafab.hw.match_schedule import EXP_LATENCY, SCALE_LATENCY, latency_recip
from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import QFormat, Rounding

__all__ = [
    "round_shift_var",
    "ScaleRound",
    "RecipUnit",
    "ExpTable",
    "Argmax",
    "priority_bit_length",
]


def dropped_mask(width: int, shift) -> Value:
    """The thermometer mask of the bits ``(2 value) >> shift`` drops, for a ``width``-bit value
    (bit ``i`` set when ``shift > i``); :func:`round_parts` takes it precomputed (registered)."""
    shift = Value.cast(shift)
    reach = min(width + 1, 1 << len(shift))
    return Cat(*(shift > i for i in range(reach)))


def round_parts(value, shift, mask=None) -> tuple[Value, Value]:
    """First half of :func:`round_shift_var`: ``(t, sticky)`` with ``t = (2 value) >> shift``.

    ``t >> 1`` is the truncated quotient, ``t[0]`` the first dropped bit
    (0 when ``shift`` is 0) and ``sticky`` whether any bit below it is set.
    ``mask``: :func:`dropped_mask` of ``value``'s width and ``shift``, if the
    caller has it in a register (else it is decoded here).
    """
    v = Value.cast(value)
    v2 = Cat(Const(0, 1), v)
    v2 = v2.as_signed() if v.shape().signed else v2
    t = v2 >> shift
    if mask is None:
        mask = dropped_mask(len(v), shift)
    mask = Value.cast(mask)
    sticky = (v2.as_unsigned()[:len(mask)] & mask) != 0
    return t, sticky


def round_finish(t, sticky, rounding: Rounding) -> Value:
    """Second half of :func:`round_shift_var` (from the registered ``t`` and ``sticky``)."""
    t = Value.cast(t)
    q = t >> 1
    if rounding is Rounding.TRUNCATE:
        return q
    return q + half_even_up(t[0], sticky, q[0])


def round_shift_var(value, shift, rounding: Rounding) -> Value:
    """``value * 2**-shift`` rounded to an integer, ``shift`` a Value (a barrel shifter).

    Matches :func:`metafab.reference.match_fixed.round_shift_var`: truncation
    or round half to even (up when the first dropped bit is 1 and either a
    lower dropped bit or the kept LSB is 1).
    """
    t, sticky = round_parts(value, shift)
    return round_finish(t, sticky, rounding)


def priority_bit_length(x: Value, m: Module, name: str) -> Signal:
    """A Signal with ``bit_length(x)`` of an unsigned value (0 for 0): a log-depth priority encoder.

    ``bit_length(hi:lo) = any(hi) ? half + bit_length(hi) : bit_length(lo)``, recursively, so the
    depth grows with ``log2`` of the width, not with the width.
    """
    x = Value.cast(x).as_unsigned()
    width = 1 << max(0, (len(x) - 1).bit_length())
    xp = Cat(x, Const(0, width - len(x))) if width > len(x) else x

    def rec(v: Value) -> tuple[Value, Value]:  # (any bit set, bit_length)
        if len(v) == 1:
            return v[0], v[0]
        half = len(v) // 2
        any_lo, bl_lo = rec(v[:half])
        any_hi, bl_hi = rec(v[half:])
        return any_lo | any_hi, Mux(any_hi, half + bl_hi, bl_lo)

    out = Signal(range(len(x) + 1), name=name)
    m.d.comb += out.eq(rec(xp)[1])
    return out


#: Widest unsigned multiplier operand of one DSP block (ECP5 ``MULT18X18D``).
DSP_WIDTH = 18


def split_product(st: "_Stage", a: Value, b: Value, name: str) -> tuple[Signal, int]:
    """``a * b`` in two pipeline stages of ``st``: DSP-sized partial products, then their sum.

    ``b`` is unsigned, at most :data:`DSP_WIDTH` bits; ``a`` is cut into
    ``DSP_WIDTH``-bit chunks from its low end, each multiplied by ``b`` in its
    own DSP block and registered: the lower chunks as unsigned, the top chunk of
    a signed ``a`` as signed (it carries the sign), so that the next stage is one
    sum of shifted partial products with no sign correction. Every DSP sits
    between two registers. Returns the partial products (registered, after
    ``st.next()``; the caller re-registers what it carries) for
    :func:`split_product_sum`.
    """
    a, b = Value.cast(a), Value.cast(b)
    assert not b.shape().signed and len(b) <= DSP_WIDTH, b.shape()
    au = a.as_unsigned()
    wa, wb = len(a), len(b)
    signed_a = a.shape().signed
    pps = []
    for k in range(0, wa, DSP_WIDTH):
        chunk = au[k: k + DSP_WIDTH]
        if signed_a and k + DSP_WIDTH >= wa:
            chunk = chunk.as_signed()
        pps.append((k, st.product(f"{name}_pp{k // DSP_WIDTH}", chunk, b)))
    return pps, (signed_a, wa, wb)


def split_product_sum(st: "_Stage", parts, name: str) -> Signal:
    """The second stage of :func:`split_product`: the registered sum of the partial products."""
    pps, (signed_a, wa, wb) = parts
    total = sum(pp << k for k, pp in pps)
    shape = signed(wa + wb + 1) if signed_a else unsigned(wa + wb)
    return st.reg(name, total, shape)


class _Stage:
    """Builds a pipeline: each :meth:`reg` call registers values into the next stage."""

    def __init__(self, m: Module, valid: Value, prefix: str, platform=None):
        self.m = m
        self.platform = platform
        self.prefix = prefix
        self.depth = 0
        self.valid = valid

    def reg(self, name: str, value, shape=None) -> Signal:
        """A data register of the next stage: reset-less (only the valid bits are reset; a reset
        fanned out to every data register of the pipelines was a critical path)."""
        value = Value.cast(value)
        sig = Signal(shape if shape is not None else value.shape(),
                     name=f"{self.prefix}{self.depth + 1}_{name}", reset_less=True)
        self.m.d.sync += sig.eq(value)
        return sig

    def product(self, name: str, a: Value, b: Value) -> Signal:
        """``a * b`` registered into the next stage; on an ECP5 in the DSP block's own output
        register (:func:`~metafab.hw.fixed.product_register`)."""
        return product_register(self.m, self.platform, a, b, name=f"{self.prefix}{self.depth + 1}_{name}")

    def next(self) -> Signal:
        self.depth += 1
        v = Signal(name=f"{self.prefix}{self.depth}_valid")
        self.m.d.sync += v.eq(self.valid)
        self.valid = v
        return v


def _tagged(fields: dict, tag_width: int) -> data.StructLayout:
    return data.StructLayout({**fields, "tag": unsigned(max(1, tag_width))})


class ScaleRound(wiring.Component):
    """``saturate(round(a * b * 2**-shift), out_fmt)`` per beat, six pipeline stages.

    Operands; DSP-sized partial products (``b`` unsigned, at most 18 bits); their
    sum; barrel shift and the dropped-bits mask; rounding; saturation.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Multiplicand shapes (codes; the formats are the caller's).
    shift_width : int
        Bits of the per-beat shift.
    out_fmt : QFormat
        Result format (saturating).
    rounding : Rounding
        ``truncate`` or ``half_even``.
    tag_width : int
        Width of the tag carried along.

    Attributes
    ----------
    i : In(stream.Signature({a, b, shift, tag}, always_ready=True))
    o : Out(stream.Signature({value, tag}, always_ready=True))
    """

    LATENCY = SCALE_LATENCY

    def __init__(self, *, a_shape, b_shape, shift_width: int, out_fmt: QFormat, rounding: Rounding,
                 tag_width: int = 1):
        self.in_layout = _tagged({"a": a_shape, "b": b_shape, "shift": unsigned(shift_width)}, tag_width)
        self.out_layout = _tagged({"value": shape_of(out_fmt)}, tag_width)
        self._out_fmt = out_fmt
        self._rounding = Rounding.parse(rounding)
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        st = _Stage(m, self.i.valid, "sr", platform)
        # 1: operands
        a = st.reg("a", self.i.payload.a)
        b = st.reg("b", self.i.payload.b)
        sh = st.reg("shift", self.i.payload.shift)
        tag = st.reg("tag", self.i.payload.tag)
        st.next()
        # 2, 3: the product, DSP-sized partial products then their sum
        parts = split_product(st, a, b, "p")
        sh, tag = st.reg("shift", sh), st.reg("tag", tag)
        st.next()
        p = split_product_sum(st, parts, "prod")
        # the dropped-bits mask is decoded here, a stage before its use (the decode, the masking
        # and the wide OR in one stage were a critical path)
        mask = st.reg("mask", dropped_mask(len(p), sh))
        sh, tag = st.reg("shift", sh), st.reg("tag", tag)
        st.next()
        # 4: barrel shift, and the dropped bits' OR
        t_, sticky_ = round_parts(p, sh, mask)
        t = st.reg("t", t_)
        sticky = st.reg("sticky", sticky_)
        tag = st.reg("tag", tag)
        st.next()
        # 5: round
        r = st.reg("rounded", round_finish(t, sticky, self._rounding))
        tag = st.reg("tag", tag)
        st.next()
        # 6: saturate
        out = st.reg("value", saturate(r, self._out_fmt), shape_of(self._out_fmt))
        tag = st.reg("tag", tag)
        st.next()
        assert st.depth == self.LATENCY
        m.d.comb += [self.o.valid.eq(st.valid), self.o.payload.value.eq(out), self.o.payload.tag.eq(tag)]
        return m


class RecipUnit(wiring.Component):
    """Reciprocal (``kind="recip"``) or inverse square root (``kind="rsqrt"``) of an unsigned integer.

    Output ``y`` (``UQ1.H``) and ``exp`` with ``1/x ~= y * 2**-(H + exp)``
    (``exp = L``) or ``1/sqrt(x) ~= y * 2**-(H + exp)`` (``exp = k``), exactly
    :func:`metafab.reference.match_fixed.reciprocal` / ``rsqrt`` for ``cfg``.

    Stages: leading-one position; normalised mantissa; table read (a ROM);
    then, for method ``newton``, the products of one Newton-Raphson step, each
    registered and rounded in the next stage; an output register.

    Parameters
    ----------
    config : MatchConfig
    kind : str
        ``"recip"`` or ``"rsqrt"``.
    in_width : int
        Width of the unsigned input.
    tag_width : int
    """

    def __init__(self, *, config: MatchConfig, kind: str, in_width: int, tag_width: int = 1):
        if kind not in ("recip", "rsqrt"):
            reject(self, UserError(f"kind must be 'recip' or 'rsqrt', got {kind!r}"))
        if not 1 <= in_width <= 62:
            reject(self, UserError(f"in_width must be in 1..62, got {in_width}"))
        self._cfg = config
        self._kind = kind
        self._in_width = in_width
        H = config.mant_bits
        self._exp_width = max(1, in_width.bit_length())
        self.in_layout = _tagged({"x": unsigned(in_width)}, tag_width)
        self.out_layout = _tagged({"y": unsigned(H + 1), "exp": unsigned(self._exp_width)}, tag_width)
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    @property
    def method(self) -> str:
        return self._cfg.recip_method if self._kind == "recip" else self._cfg.rsqrt_method

    @property
    def LATENCY(self) -> int:  # noqa: N802 - a constant of the instance
        return latency_recip(self._cfg, self._kind)

    def elaborate(self, platform):
        cfg, kind = self._cfg, self._kind
        H = cfg.mant_bits
        rnd = cfg.newton_rounding
        m = Module()
        rsq = kind == "rsqrt"
        B = cfg.rsqrt_table_bits if rsq else cfg.recip_table_bits
        table = mx.rsqrt_table(cfg) if rsq else mx.recip_table(cfg)
        offset = 1 << (B - 2) if rsq else 1 << (B - 1)
        g = 2 if rsq else 1  # the mantissa lies in [2**H, 2**(H+g))
        mw = H + g
        mant = QFormat(1, H, signed=False)

        st = _Stage(m, self.i.valid, "rc", platform)
        x0 = self.i.payload.x
        # 1: leading one (a log-depth priority encoder)
        bl = priority_bit_length(x0, m, "rc0_bitlen")
        x1 = st.reg("x", x0)
        zero = st.reg("zero", bl == 0)
        l_ = Mux(bl == 0, 0, bl - 1)
        e = st.reg("exp", l_ >> 1 if rsq else l_, unsigned(self._exp_width))
        tag = st.reg("tag", self.i.payload.tag)
        st.next()
        # 2: mantissa m = floor(x * 2**(H - shift)), shift = 2k (rsqrt) or L (recip): a barrel shifter
        shift = (e << 1) if rsq else e
        wide = Cat(Const(0, H), x1)
        mm = st.reg("mant", (wide >> shift)[:mw], unsigned(mw))

        def carry(*vals):
            return [st.reg(f"c{n}", v) for n, v in enumerate(vals)]

        e, zero, tag = carry(e, zero, tag)
        st.next()
        # 3: table read (a ROM), 4: its output registered
        rom = Memory(shape=unsigned(H + 1), depth=len(table), init=[int(v) for v in table])
        m.submodules.rom = rom
        rp = rom.read_port()
        idx = (mm >> (mw - B)) - offset
        m.d.comb += [rp.addr.eq(idx[: max(1, (len(table) - 1).bit_length())]), rp.en.eq(1)]
        mm, e, zero, tag = carry(mm, e, zero, tag)
        st.next()
        y0 = st.reg("y0", rp.data)
        mm, e, zero, tag = carry(mm, e, zero, tag)
        st.next()

        def product(a, b, name, *vals):
            """a * b over two stages (split_product), carrying ``vals`` along."""
            parts = split_product(st, a, b, name)
            vals = carry(*vals)
            st.next()
            p = split_product_sum(st, parts, name)
            vals = carry(*vals)
            st.next()
            return p, vals

        if self.method == "table":
            y = y0
        elif not rsq:
            # y = y0 (2 - m y0): t = round(m y0 2**-H); y = round(y0 (2**(H+1) - t) 2**-H)
            p1, (y0, e, zero, tag) = product(mm, y0, "p1", y0, e, zero, tag)
            t2 = st.reg("t2", (1 << (H + 1)) - round_shift(p1, H, rnd), unsigned(H + 2))
            y0, e, zero, tag = carry(y0, e, zero, tag)
            st.next()
            p2, (e, zero, tag) = product(t2, y0, "p2", e, zero, tag)
            y = round_shift(p2, H, rnd)
        else:
            # y = y0 (3 - m y0^2) / 2: a = round(y0^2 2**-H); b = round(m a 2**-H);
            # y = round(y0 (3 * 2**H - b) 2**-(H+1))
            p1, (y0, mm, e, zero, tag) = product(y0, y0, "p1", y0, mm, e, zero, tag)
            a = st.reg("a", round_shift(p1, H, rnd), unsigned(H + 2))
            y0, mm, e, zero, tag = carry(y0, mm, e, zero, tag)
            st.next()
            p2, (y0, e, zero, tag) = product(mm, a[:DSP_WIDTH], "p2", y0, e, zero, tag)
            c = st.reg("c", (3 << H) - round_shift(p2, H, rnd), unsigned(H + 2))
            y0, e, zero, tag = carry(y0, e, zero, tag)
            st.next()
            p3, (e, zero, tag) = product(c, y0, "p3", e, zero, tag)
            y = round_shift(p3, H + 1, rnd)
        # last: saturate to UQ1.H; a zero input gives (0, 0)
        y_out = st.reg("y", Mux(zero, 0, saturate(y.as_signed() if y.shape().signed else y, mant)),
                       unsigned(H + 1))
        e_out = st.reg("exp", Mux(zero, 0, e), unsigned(self._exp_width))
        tag = st.reg("tag", tag)
        st.next()
        assert st.depth == self.LATENCY, (st.depth, self.LATENCY)
        m.d.comb += [self.o.valid.eq(st.valid), self.o.payload.y.eq(y_out), self.o.payload.exp.eq(e_out),
                     self.o.payload.tag.eq(tag)]
        return m


class ExpTable(wiring.Component):
    """``e = exp(z)`` for ``logit_fmt`` codes ``z`` through the exp table, four pipeline stages.

    Stages: ``-z``; the table index ``round(-z * 2**(B - r))`` (the
    ``exp_index`` rounding) clamped at 0 and whether it lies inside the table;
    the ROM; the entry, or 0 outside the table, registered. Matches
    :func:`metafab.reference.match_fixed.exp_lookup`.
    """

    LATENCY = EXP_LATENCY

    def __init__(self, *, config: MatchConfig, tag_width: int = 1):
        self._cfg = config
        # z = x - x_ref of two logit_fmt codes: one bit wider than logit_fmt
        self.in_layout = _tagged({"z": signed(config.logit_fmt.width + 1)}, tag_width)
        self.out_layout = _tagged({"e": shape_of(config.exp_fmt)}, tag_width)
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(self.out_layout, always_ready=True)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        table = mx.exp_table(cfg)
        n = len(table)
        B = cfg.exp_table_bits
        shift = cfg.logit_fmt.frac_bits - cfg.exp_shift_bits
        st = _Stage(m, self.i.valid, "ex", platform)
        # 1: -z
        neg = st.reg("neg", -self.i.payload.z, signed(cfg.logit_fmt.width + 2))
        tag = st.reg("tag", self.i.payload.tag)
        st.next()
        # 2: the table index (exp_index rounding), clamped at 0, and whether it is inside the table
        idx = round_shift(neg, shift, cfg.exp_index_rounding)
        inside = st.reg("inside", idx < n)
        idx = st.reg("idx", Mux(idx < 0, 0, idx)[:B], unsigned(B))
        tag = st.reg("tag", tag)
        st.next()
        # 3: the ROM; 4: the entry (or 0 outside the table), registered
        rom = Memory(shape=shape_of(cfg.exp_fmt), depth=n, init=[int(v) for v in table])
        m.submodules.rom = rom
        rp = rom.read_port()
        m.d.comb += [rp.addr.eq(idx), rp.en.eq(1)]
        inside = st.reg("inside", inside)
        tag = st.reg("tag", tag)
        st.next()
        e = st.reg("e", Mux(inside, rp.data, 0), shape_of(cfg.exp_fmt))
        tag = st.reg("tag", tag)
        st.next()
        assert st.depth == self.LATENCY
        m.d.comb += [self.o.valid.eq(st.valid), self.o.payload.e.eq(e), self.o.payload.tag.eq(tag)]
        return m


class Argmax(wiring.Component):
    """Index of the largest value of a sequence (``first`` .. ``last`` beats), the first one on ties.

    The result is valid (``o.valid`` for one cycle) the cycle after the
    ``last`` beat.
    """

    def __init__(self, *, width: int, count: int):
        self._count = count
        self.in_layout = data.StructLayout({"value": unsigned(width), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout, always_ready=True)),
            "o": Out(stream.Signature(range(max(2, count)), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        best = Signal.like(self.i.payload.value)
        best_idx = Signal(range(max(2, self._count)))
        n = Signal(range(max(2, self._count)))
        p = self.i.payload
        m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid):
            here = Mux(p.first, 0, n)
            better = p.first | (p.value > best)
            new_best = Mux(better, p.value, best)
            new_idx = Mux(better, here, best_idx)
            m.d.sync += [best.eq(new_best), best_idx.eq(new_idx), n.eq(here + 1)]
            with m.If(p.last):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(new_idx)]
        return m
