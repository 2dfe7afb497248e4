"""The FPGA boards ``metafab build`` targets, by name.

Each :class:`Board` names an amaranth-boards platform class, the FPGA family
and device it carries, the three pins the serial harness
(:class:`metafab.hw.harness.SerialHarness`) uses on it, and the clock target
the flow asks place-and-route to meet when the user gives none.

The harness pins are on expansion connectors (iCEBreaker PMOD1A, ULX3S GPIO
header), so that a built bitstream can be driven from outside; their exact
location does not change resource counts and barely changes Fmax.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.build import Attrs, Pins, Resource, Subsignal

from metafab.hw.harness import RESOURCE_NAME
from metafab.reference.errors import UserError

__all__ = ["Board", "BOARDS", "get_board", "board_names"]


@dataclass(frozen=True)
class Board:
    """One build target.

    Attributes
    ----------
    name : str
        The name users type (``--board``).
    family : str
        ``"ice40"`` or ``"ecp5"``: selects the tools and the cell names in reports.
    device : str
        The FPGA part, as the platform names it (``iCE40UP5K``, ``LFE5U-85F``).
    package : str
        The package, as the platform names it.
    speed : str
        Speed grade (``""`` when the platform has none).
    platform_path : str
        ``module:Class`` of the amaranth-boards platform.
    harness_pins : tuple of str
        Connector pins for the harness's ``sin``, ``sout``, ``strobe``.
    connector : tuple
        The ``(name, number)`` of the connector those pins are on.
    io_attrs : dict
        I/O standard attributes for the harness pins.
    default_target_mhz : float
        Clock constraint for the harness clock when the caller gives none:
        above what the family reaches on a small datapath, so that nextpnr's
        timing-driven placement and routing work for the best Fmax.
    description : str
        One line for listings.
    max_baud : int
        The fastest rate of the board's USB-UART bridge chip (the board top's
        UART may run up to it).
    uart_bridge : str
        That chip, for messages.
    """

    name: str
    family: str
    device: str
    package: str
    speed: str
    platform_path: str
    harness_pins: tuple
    connector: tuple
    io_attrs: dict
    default_target_mhz: float
    description: str
    max_baud: int = 115200
    uart_bridge: str = ""

    @property
    def oscillator_mhz(self) -> float:
        """The board oscillator that clocks the PLL (amaranth-boards' ``default_clk``), in MHz."""
        return self.platform().default_clk_frequency / 1e6

    def check_baud(self, baud) -> int:
        """``baud`` if the board's USB-UART bridge can run it; UserError naming the range otherwise."""
        if isinstance(baud, bool) or not isinstance(baud, int) or not 300 <= baud <= self.max_baud:
            raise UserError(f"baud rate {baud!r} is not one the {self.name}'s {self.uart_bridge} runs; "
                            f"valid: 300..{self.max_baud}")
        return baud

    def platform(self):
        """A new instance of the board's amaranth-boards platform, with the harness pins added."""
        import importlib

        module_name, class_name = self.platform_path.split(":")
        platform = getattr(importlib.import_module(module_name), class_name)()
        sin, sout, strobe = self.harness_pins
        platform.add_resources([
            Resource(
                RESOURCE_NAME, 0,
                Subsignal("sin", Pins(sin, dir="i", conn=self.connector)),
                Subsignal("sout", Pins(sout, dir="o", conn=self.connector)),
                Subsignal("strobe", Pins(strobe, dir="i", conn=self.connector)),
                Attrs(**self.io_attrs),
            )
        ])
        return platform


def _ulx3s(size: str) -> Board:
    return Board(
        name=f"ulx3s-{size.lower()}",
        family="ecp5",
        device=f"LFE5U-{size.upper()}",
        package="BG381",
        speed="6",
        platform_path=f"amaranth_boards.ulx3s:ULX3S_{size.upper()}_Platform",
        harness_pins=("0+", "1+", "2+"),
        connector=("gpio", 0),
        io_attrs={"IO_TYPE": "LVCMOS33"},
        default_target_mhz=250.0,
        description=f"Radiona ULX3S, ECP5 LFE5U-{size.upper()} speed 6, CABGA381",
        max_baud=3_000_000,
        uart_bridge="FT231X",
    )


#: Every known board, by name.
BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board(
            name="icebreaker",
            family="ice40",
            device="iCE40UP5K",
            package="SG48",
            speed="",
            platform_path="amaranth_boards.icebreaker:ICEBreakerPlatform",
            harness_pins=("1", "2", "3"),
            connector=("pmod", 0),
            io_attrs={"IO_STANDARD": "SB_LVCMOS"},
            default_target_mhz=100.0,
            description="1BitSquared iCEBreaker, iCE40 UP5K, SG48",
            max_baud=12_000_000,
            uart_bridge="FT2232H",
        ),
        _ulx3s("12F"),
        _ulx3s("25F"),
        _ulx3s("45F"),
        _ulx3s("85F"),
    )
}


def board_names() -> list[str]:
    """The valid board names, sorted."""
    return sorted(BOARDS)


def get_board(name: str) -> Board:
    """The :class:`Board` called ``name``; a :class:`UserError` listing valid names otherwise."""
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown board {name!r}; valid boards are: {', '.join(board_names())}"
        ) from None
