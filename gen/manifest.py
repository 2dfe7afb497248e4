"""The manifest written next to generated Verilog: config, formats, ports, protocol, cycles."""

from __future__ import annotations

import json

from metafab.gen.cycles import maml_cycles
from metafab.reference.config import MamlConfig, config_digest
from metafab.reference.protocol import MAGIC, PROTOCOL_VERSION, STATUS_FIELDS, Opcode, Status

__all__ = ["maml_manifest", "dumps"]


def _ports(toplevel: str) -> list[dict]:
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


def _protocol(req: dict, resp: dict) -> dict:
    return {
        "version": PROTOCOL_VERSION,
        "magic": MAGIC,
        "word_bits": 32,
        "header": "magic[31:24] opcode_or_status[23:16] length[15:0]",
        "opcodes": {op.name: int(op) for op in Opcode},
        "statuses": {st.name: int(st) for st in Status},
        "request_words": req,
        "response_words": resp,
        "status_fields": list(STATUS_FIELDS),
    }


def maml_manifest(cfg: MamlConfig, toplevel: str, weights_source: str | None = None) -> dict:
    """Everything a user or a host program needs to know about a generated MAML engine."""
    model = maml_cycles(cfg)
    run_len = cfg.k_support * (cfg.n_in + cfg.n_out) + cfg.n_query * cfg.n_in
    return {
        "engine": "maml",
        "toplevel": toplevel,
        "design": cfg.name,
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "formats": {
            "act": str(cfg.act_fmt), "weight": str(cfg.weight_fmt), "master": str(cfg.master_fmt),
            "grad": str(cfg.grad_fmt), "lr": str(cfg.lr_fmt), "acc": str(cfg.acc_fmt),
        },
        "lr_eff": cfg.lr_eff,
        "lr_code": cfg.lr_code,
        "n_params": cfg.n_params,
        "ports": _ports(toplevel),
        "protocol": _protocol(
            {"LOAD": cfg.n_params, "RUN": run_len, "STATUS": 0},
            {"LOAD": 0, "RUN": cfg.n_query * cfg.n_out, "STATUS": len(STATUS_FIELDS)},
        ),
        "cycles": model.to_dict(),
        "weights": weights_source,
    }


def dumps(doc: dict) -> str:
    """Deterministic JSON text (sorted keys, trailing newline)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
