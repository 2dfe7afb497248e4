"""Designs the CLI works on: built-in defaults, TOML config files and ``--set`` overrides.

A design is an engine name plus its config object. Every command runs with
no arguments beyond the engine: ``maml`` is the shipped meta-trained
1-40-40-1 sinusoid net, K=10, one inner step, 10 queries, 16 lanes;
``match`` is the similarity engine for 5-way 5-shot digits episodes, D=64,
matching (cosine) read-out, 64 lanes.

A TOML file may hold the fields at top level or under a table named after
the engine (``[maml]``); ``--set key=value`` overrides single fields (values
are read as TOML values, so ``--set lr=0.02``, ``--set layers=[1,20,1]`` or
``--set act_fmt='"Q5.11"'`` all work; a bare word is taken as a string).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from metafab.reference.config import MamlConfig, MatchConfig
from metafab.reference.errors import UserError

__all__ = ["ENGINES", "add_design_args", "maml_config", "match_config", "parse_sets", "read_toml"]

ENGINES = ("maml", "match")


def read_toml(path: str | Path, engine: str) -> dict:
    """The engine's fields from a TOML file (top level or an ``[engine]`` table)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UserError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    if engine in doc and isinstance(doc[engine], dict):
        return dict(doc[engine])
    others = [e for e in ENGINES if e != engine and isinstance(doc.get(e), dict)]
    return {k: v for k, v in doc.items() if k not in others}


def parse_sets(sets) -> dict:
    """``["key=value", ...]`` to a dict, values parsed as TOML values (bare words as strings)."""
    out = {}
    for item in sets or ():
        if "=" not in item:
            raise UserError(f"--set {item!r}: write key=value")
        key, raw = item.split("=", 1)
        key, raw = key.strip(), raw.strip()
        if not key:
            raise UserError(f"--set {item!r}: the key is empty")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


def add_design_args(p: argparse.ArgumentParser):
    """The design options every engine command takes."""
    g = p.add_argument_group("design")
    g.add_argument("--config", metavar="FILE", help="TOML file with the engine's config fields")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config field (repeatable), e.g. --set lanes=64")
    g.add_argument("--layers", metavar="A-B-...", help="MAML: layer widths, e.g. 1-40-40-1")
    g.add_argument("--k-support", type=int, metavar="K", help="MAML: support samples per task")
    g.add_argument("--queries", type=int, metavar="Q", help="MAML: query samples per task")
    g.add_argument("--steps", type=int, metavar="S", help="MAML: inner SGD steps")
    g.add_argument("--lanes", type=int, metavar="P", help="parallel MAC lanes (a power of two)")
    g.add_argument("--lr", type=float, help="MAML: inner learning rate")
    # --- the similarity engine (match) ---
    g.add_argument("--mode", choices=("matching", "proto"),
                   help="match: cosine attention over the support set, or squared Euclidean to prototypes")
    g.add_argument("--ways", type=int, metavar="N", help="match: classes per episode")
    g.add_argument("--shots", type=int, metavar="K", help="match: support embeddings per class")
    g.add_argument("--dim", type=int, metavar="D", help="match: embedding dimension")


def maml_config(args) -> MamlConfig:
    """The MAML config the command line describes (built-in default, then file, then flags)."""
    fields: dict = {}
    if getattr(args, "config", None):
        fields.update(read_toml(args.config, "maml"))
    flags = {
        "layers": getattr(args, "layers", None),
        "k_support": getattr(args, "k_support", None),
        "n_query": getattr(args, "queries", None),
        "steps": getattr(args, "steps", None),
        "lanes": getattr(args, "lanes", None),
        "lr": getattr(args, "lr", None),
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    fields.update(parse_sets(getattr(args, "set", None)))
    if isinstance(fields.get("layers"), list):
        fields["layers"] = tuple(fields["layers"])
    try:
        return MamlConfig.from_dict(fields)
    except TypeError as exc:
        raise UserError(f"invalid MAML config: {exc}") from None


#: MAML-only flags (``--queries`` is not one: for ``match`` it is the number of queries to run).
_MAML_FLAGS = {"layers": "--layers", "k_support": "--k-support", "steps": "--steps", "lr": "--lr"}


def match_config(args) -> MatchConfig:
    """The similarity-engine config the command line describes (built-in default, then file, then flags)."""
    for dest, flag in _MAML_FLAGS.items():
        if getattr(args, dest, None) is not None:
            raise UserError(f"{flag} is a MAML option; the match engine takes --mode, --ways, --shots, "
                            f"--dim, --lanes")
    fields: dict = {}
    if getattr(args, "config", None):
        fields.update(read_toml(args.config, "match"))
    flags = {
        "mode": getattr(args, "mode", None),
        "n_way": getattr(args, "ways", None),
        "k_shot": getattr(args, "shots", None),
        "dim": getattr(args, "dim", None),
        "lanes": getattr(args, "lanes", None),
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    fields.update(parse_sets(getattr(args, "set", None)))
    try:
        return MatchConfig.from_dict(fields)
    except TypeError as exc:
        raise UserError(f"invalid match config: {exc}") from None
