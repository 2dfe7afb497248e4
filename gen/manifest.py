"""The parts of ``manifest.json`` every engine shares: ports, protocol, deterministic JSON text
(:func:`metafab.gen.flow.manifest` assembles the whole manifest)."""

from __future__ import annotations

import json

from metafab.reference.protocol import MAGIC, PROTOCOL_VERSION, STATUS_FIELDS, Opcode, Status

__all__ = ["ports", "protocol", "dumps"]


def ports() -> list[dict]:
    """The engine module's ports (every engine has the same two word streams)."""
    return [
        {"name": "clk", "dir": "in", "width": 1, "role": "clock"},
        {"name": "rst", "dir": "in", "width": 1, "role": "synchronous reset, active high"},
        {"name": "i__valid", "dir": "in", "width": 1, "role": "request stream valid"},
        {"name": "i__ready", "dir": "out", "width": 1, "role": "request stream ready"},
        {"name": "i__payload", "dir": "in", "width": 33,
         "role": "request word: bits 31..0 data, bit 32 last"},
        {"name": "o__valid", "dir": "out", "width": 1, "role": "response stream valid"},
        {"name": "o__ready", "dir": "in", "width": 1, "role": "response stream ready"},
        {"name": "o__payload", "dir": "out", "width": 33,
         "role": "response word: bits 31..0 data, bit 32 last"},
    ]


def protocol(req: dict, resp: dict) -> dict:
    """The packet protocol's constants and the payload words of each request and response."""
    return {
        "version": PROTOCOL_VERSION,
        "magic": MAGIC,
        "word_bits": 32,
        "header": "magic[31:24] opcode_or_status[23:16] length[15:0]",
        "opcodes": {name: int(Opcode[name]) for name in req},  # the engine's own
        "statuses": {st.name: int(st) for st in Status},
        "request_words": req,
        "response_words": resp,
        "status_fields": list(STATUS_FIELDS),
    }


def dumps(doc: dict) -> str:
    """Deterministic JSON text (sorted keys, trailing newline)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
