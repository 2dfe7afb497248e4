"""The ``match`` branches of ``metafab generate / sim / verify / build`` (the similarity engine).

Each ``metafab.gen.cmd_<name>`` module hands ``args`` over here when the
engine is ``match``; the functions return the command's exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from metafab.gen.designs import match_config
from metafab.reference.errors import UserError

__all__ = ["generate", "sim", "verify", "build", "match_manifest", "format_verify", "format_build"]


def _progress(msg):
    print(msg, file=sys.stderr, flush=True)


def match_manifest(cfg, toplevel: str) -> dict:
    """Everything a user or a host program needs to know about a generated similarity engine."""
    from metafab.gen.manifest import _ports, _protocol
    from metafab.gen.match_cycles import match_cycles
    from metafab.reference.config import config_digest
    from metafab.reference.protocol import STATUS_FIELDS

    model = match_cycles(cfg)
    return {
        "engine": "match",
        "toplevel": toplevel,
        "design": cfg.name,
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "formats": {name[:-4]: str(getattr(cfg, name)) for name in
                    ("emb_fmt", "unit_fmt", "proto_fmt", "acc_fmt", "logit_fmt", "exp_fmt", "prob_fmt")},
        "ports": _ports(toplevel),
        "protocol": _protocol(
            {"LOAD": cfg.load_words, "RUN": cfg.query_words, "STATUS": 0},
            {"LOAD": 0, "RUN": cfg.result_words, "STATUS": len(STATUS_FIELDS)},
        ),
        "payloads": {
            "LOAD": "per support row: its label (0..N-1), then its D codes in emb_fmt",
            "RUN": "the D codes of one query in emb_fmt, query_pack to a 32-bit word (2: code 2w in bits "
                   "15..0 of word w, code 2w+1 in bits 31..16); requests are pipelined",
            "RUN response": "N probabilities in prob_fmt, then the winning class",
        },
        "query_pack": cfg.query_pack,
        "cycles": model.to_dict(),
    }


def generate(args) -> int:
    """Verilog, AXI-Stream wrapper, FuseSoC core, manifest and an example LOAD/RUN payload (one episode)."""
    from metafab.gen.host import match_load_payload as load_payload
    from metafab.gen.host import match_run_payload
    from metafab.gen.manifest import dumps
    from metafab.gen.match_flow import TOPLEVEL, engine_verilog, episode_codes, make_episodes
    from metafab.gen.wrappers import axis_wrapper, fusesoc_core
    from metafab.sim.runner import build_root

    cfg = match_config(args)
    out = Path(args.out) if args.out else build_root() / "generate" / cfg.name
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    print(f"generating {cfg.name} into {out}", file=sys.stderr)
    (out / f"{TOPLEVEL}.v").write_text(engine_verilog(cfg))
    doc = match_manifest(cfg, TOPLEVEL)
    eps, source = make_episodes(cfg, 1, args.seed, "auto", n_query=1)
    (ep,) = episode_codes(cfg, eps)
    doc["example"] = {"features": source, "seed": args.seed, "files": ["load.hex", "query.hex"]}
    (out / "manifest.json").write_text(dumps(doc))
    words = load_payload(ep["support"], ep["labels"])
    (out / "load.hex").write_text("".join(f"{w & 0xFFFFFFFF:08x}\n" for w in words))
    (out / "query.hex").write_text("".join(f"{w:08x}\n" for w in match_run_payload(ep["queries"][0], cfg)))
    wrapper, text = axis_wrapper(engine="match", toplevel=TOPLEVEL, design=cfg.name)
    (out / f"{wrapper}.v").write_text(text)
    core = fusesoc_core(design=cfg.name, verilog=f"{TOPLEVEL}.v", wrapper_file=f"{wrapper}.v", wrapper=wrapper,
                        description=f"metafab similarity engine {cfg.name} with an AXI-Stream wrapper")
    (out / f"{cfg.name}.core").write_text(core)
    for name in (f"{TOPLEVEL}.v", f"{wrapper}.v", f"{cfg.name}.core", "manifest.json", "load.hex", "query.hex"):
        print(out / name)
    return 0


def sim(args) -> int:
    """A few episodes cycle by cycle: predictions, probabilities, cycles (checked against the reference)."""
    from metafab.gen.match_flow import episode_codes, make_episodes, run_engine
    from metafab.reference.fixed import to_float

    cfg = match_config(args)
    if args.tasks < 1:
        raise UserError(f"--tasks (episodes) must be at least 1, got {args.tasks}")
    eps, source = make_episodes(cfg, args.tasks, args.seed, args.features, n_query=3)
    codes = episode_codes(cfg, eps)
    r = run_engine(cfg, codes, sim=args.sim, waves=args.waves, return_outputs=True,
                   run_name=f"sim-{args.sim}", progress=_progress)
    outs = r["outputs"]
    probs = [to_float(np.asarray(o[:-1]), cfg.prob_fmt).tolist() for o in outs]
    truth = [int(v) for e in eps for v in e["query_labels"]]
    doc = {
        "engine": "match", "design": cfg.name, "features": source, "simulator": args.sim,
        "episodes": len(eps), "queries": r["queries"], "mismatches": r["mismatches"],
        "latency_cycles": r["cycles"], "ii_measured": r.get("ii_measured"), "model": r["model"],
        "predictions": [int(o[-1]) for o in outs], "probabilities": probs, "run_folder": r["test_dir"],
    }
    from metafab.gen.cmd_sim import _waves

    if args.waves:
        doc["waves"] = _waves(r["test_dir"])
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"{cfg.name}: {len(eps)} episode(s), {r['queries']} queries on {args.sim}, features: {source}")
        t = len(outs) - len(truth)  # the timing phase's queries come first
        for n, (o, p) in enumerate(zip(outs[t:], probs[t:], strict=True)):
            vals = " ".join(f"{v:.3f}" for v in p)
            print(f"query {n}: class {o[-1]} (label {truth[n]}); probabilities {vals}")
        m = r["model"]
        print(f"latency {sorted(set(r['cycles']))} cycles (model {m['latency']}), "
              f"interval {r.get('ii_measured')} cycles per query (model {m['ii']}); "
              f"mismatches against the reference: {r['mismatches']}")
        if args.waves:
            print(f"waveform: {doc['waves']}")
    return 0 if r["mismatches"] == 0 else 1


def verify(args) -> int:
    """RTL vs the bit-exact reference and float64 on digits (or random) episodes."""
    from metafab.gen.match_flow import verify as run_verify

    cfg = match_config(args)
    queries = 1000 if args.queries is None else args.queries
    report = run_verify(cfg, queries=queries, sim=args.sim, seed=args.seed, features=args.features,
                        progress=_progress)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_verify(report))
    return 0 if _passed(report) else 1


def _passed(r: dict) -> bool:
    return r["mismatches"] == 0 and r["rtl_equals_fixed"] and r["cycles_match_model"]


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f} %"


def format_verify(r: dict) -> str:
    a = r["accuracy"]
    lines = [
        f"design              {r['design']}",
        f"features            {r['features']}",
        f"simulator           {r['simulator']}",
        f"episodes, queries   {r['episodes']}, {r['queries']}",
        f"output words        {r['output_words']}",
        f"mismatches          {r['mismatches']}"
        + ("" if not r["mismatches"] else f"  first: {r['first_mismatch']}"),
        f"accuracy            RTL {_pct(a['rtl'])}, fixed point {_pct(a['fixed'])}, "
        f"float64 {_pct(a['float64'])} (fixed = float64 on {100 * r['agreement_fixed_float64']:.2f} % "
        f"of queries)",
        f"latency             {', '.join(map(str, r['latency_measured']))} cycles measured, "
        f"{r['latency_model']} modelled (begin to result); {r['query_latency_model']} from the last "
        f"query word",
        f"packet latency      {r['packet_latency_measured']} cycles measured, "
        f"{r['packet_latency_model']} modelled (request header to last response word)",
        f"interval            {r['ii_measured']} cycles per query measured, {r['ii_model']} modelled "
        f"({r['ii_bound']}-bound; core {r['ii_core']})",
        f"LOAD                {r['load_cycles_measured']} cycles measured, {r['load_cycles_model']} modelled",
    ]
    ok = _passed(r)
    lines.append(f"verdict             {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)


def build(args) -> int:
    from metafab.gen.boards import get_board
    from metafab.gen.match_flow import match_build

    board = get_board(args.board)
    cfg = match_config(args)
    r = match_build(cfg, board.name, top=args.top, baud=args.baud, target_mhz=args.target_mhz, seed=args.seed,
                    timing_ripup=args.timing_ripup, progress=_progress)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True, default=str))
    else:
        print(format_build(r))
    return 0


def format_build(r: dict) -> str:
    c, us = r["cycles"], r.get("latency_us") or {}
    lines = [
        f"design            {r['design']}",
        f"board             {r['board']} ({r['device']})",
        f"Fmax              {r['fmax_mhz']:.1f} MHz (constraint {r['constraint_mhz']:.0f} MHz)",
        f"place and route   nextpnr seed {r['seed']}" + (", timing-driven rip-up" if r["timing_ripup"] else ""),
        f"LUT / FF / DSP / BRAM   {r['lut']} / {r['ff']} / {r['dsp']} / {r['bram']}",
        f"latency           {c['latency']} cycles = {us.get('compute', 0):.3f} us (begin to result); "
        f"{c['query_latency']} cycles = {us.get('query', 0):.3f} us from the last query word",
        f"packet latency    {c['packet_latency']} cycles = {us.get('packet', 0):.3f} us",
        f"interval          {c['ii']} cycles = {us.get('ii', 0):.3f} us per query ({c['bound']}-bound)",
    ]
    for k, v in (r.get("anchor") or {}).items():
        lines.append(f"  vs {k:<22} {v:.1f} us")
    lines.append(f"bitstream         {r['bitstream']}")
    return "\n".join(lines)
