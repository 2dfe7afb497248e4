"""``metafab doctor``: which simulators and synthesis tools are found, with versions and paths."""

from __future__ import annotations

import json
import sys

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
    p.set_defaults(func=run)


def run(args) -> int:
    tools = all_tools()
    missing = [t for t in tools if t.required and not t.found]
    if args.json:
        doc = {"ok": not missing, "python": sys.version.split()[0], "tools": [t.to_dict() for t in tools]}
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
    return 1 if missing else 0
