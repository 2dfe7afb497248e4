"""Fixed-point arithmetic as Amaranth hardware, bit-equal to :mod:`metafab.reference.fixed`.

The functions build combinational Amaranth expressions for the reference's
operations (same formats, same rounding, same overflow, same order):
:func:`shape_of`, :func:`resize`, :func:`round_shift`, :func:`saturate`,
:func:`xorshift32_next`. Both engines take their rounding and saturation
from here: :func:`half_even_up` is the one round-half-to-even rule,
:func:`round_shift_parts` / :func:`round_shift` drop a constant number of
fraction bits with it, and :func:`fits` / :func:`clamp` are the
saturation's range test and limit selection (used whole by :func:`saturate`,
or split over pipeline stages by the MAML engine). :func:`out_of_range` is
the input check of a payload value against its format.

:class:`MacLane` is a stand-alone multiply-accumulate lane (a stream of
``(a, b, last)`` operand pairs in, one resized dot product out per packet),
the reference point of ``metafab bench`` and of the MAC-lane benches; the
engines do not instantiate it (they build their lanes from
:func:`registered_product` and their own adder trees).
"""


from amaranth.hdl import (
    Cat,
    ClockSignal,
    Const,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Shape,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from metafab.reference.config import MacLaneConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import Overflow, QFormat, Rounding

__all__ = ["shape_of", "extend", "resize", "round_shift", "round_shift_parts", "half_even_up", "saturate",
           "fits", "clamp", "out_of_range", "wrap", "xorshift32_next", "Xorshift32", "MacLane",
           "registered_product", "product_register", "replicated_register", "global_net"]


def reject(component, exc: Exception):
    """Raise ``exc`` from a component constructor without Amaranth's "created but never used" warning."""
    component._MustUse__silence = True
    raise exc


#: Operand width of the ECP5 sysDSP multiplier (MULT18X18D).
ECP5_DSP_WIDTH = 18


def _ecp5_fits(sa: Shape, sb: Shape) -> bool:
    """Both operands fit the MULT18X18D's ports (as signed 18-bit codes when either is signed)."""
    if sa.signed or sb.signed:
        return all(s.width + (0 if s.signed else 1) <= ECP5_DSP_WIDTH for s in (sa, sb))
    return max(sa.width, sb.width) <= ECP5_DSP_WIDTH


def _ecp5_mult(m: Module, a, b, out, *, signed_a: int, signed_b: int, input_regs: bool, name: str):
    """One ``MULT18X18D`` with its output register on the sync clock, its input registers too when
    ``input_regs``; ``out`` takes the low bits of the 36-bit product. ``signed_a`` / ``signed_b``:
    how the block reads each 18-bit operand (its ``SIGNEDA`` / ``SIGNEDB`` inputs)."""
    a18, b18, p36 = Signal(ECP5_DSP_WIDTH), Signal(ECP5_DSP_WIDTH), Signal(2 * ECP5_DSP_WIDTH)
    m.d.comb += [a18.eq(a), b18.eq(b), out.eq(p36[:len(out)])]  # extended as each operand's shape says
    ports = {}
    for i in range(ECP5_DSP_WIDTH):
        ports[f"i_A{i}"], ports[f"i_B{i}"], ports[f"i_C{i}"] = a18[i], b18[i], Const(0, 1)
    for i in range(2 * ECP5_DSP_WIDTH):
        ports[f"o_P{i}"] = p36[i]
    for k in (1, 2, 3):
        ports[f"i_CLK{k}"], ports[f"i_CE{k}"], ports[f"i_RST{k}"] = Const(0, 1), Const(0, 1), Const(0, 1)
    in_clk = "CLK0" if input_regs else "NONE"
    m.submodules[f"{name}_dsp"] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=in_clk, p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK=in_clk, p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
        i_SIGNEDA=Const(signed_a, 1), i_SIGNEDB=Const(signed_b, 1),
        i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal("sync"), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
        **ports,
    )


def registered_product(m: Module, platform, a, b, *, name: str) -> Signal:
    """The product ``a * b`` two clock cycles later: operands registered, then the product.

    Every target gets the same cycles and the same bits (the exact product,
    ``len(a) + len(b)`` bits, signed if either operand is). On an ECP5 the two
    registers are the sysDSP block's own input and output registers (a
    ``MULT18X18D`` with ``REG_INPUTA/B`` and ``REG_OUTPUT`` on the sync clock),
    so that the multiplier is not on a fabric path;
    this is what sets the engines' clock there. Elsewhere (simulation, iCE40, or
    operands wider than 18 bits) they are flip-flops around a multiplier that
    Yosys maps itself. The registers hold data only (whoever uses the product
    knows from its own valid bits when it means something), so they are not
    reset: a reset reaching every lane would be one more chip-wide net.
    """
    a, b = Value.cast(a), Value.cast(b)
    sa, sb = a.shape(), b.shape()
    width = sa.width + sb.width
    out = Signal(signed(width) if (sa.signed or sb.signed) else unsigned(width), name=name, reset_less=True)
    if getattr(platform, "family", None) == "ecp5" and _ecp5_fits(sa, sb):
        is_signed = int(sa.signed or sb.signed)
        _ecp5_mult(m, a, b, out, signed_a=is_signed, signed_b=is_signed, input_regs=True, name=name)
    else:
        ra, rb = Signal(sa, name=f"{name}_a", reset_less=True), Signal(sb, name=f"{name}_b", reset_less=True)
        m.d.sync += [ra.eq(a), rb.eq(b), out.eq(ra * rb)]
    return out


def product_register(m: Module, platform, a, b, *, name: str) -> Signal:
    """The product ``a * b`` one clock cycle later: the product registered (operands as they are).

    Same bits on every target (the exact product, ``len(a) + len(b)`` bits,
    signed if either operand is). On an ECP5 the register is the sysDSP
    block's own output register (a ``MULT18X18D`` with ``REG_OUTPUT`` on the
    sync clock), so that no fabric route follows the multiplier in the same
    cycle (the DSP columns can be far from the logic that reads the product).
    Elsewhere a flip-flop after a multiplier that Yosys maps itself. Not reset
    (data only).
    """
    a, b = Value.cast(a), Value.cast(b)
    sa, sb = a.shape(), b.shape()
    width = sa.width + sb.width
    out = Signal(signed(width) if (sa.signed or sb.signed) else unsigned(width), name=name, reset_less=True)
    # each operand read with its own signedness (SIGNEDA / SIGNEDB), so 18 bits of either kind fit
    if getattr(platform, "family", None) == "ecp5" and max(sa.width, sb.width) <= ECP5_DSP_WIDTH:
        _ecp5_mult(m, a, b, out, signed_a=int(sa.signed), signed_b=int(sb.signed), input_regs=False,
                   name=name)
    else:
        m.d.sync += out.eq(a * b)
    return out


def replicated_register(m: Module, platform, value, copies: int, *, name: str) -> list[Signal]:
    """``copies`` registers that all take ``value`` at every clock edge (reset to 0 with the sync domain).

    For a signal that fans out to many places across the chip (a read
    address shared by every lane bank): each group of loads gets its own
    copy. On an ECP5 each bit of each copy is a ``TRELLIS_FF`` of its own, so
    that synthesis does not merge the copies back into one register;
    elsewhere they are ordinary registers (simulation: the same values).
    """
    value = Value.cast(value)
    outs = [Signal(value.shape(), name=f"{name}{k}") for k in range(copies)]
    if getattr(platform, "family", None) == "ecp5":
        for k, out in enumerate(outs):
            for b in range(len(value)):
                m.submodules[f"{name}{k}_ff{b}"] = Instance(
                    "TRELLIS_FF",
                    p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR", p_REGSET="RESET",
                    p_SRMODE="LSR_OVER_CE",
                    i_CLK=ClockSignal("sync"), i_LSR=ResetSignal("sync", allow_reset_less=True),
                    i_CE=Const(1, 1), i_DI=value[b], o_Q=out[b],
                )
    else:
        m.d.sync += [out.eq(value) for out in outs]
    return outs


def global_net(m: Module, platform, value, *, name: str) -> Signal:
    """``value`` (one bit) carried on a global (clock) network where the device has a buffer for it.

    For a synchronous reset that reaches thousands of registers: on an ECP5 it
    goes through a ``DCCA`` onto a primary clock network, which reaches every
    register's set/reset input with the same short delay (in fabric routing
    that fan-out was the critical path). Elsewhere (and in simulation without a
    platform) the value itself.
    """
    out = Signal(name=name)
    if getattr(platform, "family", None) == "ecp5":
        m.submodules[f"{name}_dcca"] = Instance("DCCA", i_CLKI=value, i_CE=Const(1, 1), o_CLKO=out)
    else:
        m.d.comb += out.eq(value)
    return out


def delayed(m: Module, value, n: int, name: str) -> Value:
    """``value`` delayed by ``n`` register stages (named ``{name}_d1`` ... ``{name}_dn``)."""
    out = Value.cast(value)
    for k in range(n):
        r = Signal(out.shape(), name=f"{name}_d{k + 1}")
        m.d.sync += r.eq(out)
        out = r
    return out


def shape_of(fmt: QFormat) -> Shape:
    """The Amaranth shape holding codes of ``fmt``."""
    return signed(fmt.width) if fmt.signed else unsigned(fmt.width)


def fits(value: Value, width: int) -> Value:
    """1 when the signed code ``value`` lies in ``[-2**(width-1), 2**(width-1))``.

    Its bits from ``width - 1`` up are then all equal (all copies of the sign): an AND / OR
    over those bits, not a magnitude compare (a carry chain on an FPGA).
    """
    top = Value.cast(value)[width - 1:]
    return top.all() | ~top.any()


def clamp(value: Value, in_range: Value, negative: Value, dst: QFormat) -> Value:
    """``value`` as a ``dst`` code when ``in_range``, else ``dst``'s limit on the side ``negative`` says.

    The selection step of a saturation whose range test (``in_range``, e.g. :func:`fits`) and
    sign may come from elsewhere (an earlier pipeline stage).
    """
    return Mux(in_range, wrap(value, dst), Mux(negative, dst.min_code, dst.max_code))


def out_of_range(value: Value, fmt: QFormat) -> Value:
    """1 when the integer ``value`` is not a code of ``fmt`` (below its ``min_code`` or above ``max_code``)."""
    return (value < fmt.min_code) | (value > fmt.max_code)


def saturate(value: Value, dst: QFormat) -> Value:
    """Clamp an integer code expression to ``dst``'s range; result has ``dst``'s shape.

    ``dst``'s range is all codes of its width, so the value is in range exactly when its
    bits above that width are copies of the sign (:func:`fits`; an unsigned ``dst`` also
    needs the sign to be 0): OR / AND trees over those bits, not magnitude compares (carry
    chains on an FPGA). Out of range, :func:`clamp` picks the limit on the value's side.
    """
    v = Value.cast(value)
    w, n = len(v), dst.width
    if v.shape().signed:
        negative = v[w - 1]
        if dst.signed:
            in_range = fits(v, n) if w > n else Const(1, 1)
        else:
            in_range = ~negative & ~v[n:].any() if w > n else ~negative
    else:
        top = n - 1 if dst.signed else n  # an unsigned value fits when its bits from here up are 0
        negative = Const(0, 1)
        in_range = ~v[top:].any() if w > top else Const(1, 1)
    return wrap(clamp(v, in_range, negative, dst), dst)


def extend(value: Value, width: int) -> Value:
    """``value`` sign- or zero-extended (by its own signedness) to at least ``width`` bits."""
    v = Value.cast(value)
    if len(v) >= width:
        return v
    fill = v[-1].replicate(width - len(v)) if v.shape().signed else Const(0, width - len(v))
    ext = Cat(v, fill)
    return ext.as_signed() if v.shape().signed else ext


def wrap(value: Value, dst: QFormat) -> Value:
    """Keep the low ``dst.width`` bits (two's complement wrap); result has ``dst``'s shape."""
    low = extend(value, dst.width)[: dst.width]
    return low.as_signed() if dst.signed else low.as_unsigned()


def _stochastic_bits(rnd32: Value, shift: int) -> Value:
    """The ``shift`` random bits a stochastic rounding adds (see reference Xorshift32.draw)."""
    if shift <= 32:
        return rnd32[32 - shift :]
    return Value.cast(rnd32).as_unsigned() << (shift - 32)


def half_even_up(guard: Value, sticky: Value, lsb: Value) -> Value:
    """The round-half-to-even increment (1 bit) of a truncated quotient.

    ``guard``: the first dropped bit (worth one half); ``sticky``: any later dropped bit is set;
    ``lsb``: the quotient's lowest bit. Up when the dropped part exceeds one half, or equals it
    and the quotient is odd (bit logic, not a compare against "half"). The one rounding rule of
    the reference's ``half_even``.
    """
    return guard & (sticky | lsb)


def round_shift_parts(value: Value, shift: int, rounding: Rounding | str) -> tuple[Value, Value]:
    """``(q, up)`` with ``round(value * 2**-shift) = q + up`` for a constant ``shift``.

    ``q`` is ``value >> shift`` (arithmetic; ``value << -shift`` when ``shift <= 0``) and ``up``
    the 1-bit increment of ``rounding`` (``truncate``: 0; ``half_even``: :func:`half_even_up`),
    for callers that register the two separately. Stochastic rounding needs random bits: see
    :func:`resize`.
    """
    rounding = Rounding.parse(rounding)
    v = Value.cast(value)
    if shift <= 0:
        return v << (-shift), Const(0, 1)
    q = v >> shift
    if rounding is Rounding.TRUNCATE:
        return q, Const(0, 1)
    if rounding is not Rounding.HALF_EVEN:
        raise UserError(f"round_shift_parts takes truncate or half_even rounding, got {rounding.value!r}")
    r = v.as_unsigned()[:shift]
    sticky = r[: shift - 1].any() if shift > 1 else Const(0, 1)
    return q, half_even_up(r[shift - 1], sticky, q[0])


def round_shift(value: Value, shift: int, rounding: Rounding | str) -> Value:
    """``value * 2**-shift`` rounded to an integer (a constant ``shift >= 0``), as the reference's
    :func:`~metafab.reference.fixed.round_shift` (``truncate`` or ``half_even``)."""
    v = Value.cast(value)
    if shift == 0:
        return v
    q, up = round_shift_parts(v, shift, rounding)
    if Rounding.parse(rounding) is Rounding.TRUNCATE:
        return q
    return q + up


def resize(
    value: Value,
    src: QFormat,
    dst: QFormat,
    rounding: Rounding | str = Rounding.HALF_EVEN,
    overflow: Overflow | str = Overflow.SATURATE,
    rnd32: Value | None = None,
) -> Value:
    """Re-format a code expression from ``src`` to ``dst``, as :func:`reference.fixed.resize`.

    Fraction bits are aligned exactly or dropped with ``rounding`` (stochastic
    rounding adds bits of ``rnd32``, the xorshift32 state after its step for
    this value), then the code is saturated or wrapped into ``dst``.
    Returns an expression of shape :func:`shape_of(dst) <shape_of>`.
    """
    rounding = Rounding.parse(rounding)
    overflow = Overflow.parse(overflow)
    if overflow is Overflow.ERROR:
        raise UserError("hardware overflow must be 'saturate' or 'wrap'")
    v = Value.cast(value)
    v = v.as_signed() if src.signed else v.as_unsigned()
    d = src.frac_bits - dst.frac_bits
    if d > 0:
        if rounding is Rounding.STOCHASTIC:
            if rnd32 is None:
                raise UserError("stochastic rounding needs the xorshift32 state (rnd32)")
            v = (v + _stochastic_bits(rnd32, d)) >> d
        else:
            v = round_shift(v, d, rounding)
    elif d < 0:
        v = v << (-d)
    if overflow is Overflow.SATURATE:
        return saturate(v, dst)
    return wrap(v, dst)


def xorshift32_next(x: Value) -> Value:
    """One xorshift32 step (13, 17, 5) of a 32-bit state expression (see reference)."""
    x = Value.cast(x).as_unsigned()[:32]
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    x = x ^ (x << 5)[:32]
    return x


class Xorshift32(wiring.Component):
    """A xorshift32 random source: ``state`` advances one step per cycle with ``en``.

    ``next`` is the state after the step (combinational); a stochastic
    rounding performed in the same cycle as ``en`` uses ``next``, exactly as
    :meth:`metafab.reference.fixed.Xorshift32.draw` uses the stepped state.
    """

    en: In(1)
    state: Out(32)
    next: Out(32)

    def __init__(self, *, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**32:
            reject(self, UserError(f"xorshift32 seed must be in 1..2**32-1, got {seed!r}"))
        self._seed = seed
        super().__init__()

    @property
    def seed(self) -> int:
        return self._seed

    def elaborate(self, platform):
        m = Module()
        reg = Signal(32, init=self._seed)
        m.d.comb += [self.state.eq(reg), self.next.eq(xorshift32_next(reg))]
        with m.If(self.en):
            m.d.sync += reg.eq(self.next)
        return m


class MacLane(wiring.Component):
    """A pipelined multiply-accumulate lane computing one dot product per packet.

    Input stream ``i``: payload ``{a, b, last}`` with ``a`` in ``cfg.a_fmt``,
    ``b`` in ``cfg.b_fmt``. The lane accumulates ``a*b`` exactly in
    ``cfg.acc_fmt`` (wrapping) and, after the beat with ``last`` set, emits
    ``resize(acc, acc_fmt -> out_fmt, rounding, overflow)`` on ``o``. One beat
    per cycle when ``o`` is not back-pressured; latency :attr:`LATENCY` = 5
    cycles from the cycle of the last input beat to the cycle its result is
    valid (operands, product, accumulator, rounding, output register). Matches
    :func:`metafab.reference.fixed.dot` followed by
    :func:`~metafab.reference.fixed.resize`.

    Parameters
    ----------
    config : MacLaneConfig
        Formats, rounding and overflow (the one source of truth).

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
    o : Out(stream.Signature(shape_of(out_fmt)))
    in_layout : data.StructLayout
        The input payload layout (kept because a stream signature does not expose it).
    """

    LATENCY = 5

    def __init__(self, *, config: MacLaneConfig):
        if not isinstance(config, MacLaneConfig):
            reject(self, TypeError(f"config must be a MacLaneConfig, got {config!r}"))
        self._cfg = config
        self.in_layout = data.StructLayout(
            {"a": shape_of(config.a_fmt), "b": shape_of(config.b_fmt), "last": 1}
        )
        super().__init__(
            {
                "i": In(stream.Signature(self.in_layout)),
                "o": Out(stream.Signature(shape_of(config.out_fmt))),
            }
        )

    @property
    def config(self) -> MacLaneConfig:
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        pfmt = cfg.product_fmt
        shift = cfg.acc_fmt.frac_bits - pfmt.frac_bits

        adv = Signal(name="adv")  # the whole pipeline moves when the output can take a value
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]

        # stage 1: operand registers
        v1, last1 = Signal(name="v1"), Signal(name="last1")
        a1 = Signal(shape_of(cfg.a_fmt))
        b1 = Signal(shape_of(cfg.b_fmt))
        # stage 2: product register
        v2, last2 = Signal(name="v2"), Signal(name="last2")
        p2 = Signal(shape_of(pfmt))
        # stage 3: accumulator, and the finished sum of a packet
        acc = Signal(shape_of(cfg.acc_fmt))
        start = Signal(init=1)
        v3 = Signal(name="v3")
        fin = Signal(shape_of(cfg.acc_fmt))
        # stage 4: rounded to the output's fraction bits (integer bits kept)
        rfmt = QFormat(cfg.acc_fmt.int_bits + 1, cfg.out_fmt.frac_bits)
        v4 = Signal(name="v4")
        rounded = Signal(shape_of(rfmt))

        rng = Xorshift32(seed=cfg.seed) if cfg.rounding is Rounding.STOCHASTIC else None
        if rng is not None:
            m.submodules.rng = rng

        acc_next = wrap(Mux(start, 0, acc) + (p2 << shift), cfg.acc_fmt)

        with m.If(adv):
            m.d.sync += [
                v1.eq(self.i.valid),
                a1.eq(self.i.payload.a),
                b1.eq(self.i.payload.b),
                last1.eq(self.i.payload.last),
                v2.eq(v1),
                p2.eq(a1 * b1),
                last2.eq(last1),
                v3.eq(v2 & last2),
                v4.eq(v3),
                self.o.valid.eq(v4),
            ]
            with m.If(v2):
                m.d.sync += [acc.eq(acc_next), start.eq(last2)]
                with m.If(last2):
                    m.d.sync += fin.eq(acc_next)
            with m.If(v3):
                rnd = None
                if rng is not None:
                    m.d.comb += rng.en.eq(1)
                    rnd = rng.next
                m.d.sync += rounded.eq(resize(fin, cfg.acc_fmt, rfmt, cfg.rounding, Overflow.WRAP, rnd))
            with m.If(v4):
                m.d.sync += self.o.payload.eq(resize(rounded, rfmt, cfg.out_fmt, Rounding.TRUNCATE, cfg.overflow))
        return m
