"""``metafab generate``: Verilog, manifest and payload files of an engine, under an output folder."""

from __future__ import annotations

from metafab.gen.cli import count, engine_commands, progress, seed
from metafab.gen.engines import get_engine

HELP = ("generate an engine's Verilog, manifest.json, AXI-Stream wrapper, FuseSoC core, payload files and a "
        "self-checking testbench into a folder")


def _options(p, engine):
    p.add_argument("--seed", type=seed, default=0, help="seed of random weights / the example episode (default 0)")
    p.add_argument("--tasks", type=count, default=engine.session_default, metavar="N",
                   help=f"RUN requests ({engine.run_item}s) in the self-checking testbench's session "
                   f"(default {engine.session_default})")
    p.add_argument("-o", "--out", metavar="DIR", default=None,
                   help="output folder (default: build/generate/<design>-<config digest>)")
    p.set_defaults(func=run)


def register(sub):
    engine_commands(sub, "generate", help=HELP, description=HELP + ". Same inputs give byte-identical files.",
                    options=_options)


def run(args) -> int:
    from metafab.gen import flow

    engine = get_engine(args.engine)
    cfg = engine.config(args)
    out = flow.output_folder(args.out, "generate", cfg)
    progress(f"generating {cfg.name} into {out}")
    for path in flow.generate(engine, cfg, out, args, progress):
        print(path)
    return 0
