"""The engine registry: every command finds its engine here, by name.

The built-in engines are ``metafab.gen.engines.<name>:ENGINE``; an installed
package adds its own through the ``metafab.engines`` entry-point group (each
entry point names an :class:`~metafab.gen.engines.base.Engine` instance), and
a program (or a test) calls :func:`register_engine`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from metafab.gen.engines.base import DesignFlag, Engine, Exchange, Workload
from metafab.reference.errors import UserError

__all__ = ["Engine", "DesignFlag", "Workload", "Exchange", "register_engine", "unregister_engine", "get_engine",
           "engine_names", "engines"]

#: The engines that ship with metafab, in the order ``--help`` lists them.
BUILTIN = ("maml", "maml-cls", "match", "fewshot")

_registry: dict[str, Engine] = {}
_loaded = False


def register_engine(engine: Engine) -> Engine:
    """Add ``engine`` under ``engine.name``; a second engine of the same name is a ValueError."""
    if not isinstance(engine, Engine):
        raise TypeError(f"an engine must be an Engine instance, got {engine!r}")
    if not engine.name or not engine.name.replace("-", "").isalnum():
        raise ValueError(f"engine name {engine.name!r} must be letters, digits and '-'")
    _load()
    if engine.name in _registry and _registry[engine.name] is not engine:
        raise ValueError(f"an engine named {engine.name!r} is registered already")
    _registry[engine.name] = engine
    return engine


def unregister_engine(name: str) -> None:
    """Remove an engine (tests that register their own)."""
    _registry.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        _registry[name] = importlib.import_module(f"metafab.gen.engines.{name.replace('-', '_')}").ENGINE
    for ep in entry_points(group="metafab.engines"):
        engine = ep.load()
        _registry.setdefault(engine.name, engine)


def engines() -> list[Engine]:
    """Every registered engine, built-ins first."""
    _load()
    return list(_registry.values())


def engine_names() -> tuple[str, ...]:
    _load()
    return tuple(_registry)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (UserError naming the valid ones)."""
    _load()
    try:
        return _registry[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r}; valid: {', '.join(_registry)}") from None
