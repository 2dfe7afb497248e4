"""Synthesis and place-and-route reports, parsed into plain dicts.

Three sources, each produced by the flow in :mod:`metafab.gen.synth`:

* nextpnr's ``--report <file>.json``: ``fmax`` (``{clock: {achieved,
  constraint}}`` in MHz), ``utilization`` (``{cell_type: {used,
  available}}``) and ``critical_paths`` (per clock pair, a list of steps with
  a ``delay`` in ns);
* Yosys ``stat -json`` (``design.num_cells_by_type``): the netlist after
  technology mapping, before placement;
* nextpnr's text log, read only when placement fails, to find which cell type
  did not fit.

:func:`resource_counts` reduces the family-specific cell names to four numbers
(``lut``, ``ff``, ``dsp``, ``bram``) so that boards of different families can
share one table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from os import PathLike

__all__ = [
    "parse_nextpnr_report",
    "parse_yosys_stat",
    "find_overflows",
    "resource_counts",
    "FAMILY_CELLS",
]

#: Per family: which nextpnr (post-placement) or Yosys (post-synthesis) cell
#: types give each normalised count. ``"nextpnr"`` entries are summed from the
#: utilisation table; ``"yosys"`` entries are prefixes of Yosys cell types.
FAMILY_CELLS = {
    "ice40": {
        # A logic cell holds one LUT4, one carry and one FF; nextpnr counts cells used.
        "lut": ("nextpnr", ("ICESTORM_LC",)),
        # nextpnr has no separate FF count on iCE40: count the mapped SB_DFF* cells.
        "ff": ("yosys", ("SB_DFF",)),
        "dsp": ("nextpnr", ("ICESTORM_DSP",)),
        "bram": ("nextpnr", ("ICESTORM_RAM",)),
    },
    "ecp5": {
        # TRELLIS_COMB is one LUT4 (half a slice), including the LUT halves of carry cells.
        "lut": ("nextpnr", ("TRELLIS_COMB",)),
        "ff": ("nextpnr", ("TRELLIS_FF",)),
        "dsp": ("nextpnr", ("MULT18X18D",)),
        "bram": ("nextpnr", ("DP16KD",)),
    },
}


def _load_json(source) -> Mapping:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, (str, PathLike)):
        with open(source, encoding="utf-8") as file:
            return json.load(file)
    raise TypeError(f"expected a report path or a parsed JSON mapping, not {source!r}")


def _endpoint(end: Mapping) -> str:
    cell, port = end.get("cell", "?"), end.get("port")
    return f"{cell}.{port}" if port else str(cell)


def _clock_name(edge: str) -> str:
    """``"posedge clk"`` -> ``"clk"``; ``"<async>"`` stays as it is."""
    for prefix in ("posedge ", "negedge "):
        if edge.startswith(prefix):
            return edge[len(prefix) :]
    return edge


def parse_nextpnr_report(source) -> dict:
    """Parse nextpnr's ``--report`` JSON (a path or the loaded mapping).

    Returns
    -------
    dict
        ``fmax``: ``{clock: {"achieved_mhz", "constraint_mhz"}}``;
        ``utilisation``: ``{cell_type: {"used", "available"}}``;
        ``critical_paths``: a list with, per clock pair, ``from_clock``,
        ``to_clock``, ``delay_ns`` (the sum of the steps) and ``steps``, each
        step ``{"type", "from", "to", "net", "delay_ns"}`` where ``type`` is
        nextpnr's (``clk-to-q``, ``source``, ``logic``, ``routing``,
        ``setup``) and ``from``/``to`` are ``cell.port``.
    """
    report = _load_json(source)
    fmax = {
        clock: {
            "achieved_mhz": float(entry["achieved"]),
            "constraint_mhz": float(entry["constraint"]),
        }
        for clock, entry in report.get("fmax", {}).items()
    }
    utilisation = {
        cell: {"used": int(entry["used"]), "available": int(entry["available"])}
        for cell, entry in report.get("utilization", {}).items()
    }
    paths = []
    for path in report.get("critical_paths", []):
        steps = [
            {
                "type": step.get("type", ""),
                "from": _endpoint(step.get("from", {})),
                "to": _endpoint(step.get("to", {})),
                "net": step.get("net"),
                "delay_ns": float(step.get("delay", 0.0)),
            }
            for step in path.get("path", [])
        ]
        paths.append({
            "from_clock": _clock_name(path.get("from", "")),
            "to_clock": _clock_name(path.get("to", "")),
            "delay_ns": sum(step["delay_ns"] for step in steps),
            "steps": steps,
        })
    return {"fmax": fmax, "utilisation": utilisation, "critical_paths": paths}


def parse_yosys_stat(source) -> dict:
    """Parse Yosys ``stat -json`` output (a path or the loaded mapping).

    Returns
    -------
    dict
        ``cells_by_type``: ``{cell_type: count}`` for the whole design, without
        Yosys's ``$scopeinfo`` bookkeeping cells; ``num_cells``: their sum;
        ``creator``: the Yosys version string.
    """
    stat = _load_json(source)
    design = stat.get("design")
    if design is None:
        raise ValueError("not a Yosys 'stat -json' report: it has no 'design' section")
    cells = {
        cell: int(count)
        for cell, count in sorted(design.get("num_cells_by_type", {}).items())
        if not cell.startswith("$scopeinfo")
    }
    return {
        "cells_by_type": cells,
        "num_cells": sum(cells.values()),
        "creator": stat.get("creator", ""),
    }


_UTILISATION_LINE = re.compile(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$")
_NO_BELS = re.compile(r"no BELs remaining to implement cell type '([^']+)'")


def find_overflows(log_text: str) -> dict[str, dict[str, int]]:
    """The cell types a design needs more of than the device has, from a nextpnr log.

    nextpnr prints a device utilisation table (``Info: ICESTORM_DSP: 9/ 8
    112%``) before placement and, when placement fails for lack of sites,
    ``no BELs remaining to implement cell type 'X'``. Returns ``{cell_type:
    {"used", "available"}}`` for every cell type over 100 % (from the last
    table in the log), plus any type named by such an error (with the table's
    figures when it has them, otherwise ``used = available = -1``).
    """
    table: dict[str, dict[str, int]] = {}
    for line in log_text.splitlines():
        match = _UTILISATION_LINE.match(line.strip())
        if match:
            cell, used, available = match.group(1), int(match.group(2)), int(match.group(3))
            table[cell] = {"used": used, "available": available}
    over = {cell: entry for cell, entry in table.items() if entry["used"] > entry["available"]}
    for cell in _NO_BELS.findall(log_text):
        over.setdefault(cell, table.get(cell, {"used": -1, "available": -1}))
    return over


def resource_counts(family: str, utilisation: Mapping, cells_by_type: Mapping) -> dict[str, int]:
    """Normalised ``lut``, ``ff``, ``dsp``, ``bram`` counts for ``family``.

    See :data:`FAMILY_CELLS` for which cell types each count sums.

    ``utilisation`` is nextpnr's (:func:`parse_nextpnr_report`), ``cells_by_type``
    Yosys's (:func:`parse_yosys_stat`).
    """
    try:
        rules = FAMILY_CELLS[family]
    except KeyError:
        raise ValueError(
            f"unknown FPGA family {family!r}; known families are {sorted(FAMILY_CELLS)}"
        ) from None
    counts = {}
    for key, (source, names) in rules.items():
        if source == "nextpnr":
            counts[key] = sum(int(utilisation.get(name, {}).get("used", 0)) for name in names)
        else:
            counts[key] = sum(
                int(count)
                for cell, count in cells_by_type.items()
                if any(cell.startswith(prefix) for prefix in names)
            )
    return counts

