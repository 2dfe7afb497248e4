"""``metafab generate``: Verilog, manifest and weight words for an engine, under an output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metafab.gen.designs import ENGINES, add_design_args, maml_config
from metafab.reference.errors import UserError

HELP = ("generate an engine's Verilog, manifest.json, AXI-Stream wrapper, FuseSoC core and weight files "
        "into a folder")


def register(sub):
    p = sub.add_parser("generate", help=HELP, description=HELP + ". Same inputs give byte-identical files.")
    p.add_argument("engine", choices=ENGINES, help="which engine")
    add_design_args(p)
    p.add_argument("--weights", choices=("auto", "shipped", "random"), default="auto",
                   help="initial weights written to weights.txt (default: shipped when the layers allow)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
    p.add_argument("-o", "--out", metavar="DIR", default=None,
                   help="output folder (default: build/generate/<design>)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.engine == "match":  # the similarity engine (metafab.gen.match_cli)
        from metafab.gen.match_cli import generate

        return generate(args)
    import sys

    from metafab.gen.maml_flow import TOPLEVEL, engine_verilog, initial_params, weight_words
    from metafab.gen.manifest import dumps, maml_manifest
    from metafab.gen.wrappers import axis_wrapper, fusesoc_core
    from metafab.reference import maml_fixed as mf
    from metafab.sim.runner import build_root

    cfg = maml_config(args)
    out = Path(args.out) if args.out else build_root() / "generate" / cfg.name
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    params, source = initial_params(cfg, args.weights, args.seed)
    wq = mf.quantize_params(params, cfg)
    print(f"generating {cfg.name} into {out}", file=sys.stderr)
    (out / f"{TOPLEVEL}.v").write_text(engine_verilog(cfg))
    (out / "manifest.json").write_text(dumps(maml_manifest(cfg, TOPLEVEL, source)))
    words = weight_words(wq)
    (out / "weights.txt").write_text("".join(f"{w}\n" for w in words))
    (out / "weights.hex").write_text("".join(f"{w & 0xFFFFFFFF:08x}\n" for w in words))
    np.asarray(words)  # the weight files are the protocol's LOAD payload, in order ($readmemh-ready)
    wrapper, text = axis_wrapper(engine="maml", toplevel=TOPLEVEL, design=cfg.name)
    (out / f"{wrapper}.v").write_text(text)
    core = fusesoc_core(design=cfg.name, verilog=f"{TOPLEVEL}.v", wrapper_file=f"{wrapper}.v", wrapper=wrapper,
                        description=f"metafab MAML adaptation engine {cfg.name} with an AXI-Stream wrapper")
    (out / f"{cfg.name}.core").write_text(core)
    for name in (f"{TOPLEVEL}.v", f"{wrapper}.v", f"{cfg.name}.core", "manifest.json", "weights.txt",
                 "weights.hex"):
        print(out / name)
    return 0
