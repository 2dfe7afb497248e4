"""PLLs that make the engine's clock from a board oscillator: the divider search and the primitives.

The search is plain Python on the vendors' equations and limits; the chosen
setting is the one whose output is the highest frequency at or below the one
asked for (ties: the lowest VCO, then the smallest dividers). The same
setting drives the primitive's parameters, the clock constraint given to
nextpnr and the UART divisor, so every figure is about one clock.

ECP5 ``EHXPLLL`` (Lattice TN1263, feedback from CLKOP)::

    f_pfd = f_in / CLKI_DIV               3.125 .. 400 MHz
    f_out = f_in * CLKFB_DIV / CLKI_DIV   3.125 .. 400 MHz
    f_vco = f_out * CLKOP_DIV             400 .. 800 MHz
    CLKI_DIV 1..128, CLKFB_DIV 1..80, CLKOP_DIV 1..128

iCE40 ``SB_PLL40_PAD`` (Lattice iCE40 sysCLOCK PLL guide, SIMPLE feedback; the PAD variant because a
board's oscillator pin is the PLL's own input pad, which a fabric clock buffer would block)::

    f_pfd = f_in / (DIVR + 1)             10 .. 133 MHz
    f_vco = f_pfd * (DIVF + 1)            533 .. 1066 MHz
    f_out = f_vco / 2**DIVQ               16 .. 275 MHz
    DIVR 0..15, DIVF 0..127, DIVQ 1..6; FILTER_RANGE from f_pfd
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import Out

from metafab.reference.errors import UserError

__all__ = ["PllSetting", "pll_setting", "ecp5_pll", "ice40_pll", "LIMITS", "Pll", "lock_reset"]

#: The devices' limits, in MHz: ``(low, high)`` per quantity.
LIMITS = {
    "ecp5": {"in": (8.0, 400.0), "pfd": (3.125, 400.0), "vco": (400.0, 800.0), "out": (3.125, 400.0)},
    "ice40": {"in": (10.0, 133.0), "pfd": (10.0, 133.0), "vco": (533.0, 1066.0), "out": (16.0, 275.0)},
}


@dataclass(frozen=True)
class PllSetting:
    """One PLL configuration: the family, the frequencies (MHz) and the primitive's dividers."""

    family: str
    in_mhz: float
    requested_mhz: float
    out_mhz: float
    vco_mhz: float
    pfd_mhz: float
    dividers: dict = field(default_factory=dict)

    @property
    def out_hz(self) -> float:
        return self.out_mhz * 1e6

    def to_dict(self) -> dict:
        return {"family": self.family, "in_mhz": self.in_mhz, "requested_mhz": self.requested_mhz,
                "out_mhz": round(self.out_mhz, 6), "vco_mhz": round(self.vco_mhz, 6),
                "pfd_mhz": round(self.pfd_mhz, 6), "dividers": dict(self.dividers)}


def _inside(value: float, limits: tuple[float, float]) -> bool:
    return limits[0] - 1e-9 <= value <= limits[1] + 1e-9


def _check_request(family: str, in_mhz: float, want_mhz) -> float:
    lim = LIMITS[family]
    if isinstance(want_mhz, bool) or not isinstance(want_mhz, (int, float)) or want_mhz != want_mhz:
        raise UserError(f"clock {want_mhz!r} MHz must be a number")
    if not _inside(in_mhz, lim["in"]):
        raise UserError(f"a {in_mhz:g} MHz oscillator is outside the {family} PLL's input range "
                        f"{lim['in'][0]:g}..{lim['in'][1]:g} MHz")
    if not lim["out"][0] <= want_mhz:
        raise UserError(f"clock {want_mhz:g} MHz is below what the {family} PLL makes from {in_mhz:g} MHz; "
                        f"valid: {lim['out'][0]:g}..{lim['out'][1]:g} MHz")
    return float(min(want_mhz, lim["out"][1]))


def _best(candidates, family, in_mhz, want_mhz) -> PllSetting:
    best, lowest = None, None
    for key, out, vco, pfd, dividers in candidates:
        lowest = out if lowest is None else min(lowest, out)
        if out > want_mhz + 1e-9:
            continue
        rank = (-out, vco, key)
        if best is None or rank < best[0]:
            best = (rank, PllSetting(family, in_mhz, want_mhz, out, vco, pfd, dividers))
    if best is None:
        lim = LIMITS[family]
        low = f"{lowest:.4g}" if lowest is not None else f"{lim['out'][0]:g}"
        raise UserError(f"no {family} PLL setting makes {want_mhz:g} MHz or less from {in_mhz:g} MHz; "
                        f"valid: {low}..{lim['out'][1]:g} MHz")
    return best[1]


def ecp5_pll(in_mhz: float, want_mhz: float) -> PllSetting:
    """The ``EHXPLLL`` setting with the highest output at or below ``want_mhz`` (see the module docstring)."""
    want = _check_request("ecp5", in_mhz, want_mhz)
    lim = LIMITS["ecp5"]

    def candidates():
        for clki in range(1, 129):
            pfd = in_mhz / clki
            if not _inside(pfd, lim["pfd"]):
                continue
            for clkfb in range(1, 81):
                out = pfd * clkfb
                if not _inside(out, lim["out"]) or out > want + 1e-9:
                    continue
                for clkop in range(1, 129):
                    vco = out * clkop
                    if _inside(vco, lim["vco"]):
                        yield ((clki, clkfb, clkop), out, vco, pfd,
                               {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                                "CLKOP_CPHASE": clkop - 1})
                        break  # the lowest VCO for this output

    return _best(candidates(), "ecp5", in_mhz, want)


def _ice40_filter_range(pfd_mhz: float) -> int:
    """FILTER_RANGE for SIMPLE feedback from the phase detector's frequency (Lattice's table)."""
    for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if pfd_mhz < bound:
            return value
    return 6


def ice40_pll(in_mhz: float, want_mhz: float) -> PllSetting:
    """The ``SB_PLL40_PAD`` setting with the highest output at or below ``want_mhz``."""
    want = _check_request("ice40", in_mhz, want_mhz)
    lim = LIMITS["ice40"]

    def candidates():
        for divr in range(16):
            pfd = in_mhz / (divr + 1)
            if not _inside(pfd, lim["pfd"]):
                continue
            for divf in range(128):
                vco = pfd * (divf + 1)
                if not _inside(vco, lim["vco"]):
                    continue
                for divq in range(1, 7):
                    out = vco / 2**divq
                    if _inside(out, lim["out"]):
                        yield ((divr, divf, divq), out, vco, pfd,
                               {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": _ice40_filter_range(pfd)})

    return _best(candidates(), "ice40", in_mhz, want)


def pll_setting(family: str, in_mhz: float, want_mhz: float) -> PllSetting:
    """The PLL setting of ``family`` (``ecp5``/``ice40``) for an oscillator of ``in_mhz``."""
    family = str(family).lower()
    if family == "ecp5":
        return ecp5_pll(in_mhz, want_mhz)
    if family == "ice40":
        return ice40_pll(in_mhz, want_mhz)
    raise UserError(f"no PLL model for the {family!r} family; valid: ecp5, ice40")


class Pll(wiring.Component):
    """The family's PLL primitive for ``setting``, fed by the oscillator's pin ``pin`` (a port requested
    with ``dir="-"``): ``clk_out`` and ``locked``.

    Elaborated only for a platform of that family (the primitive is the vendor's cell).
    """

    def __init__(self, setting: PllSetting, pin):
        self.setting = setting
        self.pin = pin
        super().__init__({"clk_out": Out(1), "locked": Out(1)})

    def elaborate(self, platform):
        m = Module()
        s, d = self.setting, self.setting.dividers
        if s.family == "ecp5":
            m.submodules.clk_buf = clk_buf = io.Buffer("i", self.pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{s.in_mhz:.6f}", a_FREQUENCY_PIN_CLKOP=f"{s.out_mhz:.6f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD", p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=d["CLKOP_DIV"], p_CLKOP_CPHASE=d["CLKOP_CPHASE"], p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=d["CLKFB_DIV"], p_CLKI_DIV=d["CLKI_DIV"],
                i_CLKI=clk_buf.i, o_CLKOP=self.clk_out, i_CLKFB=self.clk_out, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=self.locked,
            )
        elif s.family == "ice40":
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=d["DIVR"], p_DIVF=d["DIVF"], p_DIVQ=d["DIVQ"],
                p_FILTER_RANGE=d["FILTER_RANGE"],
                io_PACKAGEPIN=self.pin.io, o_PLLOUTGLOBAL=self.clk_out, o_LOCK=self.locked,
                i_RESETB=1, i_BYPASS=0,
            )
        else:
            raise UserError(f"no PLL primitive for the {s.family!r} family")
        return m


def lock_reset(m: Module, locked, cycles: int = 15) -> Signal:
    """A reset, active high, held while ``locked`` is low and for ``cycles`` cycles of the new clock after
    it rises (a counter in the ``sync`` domain that only ``locked`` resets)."""
    count = Signal(range(cycles + 1), init=cycles, reset_less=True)
    active = Signal(init=1, reset_less=True)
    with m.If(~locked):
        m.d.sync += count.eq(cycles)
    with m.Elif(count != 0):
        m.d.sync += count.eq(count - 1)
    m.d.sync += active.eq(~locked | (count != 0))
    return active

