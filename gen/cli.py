"""The ``metafab`` command line.

Each sub-command lives in its own module ``metafab.gen.cmd_<name>`` that
exposes ``register(subparsers)``; the function it sets with
``parser.set_defaults(func=...)`` receives the parsed arguments and returns
an exit status. Commands that work on an engine take it as their first
argument, one sub-parser per registered engine (:func:`engine_commands`), so
``metafab verify maml --help`` lists exactly the options of that engine and a
flag of another engine is refused.

One error boundary (:func:`main`): a user mistake (a :class:`UserError`, a
bad flag, a path that cannot be read or written, a file of the wrong kind, a
simulator that failed) prints one line on stderr and exits with status 2 (a
simulation that failed its checks: status 1, the line says where its log is);
never a traceback (``METAFAB_TRACEBACK=1`` shows the traceback behind such a
line, for a developer).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import zipfile

from metafab.reference.errors import UserError

__all__ = ["main", "COMMANDS", "engine_commands", "progress", "count", "seed", "Parser"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("doctor", "import", "generate", "sim", "verify", "prove", "build", "run", "train", "study", "demo",
            "bench", "data", "report", "sweep")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def progress(msg: str) -> None:
    """A progress line (stderr, flushed)."""
    print(msg, file=sys.stderr, flush=True)


def engine_commands(sub, command: str, *, help: str, description: str, options=None, engines=None):
    """One sub-parser of ``command`` per registered engine (``metafab COMMAND ENGINE ...``).

    ``options(parser, engine)`` adds the command's own options; the engine
    adds its design flags and its options for the command
    (:meth:`Engine.add_arguments`). The parsed arguments carry ``engine``
    (the name). Returns the command's parser.
    """
    from metafab.gen.engines import engines as registered

    p = sub.add_parser(command, help=help, description=description)
    esub = p.add_subparsers(dest="engine", metavar="ENGINE", required=True,
                            parser_class=Parser, title="engines")
    for engine in engines if engines is not None else registered():
        ep = esub.add_parser(engine.name, help=engine.summary,
                             description=f"{description} Engine {engine.name}: {engine.summary}.")
        if options:
            options(ep, engine)
        engine.add_arguments(ep, command)
    return p


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def seed(text: str) -> int:
    """An argparse type: a seed, a whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metafab")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    from metafab.gen.engines import engine_names

    parser = Parser(
        prog="metafab",
        description="Meta-learning math to verified FPGA hardware: generate, simulate, "
        "verify and build on-chip adaptation and read-out engines. Engines: " + ", ".join(engine_names()) + ".",
    )
    parser.add_argument("--version", action="version", version=f"metafab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"metafab.gen.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"metafab.gen.cmd_{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def _unknown_arguments(args, extra: list[str]) -> str:
    """One line for arguments no parser took: for an engine's command, which engine has the flag instead."""
    from metafab.gen.engines import engines

    command, engine = getattr(args, "command", None), getattr(args, "engine", None)
    where = " ".join(x for x in ("metafab", command, engine) if x)
    flag = next((x.split("=", 1)[0] for x in extra if x.startswith("-")), None)
    if engine and flag:
        others = [e.name for e in engines() if e.name != engine and flag in _engine_flags(e, command)]
        names = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} and {others[-1]}"
        hint = (f"; it is an option of the {names} engine{'s' if len(others) > 1 else ''}"
                if others else "")
        return (f"{where}: error: {flag} does not apply to the {engine} engine{hint} "
                f"(see {where} --help)")
    return f"{where}: error: unrecognized arguments: {' '.join(extra)} (see {where} --help)"


def _engine_flags(engine, command: str) -> set[str]:
    p = Parser(add_help=False)
    engine.add_arguments(p, command)
    return {s for a in p._actions for s in a.option_strings}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a bad flag (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if extra:
        print(_unknown_arguments(args, extra), file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from metafab.sim.runner import SimulationFailed

    where = f"metafab {args.command}" + (f" {args.engine}" if getattr(args, "engine", None) else "")

    def fail(message) -> int:
        if os.environ.get("METAFAB_TRACEBACK") and not isinstance(sys.exc_info()[1], UserError):
            raise  # noqa: PLE0704 - a developer asked for the traceback of what the boundary turns into a line
        print(f"{where}: error: {message}", file=sys.stderr)
        return 2

    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return fail(exc)
    except SimulationFailed as exc:  # a failed check or simulator run, not a user mistake: status 1
        fail(f"the simulation failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 1
    except OSError as exc:  # a path that cannot be read or written, a file where a folder should be, ...
        path = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return fail(f"cannot use{path}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return fail(f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except (EOFError, zipfile.BadZipFile) as exc:
        return fail(f"a file is empty or not the archive it should be ({exc or type(exc).__name__})")
    except ValueError as exc:  # from numpy or the standard library on a value no check caught
        return fail(f"bad value: {exc}")
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
