"""Designs the CLI works on: built-in defaults, TOML config files and ``--set`` overrides.

A design is an engine (:mod:`metafab.gen.engines`) plus its config object;
each engine turns its flags into a config (:meth:`Engine.config`) with the
two readers here. Every command runs with no arguments beyond the engine.

A TOML file may hold the fields at top level or under a table named after
the engine (``[maml]``); ``--set key=value`` overrides single fields (values
are read as TOML values, so ``--set lr=0.02``, ``--set layers=[1,20,1]`` or
``--set act_fmt='"Q5.11"'`` all work; a bare word is taken as a string).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from metafab.reference.errors import UserError

__all__ = ["parse_sets", "read_toml", "read_toml_file"]


def read_toml_file(path: str | Path, what: str) -> dict:
    """The TOML document in the file ``path``; one-line UserErrors naming ``what`` it is ("config file",
    "sweep spec") for an unreadable, non-UTF-8 or invalid file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{what} {str(p)!r} is not valid TOML: {exc}") from None


def read_toml(path: str | Path, engine: str) -> dict:
    """The engine's fields from a TOML file: the ``[engine]`` table, or the top-level keys.

    A table that names no registered engine (a misspelled ``[mamll]``) and
    top-level keys beside the engine's own table are errors: nothing would read them.
    """
    from metafab.gen.engines import engine_names

    p = Path(path)
    doc = read_toml_file(p, "config file")
    names = engine_names()
    tables = [k for k, v in doc.items() if isinstance(v, dict)]
    unknown = [k for k in tables if k not in names]
    if unknown:
        raise UserError(f"config file {str(p)!r}: table [{unknown[0]}] names no engine; "
                        f"valid tables: {', '.join(f'[{n}]' for n in names)}")
    top = sorted(k for k in doc if k not in tables)
    if engine in tables:
        if top:
            raise UserError(f"config file {str(p)!r}: top-level keys {', '.join(top)} beside the [{engine}] "
                            f"table are read by nothing; move them into [{engine}]")
        return dict(doc[engine])
    return {k: doc[k] for k in top}


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
