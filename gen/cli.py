"""The ``metafab`` command line.

Each sub-command lives in its own module ``metafab.gen.cmd_<name>`` that
exposes ``register(subparsers)``; the function it sets with
``parser.set_defaults(func=...)`` receives the parsed arguments and returns
an exit status. A :class:`UserError` raised anywhere below prints one line on
stderr and exits with status 2 (no traceback for a user mistake).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metafab.reference.errors import UserError

__all__ = ["main", "COMMANDS"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("doctor", "generate", "sim", "verify", "build", "run", "train", "study", "demo", "bench")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metafab",
        description="Meta-learning math to verified FPGA hardware: generate, simulate, "
        "verify and build on-chip MAML adaptation and similarity read-out engines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"metafab.gen.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"metafab.gen.cmd_{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"metafab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metafab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
