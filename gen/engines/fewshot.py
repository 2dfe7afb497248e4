"""The ``fewshot`` engine: an encoder (3x3 conv, ReLU, 2x2 max pool, dense) in front of the similarity read-out.

Pixels in, class out. Hardware :class:`metafab.hw.fewshot_engine.FewShotEngine`,
cycle model :mod:`metafab.hw.fewshot_cycles`, bit-exact reference
:func:`metafab.reference.encoder.fewshot_fixed`, payloads
:mod:`metafab.reference.payloads` (``fewshot_*``), bench
:mod:`metafab.sim.benches.fewshot`.

Encoder weights (``--encoder``): ``auto`` (default) takes the shipped glyph
encoder whose spec is the design's (``c8-p-c16-p-d64`` conv,
``d128-d64`` dense), else He-initialised random weights of seed 0 (the
bit-exactness checks do not need trained weights; accuracy then means
nothing); or an encoder file of ``metafab train glyph-encoder``.

Stimulus (``--features``): ``glyphs``, N-way K-shot episodes of the glyph
meta-test split (16x16 images, 15 queries per class); ``random``, uniform
pixels in ``[0, 1]`` of any input shape with random labels (accuracy means
nothing); ``auto``: glyphs when the input shape is ``(1, 16, 16)`` and
``N <= 20``.
"""

from __future__ import annotations

import json

import numpy as np

from metafab.gen.engines.base import DesignFlag, Exchange, Workload, status_exchange, unknown_opcode_exchange
from metafab.gen.engines.match import MatchEngineSpec, _pct, episode_report
from metafab.reference import encoder as enc
from metafab.reference.config import MATCH_MODES
from metafab.reference.errors import UserError
from metafab.reference.payloads import fewshot_encoder_words, fewshot_load_words, fewshot_run_words
from metafab.reference.protocol import Opcode, Packet, Status

__all__ = ["ENGINE", "FewShotEngineSpec", "encoder_weights", "make_episodes", "run_engine"]

FEATURES = ("auto", "glyphs", "random")
VERIFY_QUERIES_PER_CLASS = 15
TIMING_QUERIES = 4


def encoder_weights(cfg: enc.EncoderConfig, source: str | None = "auto") -> tuple[list[np.ndarray], str]:
    """The augmented weight codes of ``cfg``'s encoder and where they come from (module docstring)."""
    source = source or "auto"
    if source == "auto":
        for kind in enc.GLYPH_ENCODERS:
            w = enc.load_glyph_encoder(kind)
            if str(w.spec) == str(cfg.spec) and w.spec.input_shape == cfg.spec.input_shape:
                return enc.quantize_encoder(w.params, cfg), f"shipped glyph encoder ({kind}, {w.spec})"
        wq = enc.quantize_encoder(enc.init_params(cfg.spec, seed=0), cfg)
        return wq, f"random He weights (seed 0) for {cfg.spec}"
    w = enc.load_encoder(source)
    if str(w.spec) != str(cfg.spec) or w.spec.input_shape != cfg.spec.input_shape:
        raise UserError(f"encoder file {source!r} holds {w.spec} over {w.spec.input_shape}; the design is {cfg.spec} "
                        f"over {cfg.spec.input_shape} (set --spec {w.spec})")
    return enc.quantize_encoder(w.params, cfg), f"file {source} ({w.spec})"


def resolve_features(cfg: enc.EncoderConfig, features: str) -> str:
    if features not in FEATURES:
        raise UserError(f"unknown features {features!r}; valid: {', '.join(FEATURES)}")
    glyphs_ok = cfg.spec.input_shape == (1, 16, 16) and cfg.n_way <= 20 and cfg.k_shot + 15 <= 20
    if features == "auto":
        return "glyphs" if glyphs_ok else "random"
    if features == "glyphs" and not glyphs_ok:
        raise UserError(f"glyph episodes need input_shape (1, 16, 16), at most 20 ways and 5 shots, not "
                        f"{cfg.spec.input_shape} {cfg.n_way}-way {cfg.k_shot}-shot; use --features random")
    return features


def make_episodes(cfg: enc.EncoderConfig, n: int, seed: int, features: str = "auto",
                  n_query: int = VERIFY_QUERIES_PER_CLASS) -> tuple[list[dict], str]:
    """``n`` float episodes (``support`` ``(M, C H W)`` in ``[0, 1]``, ``labels``, ``queries``, ``query_labels``);
    episode ``i`` is the same whatever ``n`` is."""
    features = resolve_features(cfg, features)
    out = []
    if features == "glyphs":
        from metafab.reference import glyphs

        sampler = glyphs.EpisodeSampler(split="test", n_way=cfg.n_way, k_shot=cfg.k_shot, n_query=n_query)
        for ep in glyphs.episodes(sampler, n, seed):
            out.append({"support": ep.support, "labels": ep.support_labels, "queries": ep.query,
                        "query_labels": ep.query_labels})
        return out, "glyphs (meta-test split)"
    n_in, N, K = cfg.spec.n_inputs, cfg.n_way, cfg.k_shot
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        labels = np.repeat(np.arange(N), K)
        rng.shuffle(labels)
        qlabels = np.repeat(np.arange(N), n_query)
        out.append({"support": rng.uniform(0, 1, (N * K, n_in)), "labels": labels,
                    "queries": rng.uniform(0, 1, (len(qlabels), n_in)), "query_labels": qlabels})
    return out, "random pixels"


def episode_codes(cfg: enc.EncoderConfig, episodes) -> list[dict]:
    """Episodes as bench parameters: ``act_fmt`` image codes (flat) and labels, as lists."""
    def q(x):
        return enc.quantize_images(np.asarray(x), cfg).reshape(len(x), -1).tolist()
    return [{"support": q(ep["support"]), "labels": [int(v) for v in ep["labels"]], "queries": q(ep["queries"])}
            for ep in episodes]


def run_engine(cfg: enc.EncoderConfig, wq, episodes: list[dict], *, sim: str = "verilator",
               scenario: str = "episodes", idle: float = 0.2, backpressure: float = 0.3, seed: int = 1,
               timing_queries: int = TIMING_QUERIES, waves: bool = False, run_name: str | None = None,
               verilator_opt: str | None = None, progress=None, return_outputs: bool = False,
               expect_episodes: list[dict] | None = None, verilog: str | None = None) -> dict:
    """Run the cocotb few-shot bench on ``episodes`` (code dicts, :func:`episode_codes`) with encoder ``wq``.

    Raises :class:`~metafab.sim.runner.SimulationFailed` on any mismatching word or any cycle count that
    differs from the model.
    """
    from metafab.gen.flow import simulate
    from metafab.hw.fewshot_cycles import stream_timeline
    from metafab.hw.match_cycles import ii_of

    model = ENGINE.cycles(cfg)
    expected = {"latency": model.latency, "load_cycles": model.load_cycles}
    if timing_queries:
        tl = stream_timeline(cfg, timing_queries)
        expected["timeline"] = {"headers": [t["header"] for t in tl], "responses": [t["response"] for t in tl]}
    params = {"config": cfg.to_dict(), "encoder": [np.asarray(w).tolist() for w in wq], "episodes": episodes,
              "idle": idle, "backpressure": backpressure, "seed": seed, "scenario": scenario,
              "timing_queries": timing_queries if scenario == "episodes" else 0, "expected": expected, "window": 2}
    if return_outputs:
        params["return_outputs"] = True
    if expect_episodes is not None:
        params["reference_episodes"] = expect_episodes
    json.dumps(params)
    if progress:
        nq = sum(len(e["queries"]) for e in episodes)
        progress(f"simulating {len(episodes)} episode(s), {nq} query images of {cfg.name} with {sim} ({scenario})")
    out = simulate(ENGINE, cfg, params, sim=sim, scenario=scenario, waves=waves, run_name=run_name,
                   verilator_opt=verilator_opt, verilog=verilog, progress=progress)
    t = out.get("timing")
    if t:
        out["ii_measured"] = ii_of(t["responses"]) if len(t["responses"]) > 1 else None
        out["packet_latency_measured"] = t["responses"][0] + cfg.n_way + 2
    out["model"] = model.to_dict()
    return out


def _float_preds(cfg: enc.EncoderConfig, params, ep) -> np.ndarray:
    probs, _ = enc.fewshot_float(params, cfg.spec, ep["support"], ep["labels"], ep["queries"], cfg.n_way, cfg.mode)
    return np.argmax(probs, axis=-1)


class FewShotEngineSpec(MatchEngineSpec):
    name = "fewshot"
    summary = "few-shot pipeline: a conv / dense encoder in front of the similarity read-out, pixels in, class out"
    title = "few-shot pipeline"
    toplevel = "fewshot_engine"
    bench = "metafab.sim.benches.fewshot"
    config_class = enc.EncoderConfig
    weights_flag = "--encoder"
    design_flags = (
        DesignFlag("--mode", "mode", choices=MATCH_MODES, help="read-out: prototypes (-L2) or cosine attention"),
        DesignFlag("--ways", "n_way", int, "N", "classes per episode"),
        DesignFlag("--shots", "k_shot", int, "K", "support images per class"),
        DesignFlag("--spec", "spec", str, "SPEC", "the encoder, e.g. c8-p-c16-p-d64 or d128-d64"),
        DesignFlag("--lanes", "lanes", int, "L", "the encoder's lanes: output channels computed at once (a power of "
                   "two, 1..64)"),
        DesignFlag("--split", "split", int, "S", "slices of each weight row computed side by side (a power of two, "
                   "1..8); the encoder has lanes x split multipliers"),
    )
    item = "episode"
    run_item = "query"
    count_flag = "--queries"
    count_default = 1000
    demo_count = 150
    chunk = 4
    in_demo = True
    build_order = 2  # the longest of the demo's board builds (~10 min on 2 cores): the demo starts it first
    demo_builds = True
    default_clock = {"ecp5": 60.0, "ice40": 20.0}  # the default meets 60 MHz on the 85F: 61.35 MHz, seed 1
    preload_opcode = Opcode.LOAD_ENCODER

    def add_command_arguments(self, p, command):
        p.add_argument("--encoder", metavar="FILE", default="auto",
                       help="encoder weights: 'auto' (the shipped glyph encoder of the design's spec, else random "
                       "weights of seed 0) or a file of 'metafab train glyph-encoder'")
        if command in ("sim", "verify"):
            p.add_argument("--features", default="auto", choices=FEATURES,
                           help="images: glyph meta-test episodes (16x16 inputs) or random pixels (default: glyphs "
                           "when the input shape allows)")
        if command == "sim":
            p.add_argument("--episodes", type=int, default=1,
                           help="episodes to run, one query image per class each (default 1)")
        if command == "verify":
            p.add_argument("--queries", type=int, default=self.count_default,
                           help=f"query images to run, {VERIFY_QUERIES_PER_CLASS} per class of each episode "
                           f"(default {self.count_default})")
        if command == "run":
            p.add_argument("--episodes", type=int, default=2, help="glyph episodes to run (default 2)")
            p.add_argument("--skip-encoder-load", action="store_true",
                           help="use the encoder the board top holds (its preload) instead of sending LOAD_ENCODER "
                           "with --encoder's weights first")

    # --- hardware ---------------------------------------------------------
    def component(self, cfg):
        from metafab.hw.fewshot_engine import FewShotEngine

        return FewShotEngine(config=cfg)

    def cycles(self, cfg):
        from metafab.hw.fewshot_cycles import fewshot_cycles

        return fewshot_cycles(cfg)

    def packet_words(self, cfg):
        from metafab.hw.fewshot_engine import fewshot_ops

        ops = fewshot_ops(cfg)
        return ops[Opcode.LOAD].req_len, ops[Opcode.RUN].req_len, ops[Opcode.RUN].resp_len

    def extra_packets(self, cfg):
        return {"LOAD_ENCODER": (cfg.spec.n_params, 0)}

    def manifest_fields(self, cfg):
        m = cfg.match
        return {
            "encoder": str(cfg.spec),
            "formats": {"act": str(cfg.act_fmt), "weight": str(cfg.weight_fmt), "acc": str(cfg.acc_fmt),
                        "prob": str(m.prob_fmt)},
            "payloads": {
                "LOAD_ENCODER": "the augmented weight_fmt codes [W | b] of every conv / dense layer, layer by layer, "
                                "row-major, one per word; clears the loaded support set",
                "LOAD": "per support image: its label (0..N-1), then its C*H*W act_fmt pixel codes, two per word "
                        "(code 2w in bits 15..0 of word w)",
                "RUN": "one query image's C*H*W act_fmt codes, two per word; requests are pipelined",
                "RUN response": "N probabilities in prob_fmt, then the winning class",
            },
        }

    def _weights(self, cfg, args):
        key = (cfg, getattr(args, "encoder", "auto"))
        cache = _WCACHE
        if key not in cache:
            cache[key] = encoder_weights(cfg, key[1])
        return cache[key]

    def example_episode(self, cfg, seed: int, count: int):
        per_class = -(-count // cfg.n_way)
        eps, source = make_episodes(cfg, 1, seed, "auto", n_query=max(1, per_class))
        (ep,) = episode_codes(cfg, eps)
        order = [c * per_class + j for j in range(per_class) for c in range(cfg.n_way)][:count]
        return {**ep, "queries": [ep["queries"][i] for i in order]}, source

    def example_files(self, cfg, args):
        wq, wsrc = self._weights(cfg, args)
        ep, source = self.example_episode(cfg, args.seed, args.tasks)
        hexed = {
            "encoder.hex": fewshot_encoder_words(wq),
            "load.hex": fewshot_load_words(ep["support"], ep["labels"]),
            "query.hex": fewshot_run_words(ep["queries"][0]),
        }
        return ({k: "".join(f"{w & 0xFFFFFFFF:08x}\n" for w in v) for k, v in hexed.items()},
                {"example": {"features": source, "encoder": wsrc, "seed": args.seed, "files": list(hexed)}})

    def example_session(self, cfg, args, count):
        wq, wsrc = self._weights(cfg, args)
        ep, source = self.example_episode(cfg, args.seed, count)
        sup, labels, qs = np.asarray(ep["support"]), np.asarray(ep["labels"]), np.asarray(ep["queries"])
        r = enc.fewshot_fixed(wq, sup, labels, qs, cfg)
        from metafab.reference import match_fixed as mx

        ok = Packet(Status.OK, ())
        session = [Exchange("LOAD_ENCODER", Opcode.LOAD_ENCODER, tuple(fewshot_encoder_words(wq)), ok),
                   Exchange("LOAD", Opcode.LOAD, tuple(fewshot_load_words(sup, labels)), ok)]
        for n, q in enumerate(qs):
            session.append(Exchange(f"RUN query {n}", Opcode.RUN, tuple(fewshot_run_words(q)),
                                    Packet(Status.OK, tuple(mx.result_words(r.probs[n], r.pred[n])))))
        session.append(unknown_opcode_exchange())
        session.append(status_exchange(last_cycles=self.cycles(cfg).latency, runs=count, errors=1,
                                       last_error=Status.UNKNOWN_OPCODE, loaded=True))
        return session, f"{source}, {wsrc}, one episode of seed {args.seed}, {count} queries"

    def bench_model(self):
        rows = []
        for spec, lanes, split in (("c8-p-c16-p-d64", 16, 1), ("c8-p-c16-p-d64", 16, 4), ("c8-p-c16-p-d64", 8, 8),
                                   ("c8-p-c16-p-d64", 16, 8), ("d128-d64", 8, 8)):
            m = self.cycles(enc.EncoderConfig(spec=spec, lanes=lanes, split=split))
            rows.append({"encoder": spec, "lanes x split": f"{lanes} x {split}", "encoder job": m.job, "interval": m.ii,
                         "utilisation %": round(100 * m.lane_utilisation, 1),
                         "us per query @60MHz": round(m.ii / 60.0, 2)})
        return "few-shot engine cycle model, 5-way 1-shot glyphs", rows

    def cpu_kernel(self, cfg):
        """One query image through the encoder and the read-out of ``cfg`` in float32 C (the weights the engine
        runs, dequantised), the support set encoded and prepared (prototypes or unit rows) as at LOAD."""
        from metafab.gen.cpu_baseline import CpuKernel, render
        from metafab.hw.encoder import encoder_plan
        from metafab.reference import proto

        wq, wsrc = encoder_weights(cfg, "auto")
        params = enc.dequantize_encoder(wq, cfg)
        eps, source = make_episodes(cfg, 1, 0, "auto", n_query=1)
        ep = eps[0]
        y = np.asarray(ep["labels"])
        s = enc.forward(params, cfg.spec, ep["support"])
        if cfg.mode == "matching":
            norms = np.linalg.norm(s, axis=1, keepdims=True)
            prepared = np.concatenate([(s / np.where(norms > 0, norms, 1)).reshape(-1), y.astype(np.float64)])
        else:
            prepared = proto.prototypes(s, y, cfg.n_way).reshape(-1)
        flat_w = np.concatenate([np.concatenate([w.reshape(-1), b]) for w, b in params])
        probs, _ = enc.fewshot_float(params, cfg.spec, ep["support"], y, ep["queries"][:1], cfg.n_way, cfg.mode)
        plan = encoder_plan(cfg)
        stages = [{"kind": st.kind, "rows": st.rows, "cols": st.cols, "cin": st.in_shape[0], "relu": st.relu,
                   "pool": st.pool, "h": st.in_shape[1] if st.kind == "conv3x3" else 1,
                   "w": st.in_shape[2] if st.kind == "conv3x3" else 1} for st in plan]
        buf = max(st.rows * (st.positions if st.kind == "conv3x3" else 1) for st in plan)
        text = render("fewshot_cpu.c.j2", design=cfg.name, spec=str(cfg.spec), mode=cfg.mode, n=cfg.n_way,
                      m=cfg.match.n_support, d=cfg.spec.dim, stages=stages, buf=buf, n_weights=len(flat_w),
                      n_prep=len(prepared))
        return CpuKernel(source=text, inputs=np.concatenate([flat_w, prepared, ep["queries"][0]]),
                         n_out=cfg.n_way + 1, want=np.append(probs[0], int(np.argmax(probs[0]))), per="query",
                         atol=1e-4, rtol=1e-3, notes={"features": source, "encoder": wsrc})

    # --- workloads --------------------------------------------------------
    def simulate(self, cfg, args, progress):
        from metafab.reference.fixed import to_float

        if args.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {args.episodes}")
        wq, wsrc = self._weights(cfg, args)
        eps, source = make_episodes(cfg, args.episodes, args.seed, args.features, n_query=1)
        r = run_engine(cfg, wq, episode_codes(cfg, eps), sim=args.sim, waves=args.waves, return_outputs=True,
                       run_name=f"sim-{args.sim}", progress=progress)
        outs = r["outputs"]
        return {
            "engine": self.name, "design": cfg.name, "features": source, "encoder": wsrc, "simulator": args.sim,
            "episodes": len(eps), "queries": r["queries"], "mismatches": r["mismatches"],
            "latency_cycles": r["cycles"], "ii_measured": r.get("ii_measured"), "model": r["model"],
            "predictions": [int(o[-1]) for o in outs],
            "probabilities": [to_float(np.asarray(o[:-1]), cfg.match.prob_fmt).tolist() for o in outs],
            "labels": [int(v) for e in eps for v in e["query_labels"]],
            "run_folder": r["test_dir"],
        }

    def verify_options(self, args):
        return {"features": args.features, "encoder": args.encoder}

    def verify_workload(self, cfg, *, count, seed, features="auto", encoder="auto"):
        wq, wsrc = encoder_weights(cfg, encoder)
        n_eps = -(-count // (cfg.n_way * VERIFY_QUERIES_PER_CLASS))
        eps, source = make_episodes(cfg, n_eps, seed, features, VERIFY_QUERIES_PER_CLASS)
        codes = episode_codes(cfg, eps)
        params = enc.dequantize_encoder(wq, cfg)
        fixed, flt, labels = [], [], []
        for ep, cd in zip(eps, codes, strict=True):
            r = enc.fewshot_fixed(wq, np.asarray(cd["support"]), np.asarray(cd["labels"]), np.asarray(cd["queries"]),
                                  cfg)
            fixed.append(r.pred)
            flt.append(_float_preds(cfg, params, ep))
            labels.append(np.asarray(ep["query_labels"]))
        return Workload(codes, source, {"fixed": np.concatenate(fixed), "float64": np.concatenate(flt),
                                        "truth": np.concatenate(labels), "wq": wq, "encoder": wsrc,
                                        "random_weights": wsrc.startswith("random")})

    def verify_chunk(self, cfg, work, items, *, first, sim, seed, verilog, verilator_opt, progress):
        r = run_engine(cfg, work.data["wq"], items, sim=sim, idle=0.1, backpressure=0.2, seed=seed, verilog=verilog,
                       timing_queries=TIMING_QUERIES if first else 0, verilator_opt=verilator_opt,
                       run_name=f"verify-{sim}", progress=progress)
        r["preds"] = r["preds"][TIMING_QUERIES if first else 0:]
        return r

    def verify_report(self, cfg, work, runs):
        meaningful = work.source.startswith("glyphs") and not work.data["random_weights"]
        model = self.cycles(cfg)
        report = episode_report(cfg, model, work, runs, meaningful)
        report.update(encoder=work.data["encoder"], encoder_job_cycles=model.job, lanes=model.lanes)
        report["cycles_match_model"] &= report["load_cycles_measured"] == model.load_cycles
        return report

    def verify_rows(self, r):
        a = r["accuracy"]
        return [
            ("design", r["design"]),
            ("encoder weights", r["encoder"]),
            ("images", r["features"]),
            ("simulator", r["simulator"]),
            ("episodes, queries", f"{r['episodes']}, {r['queries']}"),
            ("output words", str(r["output_words"])),
            ("mismatches", f"{r['mismatches']}" + ("" if not r["mismatches"] else f"  first: {r['first_mismatch']}")),
            ("accuracy", f"RTL {_pct(a['rtl'])}, fixed point {_pct(a['fixed'])}, float64 {_pct(a['float64'])} "
                         f"(fixed = float64 on {100 * r['agreement_fixed_float64']:.2f} % of queries)"),
            ("latency", f"{', '.join(map(str, r['latency_measured']))} cycles measured, {r['latency_model']} "
                        f"modelled (encoder start to result, STATUS last_cycles); {r['query_latency_model']} from "
                        f"the query's last word"),
            ("packet latency", f"{r['packet_latency_measured']} cycles measured, {r['packet_latency_model']} "
                               f"modelled (request header to last response word)"),
            ("interval", f"{r['ii_measured']} cycles per query measured, {r['ii_model']} modelled (encoder-bound; "
                         f"{r['lanes']} multipliers {100 * r['lane_utilisation']:.1f} % busy)"),
            ("support LOAD", f"{r['load_cycles_measured']} cycles measured, {r['load_cycles_model']} modelled "
                             f"(last payload word to answer)"),
        ]

    # --- board ------------------------------------------------------------
    def preload(self, cfg, args):
        wq, source = self._weights(cfg, args)
        return fewshot_encoder_words(wq), source

    def item_cycles(self, cfg):
        return self.cycles(cfg).query_latency

    def build_figures(self, cfg, r, preload_source):
        model = self.cycles(cfg)
        clock, fmax = r.get("clock_mhz"), r.get("fmax_mhz")
        return {
            "preloaded_encoder": preload_source,
            "cycles": model.to_dict(),
            "latency_us": model.latency_us(clock) if clock else None,
            "latency_us_at_fmax": model.latency_us(fmax) if fmax else None,
            "anchor": None,
        }

    def build_rows(self, r):
        c = r["cycles"]
        at = (f"at the {r['clock_mhz']:.4g} MHz clock (timing {r['timing']})" if r.get("latency_us")
              else f"at Fmax {r['fmax_mhz']:.2f} MHz (harness, no PLL)")
        us = r.get("latency_us") or r.get("latency_us_at_fmax") or {}
        return [
            ("latency", f"{c['query_latency']} cycles = {us.get('query', 0):.2f} us per query image from its last "
                        f"word to the class; {at}"),
            ("interval", f"{c['ii']} cycles = {us.get('ii', 0):.2f} us per query (encoder-bound)"),
            ("support LOAD", f"{c['load_cycles']} cycles = {us.get('load', 0):.2f} us after its last word"),
        ]

    def run_on_board(self, cfg, args, host, say, progress):
        from metafab.reference import match_fixed as mx

        wq, wsrc = self._weights(cfg, args)
        if args.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {args.episodes}")
        eps, source = make_episodes(cfg, args.episodes, args.seed, "auto", n_query=1)
        if not args.skip_encoder_load:
            progress(f"sending the encoder ({wsrc}): LOAD_ENCODER of {cfg.spec.n_params} words")
            host.checked(Opcode.LOAD_ENCODER, fewshot_encoder_words(wq))
        mismatches, correct, results = 0, 0, []
        for n, (ep, codes) in enumerate(zip(eps, episode_codes(cfg, eps), strict=True)):
            sup, labels, qs = np.asarray(codes["support"]), np.asarray(codes["labels"]), np.asarray(codes["queries"])
            progress(f"episode {n}: loading {len(labels)} support images ({source})")
            host.load(fewshot_load_words(sup, labels))
            r = enc.fewshot_fixed(wq, sup, labels, qs, cfg)
            for q in range(len(qs)):
                got = host.run(fewshot_run_words(qs[q])).tolist()
                want = mx.result_words(r.probs[q], r.pred[q])
                bad = sum(int(a != b) for a, b in zip(got, want, strict=True))
                mismatches += bad
                correct += int(got[-1] == int(ep["query_labels"][q]))
                results.append({"episode": n, "query": q, "class": int(got[-1]), "label": int(ep["query_labels"][q]),
                                "mismatches": bad})
                say(f"episode {n} query {q}: class {got[-1]} (label {ep['query_labels'][q]}), {bad} mismatches")
        return {"design": cfg.name, "encoder": wsrc, "features": source, "results": results,
                "accuracy": correct / len(results), "mismatches": mismatches}

    def demo_heading(self, cfg):
        readout = "Matching" if cfg.mode == "matching" else "Prototypical"
        return f"{self.title} (encoder {cfg.spec} + {readout} read-out)"

    def demo_rows(self, m):
        a = m["accuracy"]
        acc = (f"{100 * a['rtl']:.2f} / {100 * a['fixed']:.2f} / {100 * a['float64']:.2f} %" if a["rtl"] is not None
               else "n/a")
        return [
            ("design", m["design"]),
            ("query images verified (Verilator)", f"{m['queries']} in {m['episodes']} episodes "
                                                  f"({m['output_words']} output words)"),
            ("mismatching output words", str(m["mismatches"])),
            ("accuracy RTL / fixed / float64", acc),
            ("cycles per query", f"{m['ii_model']} modelled, {m['ii_measured']} measured (encoder-bound)"),
        ]

    def demo_build_rows(self, b):
        us = b.get("latency_us") or {}
        return [(f"per query image at {b['clock_mhz']:.4g} MHz", f"{us.get('query', 0):.1f} us from pixels to class; "
                                                                f"support LOAD {us.get('load', 0):.1f} us")]

    def demo_anchor_rows(self):
        return []

    def report_sections(self, cfg, reports):
        from metafab.gen.engines.base import Engine

        return Engine.report_sections(self, cfg, reports)


_WCACHE: dict = {}

ENGINE = FewShotEngineSpec()
