"""The ``match`` engine: Matching-Network / Prototypical-Network read-out of a support set on chip.

Hardware :class:`metafab.hw.match_engine.MatchEngine`, cycle model
:mod:`metafab.hw.match_cycles`, bit-exact reference
:mod:`metafab.reference.match_fixed`, payloads
:mod:`metafab.reference.payloads`, bench :mod:`metafab.sim.benches.match`.

Stimulus (``features``):

``embedding``
    5-way (at most) K-shot episodes of the meta-test digits 5-9 through the
    shipped embedding network (D = 64);
``pixels``
    the same episodes' raw 8x8 pixels in ``[0, 1]`` (D = 64; on these digits
    they score higher than the shipped embedding, ``docs/reference.md``);
``random``
    Gaussian clusters: class centres ``N(0, 1)``, rows and queries the centre
    plus ``N(0, 0.6^2)`` noise (any N, D);
``extreme``
    rows and queries at the limits of ``emb_fmt`` and duplicated rows across
    classes: saturation and exact ties (accuracy is meaningless there);
``auto``
    ``embedding`` when the shape allows it (D = 64, N <= 5), else ``random``.
"""

from __future__ import annotations

import json

import numpy as np

from metafab.gen.engines.base import (
    DesignFlag,
    Engine,
    Exchange,
    Progress,
    Workload,
    status_exchange,
    unknown_opcode_exchange,
)
from metafab.reference import match_fixed as mx
from metafab.reference.config import MATCH_MODES, MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import match_load_words, match_run_words
from metafab.reference.protocol import Opcode, Packet, Status

__all__ = ["ENGINE", "MatchEngineSpec", "FEATURES", "TIMING_QUERIES", "make_episodes", "episode_codes",
           "episode_report",
           "resolve_features", "run_engine"]

FEATURES = ("auto", "embedding", "pixels", "random", "extreme")
#: Queries sent back to back in a bench's timing phase (enough for the steady state).
TIMING_QUERIES = 6
#: Queries per class of a verification episode.
VERIFY_QUERIES_PER_CLASS = 15


def resolve_features(cfg: MatchConfig, features: str) -> str:
    """The stimulus a ``features`` name means for ``cfg`` (``auto`` resolved; UserError if impossible)."""
    if features not in FEATURES:
        raise UserError(f"unknown features {features!r}; valid: {', '.join(FEATURES)}")
    digits_ok = cfg.dim == 64 and cfg.n_way <= 5
    if features == "auto":
        return "embedding" if digits_ok else "random"
    if features in ("embedding", "pixels") and not digits_ok:
        raise UserError(
            f"{features} features need dim 64 and at most 5 ways (the meta-test digits 5-9), not "
            f"{cfg.n_way}-way dim {cfg.dim}; use --features random"
        )
    return features


def make_episodes(cfg: MatchConfig, n: int, seed: int, features: str = "auto", n_query: int = 15):
    """``n`` float episodes: dicts with ``support`` (M, D), ``labels``, ``queries`` (Q, D), ``query_labels``.

    Returns ``(episodes, features)`` with ``features`` resolved (see the module docstring). Episode ``i``
    is the same whatever ``n`` is.
    """
    features = resolve_features(cfg, features)
    rng = np.random.default_rng(seed)
    out = []
    if features in ("embedding", "pixels"):
        from metafab.reference import digits, embedding, weights

        params = weights.load_digits_embedding()
        sampler = digits.EpisodeSampler(n_way=cfg.n_way, k_shot=cfg.k_shot, n_query=n_query)
        for _ in range(n):
            ep = sampler(rng)
            f = (lambda x: embedding.embed(params, x)) if features == "embedding" else (lambda x: x)
            out.append({"support": f(ep.support), "labels": ep.support_labels, "queries": f(ep.query),
                        "query_labels": ep.query_labels})
        return out, features
    N, K, D = cfg.n_way, cfg.k_shot, cfg.dim
    for _ in range(n):
        labels = np.repeat(np.arange(N), K)
        rng.shuffle(labels)
        qlabels = np.repeat(np.arange(N), n_query)
        if features == "random":
            centres = rng.normal(0, 1, (N, D))
            support = centres[labels] + rng.normal(0, 0.6, (N * K, D))
            queries = centres[qlabels] + rng.normal(0, 0.6, (len(qlabels), D))
        else:  # extreme: the format's limits, rows repeated across classes (exact ties)
            lo, hi = cfg.emb_fmt.min_value, cfg.emb_fmt.max_value
            support = rng.choice([lo, hi, 0.0, hi / 2], size=(N * K, D))
            if N > 1:  # class 1 repeats class 0's rows: a query gets equal scores for both
                i0, i1 = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
                support[i1] = support[i0[np.arange(len(i1)) % len(i0)]]
            queries = rng.choice([lo, hi, 0.0], size=(len(qlabels), D))
            queries[::3] = support[rng.integers(0, N * K, size=len(queries[::3]))]
        out.append({"support": support, "labels": labels, "queries": queries, "query_labels": qlabels})
    return out, features


def episode_codes(cfg: MatchConfig, episodes) -> list[dict]:
    """Episodes as bench parameters: ``emb_fmt`` codes (half to even, saturating) and labels, as lists."""
    return [
        {"support": mx.quantize(ep["support"], cfg).tolist(), "labels": [int(v) for v in ep["labels"]],
         "queries": mx.quantize(ep["queries"], cfg).tolist()}
        for ep in episodes
    ]


def run_engine(cfg: MatchConfig, episodes: list[dict], *, sim: str = "verilator", scenario: str = "episodes",
               idle: float = 0.2, backpressure: float = 0.3, seed: int = 1, timing_queries: int = TIMING_QUERIES,
               waves: bool = False, run_name: str | None = None, verilator_opt: str | None = None,
               progress: Progress = None, reset_after: int | None = None, return_outputs: bool = False,
               expect_episodes: list[dict] | None = None, verilog: str | None = None) -> dict:
    """Run the cocotb similarity bench on ``episodes`` (code dicts, see :func:`episode_codes`).

    ``expect_episodes`` makes the scoreboard expect the outputs of other
    episodes than the ones sent (a check that it catches errors). ``verilog``
    replaces the engine's generated Verilog (e.g. the engine as elaborated for
    a device, with models of its primitives).

    Raises :class:`~metafab.sim.runner.SimulationFailed` on any mismatching
    word or any cycle count that differs from the model.
    """
    from metafab.gen.flow import simulate
    from metafab.hw.match_cycles import ii_of, stream_timeline
    from metafab.hw.match_schedule import timing

    model = ENGINE.cycles(cfg)
    expected = {"latency": model.latency, "load_cycles": model.load_cycles}
    if timing_queries:
        tl = stream_timeline(cfg, timing_queries)
        expected["timeline"] = {"headers": [t["header"] for t in tl],
                                "responses": [t["response"] for t in tl]}
    params = {
        "config": cfg.to_dict(),
        "episodes": episodes,
        "idle": idle,
        "backpressure": backpressure,
        "seed": seed,
        "scenario": scenario,
        "timing_queries": timing_queries if scenario == "episodes" else 0,
        "expected": expected,
        "window": timing(cfg).query_slots,
    }
    if return_outputs:
        params["return_outputs"] = True
    if reset_after is not None:
        params["reset_after"] = int(reset_after)
    if expect_episodes is not None:
        params["reference_episodes"] = expect_episodes
    json.dumps(params)
    if progress:
        nq = sum(len(e["queries"]) for e in episodes)
        progress(f"simulating {len(episodes)} episode(s), {nq} queries of {cfg.name} with {sim} ({scenario})")
    out = simulate(ENGINE, cfg, params, sim=sim, scenario=scenario, waves=waves, run_name=run_name,
                   verilator_opt=verilator_opt, verilog=verilog, progress=progress)
    t = out.get("timing")
    if t:
        out["ii_measured"] = ii_of(t["responses"]) if len(t["responses"]) > 1 else None
        out["packet_latency_measured"] = t["responses"][0] + cfg.n_way + 2
    out["model"] = model.to_dict()
    return out


def _float_probs(cfg: MatchConfig, ep) -> np.ndarray:
    """The float64 read-out's class probabilities of an episode's queries, ``(Q, N)``."""
    from metafab.reference import matching, proto

    s, q, y = ep["support"], ep["queries"], ep["labels"]
    if cfg.mode == "matching":
        return matching.readout(q, s, y, cfg.n_way)[0]
    return proto.readout(q, proto.prototypes(s, y, cfg.n_way))[0]


def _float_preds(cfg: MatchConfig, ep) -> np.ndarray:
    """The float64 read-out's predicted classes (the lowest index on ties)."""
    return np.argmax(_float_probs(cfg, ep), axis=-1)


def _file_episodes(path: str, cfg: MatchConfig):
    """Real-valued episodes from a user's JSON or npz file (``--input``), checked against the design."""
    from metafab.gen.engines.user_input import read_items

    m, N = cfg.n_way * cfg.k_shot, cfg.n_way
    items = read_items(path, "episode", {"support": ((m, cfg.dim), "real", True), "labels": ((m,), ("label", N), True),
                                         "queries": ((None, cfg.dim), "real", True),
                                         "query_labels": ((None,), "real", False)})
    eps = []
    for n, t in enumerate(items):
        if len(t["queries"]) == 0:
            raise UserError(f"episode {n} in {path!r}: queries is empty; the design needs at least one query")
        missing = set(range(N)) - set(t["labels"].tolist())
        if missing:
            raise UserError(f"episode {n} in {path!r}: class {min(missing)} has no support row")
        ql = t.get("query_labels", np.full(len(t["queries"]), -1.0))
        if ql.shape != (len(t["queries"]),) or (ql != np.round(ql)).any() or (ql < -1).any() or (ql >= N).any():
            raise UserError(f"episode {n} in {path!r}: query_labels must be one label 0..{N - 1} (or -1: unknown) "
                            f"per query")
        eps.append({"support": t["support"], "labels": t["labels"], "queries": t["queries"],
                    "query_labels": ql.astype(np.int64)})
    return eps, "file"


def episode_report(cfg, model, work, runs, meaningful: bool) -> dict:
    """The figures of an episode engine's verification (``match``, ``fewshot``): predictions of the RTL against
    the fixed-point and float64 ones (accuracies when ``meaningful``), and latency, interval, packet latency
    and LOAD cycles measured in the first run's timing phase against ``model``; ``cycles_match_model`` says
    whether every one of them equals the model."""
    timing = runs[0]
    cycles = [c for r in runs for c in r["cycles"]]
    rtl = np.asarray([p for r in runs for p in r["preds"]])
    fixed, flt, truth = work.data["fixed"], work.data["float64"], work.data["truth"]

    def acc(pred):
        return float(np.mean(pred == truth)) if meaningful else None

    report = {
        "mode": cfg.mode,
        "features": work.source,
        "episodes": len(work.items),
        "queries": int(len(truth)),
        "rtl_equals_fixed": bool(np.array_equal(rtl, fixed)),
        "accuracy": {"rtl": acc(rtl), "fixed": acc(fixed), "float64": acc(flt)},
        "agreement_fixed_float64": float(np.mean(fixed == flt)),
        "latency_measured": sorted(set(cycles)),
        "latency_model": model.latency,
        "query_latency_model": model.query_latency,
        "packet_latency_measured": timing.get("packet_latency_measured"),
        "packet_latency_model": model.packet_latency,
        "ii_measured": timing.get("ii_measured"),
        "ii_model": model.ii,
        "load_cycles_measured": (timing.get("timing") or {}).get("load_cycles"),
        "load_cycles_model": model.load_cycles,
        "lane_utilisation": model.lane_utilisation,
    }
    report["cycles_match_model"] = (
        set(cycles) == {model.latency} and report["ii_measured"] == model.ii
        and report["packet_latency_measured"] == model.packet_latency
        and report["load_cycles_measured"] in (None, model.load_cycles)
    )
    return report


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f} %"


class MatchEngineSpec(Engine):
    name = "match"
    summary = "similarity engine: Matching (cosine) / Prototypical (-L2) read-out of a support set on chip"
    title = "similarity engine"
    toplevel = "match_engine"
    bench = "metafab.sim.benches.match"
    config_class = MatchConfig
    design_flags = (
        DesignFlag("--mode", "mode", choices=MATCH_MODES,
                   help="cosine attention over the support set, or squared Euclidean to prototypes"),
        DesignFlag("--ways", "n_way", int, "N", "classes per episode"),
        DesignFlag("--shots", "k_shot", int, "K", "support embeddings per class"),
        DesignFlag("--dim", "dim", int, "D", "embedding dimension"),
        DesignFlag("--lanes", "lanes", int, "P", "parallel MAC lanes (a power of two)"),
    )
    item = "episode"
    run_item = "query"
    count_flag = "--queries"
    count_default = 1000
    demo_count = 200
    chunk = 20
    in_demo = True
    build_order = 1  # the longer build: the demo starts it first
    default_clock = {"ecp5": 75.0, "ice40": 24.0}

    def add_command_arguments(self, p, command):
        features = ("--features", dict(default="auto", choices=FEATURES,
                                       help="query/support embeddings (default: the shipped digits embedding "
                                       "when D=64, else random clusters)"))
        if command in ("sim", "verify"):
            p.add_argument(features[0], **features[1])
        if command == "sim":
            p.add_argument("--episodes", type=int, default=1, help="episodes to run, 3 queries each (default 1)")
        if command in ("sim", "verify"):
            from metafab.gen.engines.user_input import INPUT_HELP

            p.add_argument("--input", metavar="FILE", help=f"your own {INPUT_HELP[self.name]} (instead of the "
                           "built-in episodes)")
        if command == "verify":
            p.add_argument("--queries", type=int, default=self.count_default,
                           help=f"queries to run, {VERIFY_QUERIES_PER_CLASS} per class of each episode "
                           f"(default {self.count_default})")
        if command == "run":
            p.add_argument("--support", choices=("load", "preloaded"), default="load",
                           help="'preloaded' runs the episode whose support set the board top holds, without a "
                           "LOAD (default: load each episode's support set)")
            p.add_argument("--episodes", type=int, default=3, help="built-in digits episodes to run (default 3)")
            p.add_argument("--input", metavar="FILE",
                           help='JSON or npz file of episodes instead of the built-in ones: a list of {"support": '
                           '[[..]], "labels": [..], "queries": [[..]]}, optional "query_labels"')

    # --- hardware ---------------------------------------------------------
    def component(self, cfg):
        from metafab.hw.match_engine import MatchEngine

        return MatchEngine(config=cfg)

    def cycles(self, cfg):
        from metafab.hw.match_cycles import match_cycles

        return match_cycles(cfg)

    def packet_words(self, cfg):
        return cfg.load_words, cfg.query_words, cfg.result_words

    def manifest_fields(self, cfg):
        return {
            "formats": {name[:-4]: str(getattr(cfg, name)) for name in
                        ("emb_fmt", "unit_fmt", "proto_fmt", "acc_fmt", "logit_fmt", "exp_fmt", "prob_fmt")},
            "payloads": {
                "LOAD": "per support row: its label (0..N-1), then its D codes in emb_fmt",
                "RUN": "the D codes of one query in emb_fmt, query_pack to a 32-bit word (2: code 2w in bits "
                       "15..0 of word w, code 2w+1 in bits 31..16); requests are pipelined",
                "RUN response": "N probabilities in prob_fmt, then the winning class",
            },
            "query_pack": cfg.query_pack,
        }

    def example_episode(self, cfg, seed: int, count: int) -> tuple[dict, str]:
        """The example episode of ``generate`` as codes: its support set and ``count`` queries taken class by
        class in turn (query ``j`` is of class ``j mod N``), and where it comes from. For ``count <= N`` its
        support set is the board top's preload of the same seed."""
        per_class = -(-count // cfg.n_way)
        eps, source = make_episodes(cfg, 1, seed, "auto", n_query=per_class)
        (ep,) = episode_codes(cfg, eps)
        order = [c * per_class + j for j in range(per_class) for c in range(cfg.n_way)][:count]
        return {**ep, "queries": [ep["queries"][i] for i in order]}, source

    def example_files(self, cfg, args):
        ep, source = self.example_episode(cfg, args.seed, args.tasks)
        words = match_load_words(ep["support"], ep["labels"])
        return ({"load.hex": "".join(f"{w & 0xFFFFFFFF:08x}\n" for w in words),
                 "query.hex": "".join(f"{w:08x}\n" for w in match_run_words(ep["queries"][0], cfg))},
                {"example": {"features": source, "seed": args.seed, "files": ["load.hex", "query.hex"]}})

    def example_session(self, cfg, args, count):
        """LOAD of the example support set (``load.hex``), its ``count`` queries (the first is ``query.hex``)
        answered by :func:`metafab.reference.match_fixed.readout`, an unknown opcode, STATUS."""
        ep, source = self.example_episode(cfg, args.seed, count)
        support, labels = np.asarray(ep["support"]), np.asarray(ep["labels"])
        ro = mx.readout(np.asarray(ep["queries"]), mx.prepare(support, labels, cfg), cfg)
        session = [Exchange("LOAD", Opcode.LOAD, tuple(match_load_words(support, labels)), Packet(Status.OK, ()))]
        for n, query in enumerate(ep["queries"]):
            session.append(Exchange(f"RUN query {n}", Opcode.RUN, tuple(match_run_words(query, cfg)),
                                    Packet(Status.OK, tuple(mx.result_words(ro.probs[n], ro.pred[n])))))
        session.append(unknown_opcode_exchange())
        session.append(status_exchange(last_cycles=self.cycles(cfg).latency, runs=count, errors=1,
                                       last_error=Status.UNKNOWN_OPCODE, loaded=True))
        queries = "1 query" if count == 1 else f"{count} queries"
        return session, f"{source} features, one episode of seed {args.seed}, {queries}"

    def bench_model(self):
        rows = []
        for mode in ("matching", "proto"):
            for lanes in (16, 32, 64, 128):
                m = self.cycles(MatchConfig(mode=mode, lanes=lanes))
                rows.append({"mode": mode, "lanes": lanes, "latency": m.latency, "interval": m.ii,
                             "utilisation %": round(100 * m.lane_utilisation, 1),
                             "us per query @100MHz": round(m.ii / 100.0, 3)})
        return "similarity engine cycle model, 5-way 5-shot, D=64", rows

    def cpu_kernel(self, cfg):
        """One query's read-out of ``cfg`` in float32 C, the support set prepared (unit rows or prototypes) as
        the engine prepares it at LOAD."""
        from metafab.gen.cpu_baseline import CpuKernel, render
        from metafab.reference import proto

        eps, source = make_episodes(cfg, 1, 0, "auto", n_query=1)
        ep = eps[0]
        s, y, q = ep["support"], np.asarray(ep["labels"]), ep["queries"][0]
        if cfg.mode == "matching":
            norms = np.linalg.norm(s, axis=1, keepdims=True)
            prepared = np.concatenate([(s / np.where(norms > 0, norms, 1)).reshape(-1), y.astype(np.float64)])
        else:
            prepared = proto.prototypes(s, y, cfg.n_way).reshape(-1)
        probs = _float_probs(cfg, ep)[0]
        text = render("match_cpu.c.j2", design=cfg.name, mode=cfg.mode, n=cfg.n_way, m=cfg.n_support, d=cfg.dim)
        pred = int(np.argmax(probs))
        return CpuKernel(source=text, inputs=np.concatenate([prepared, q]), n_out=cfg.n_way + 1,
                         want=np.append(probs, pred), per="query", atol=1e-5, rtol=1e-3,
                         notes={"features": source})

    # --- workloads --------------------------------------------------------
    def simulate(self, cfg, args, progress):
        from metafab.reference.fixed import to_float

        if getattr(args, "input", None):
            eps, _ = _file_episodes(args.input, cfg)
            source = f"file {args.input}"
        elif args.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {args.episodes}")
        else:
            eps, source = make_episodes(cfg, args.episodes, args.seed, args.features, n_query=3)
        r = run_engine(cfg, episode_codes(cfg, eps), sim=args.sim, waves=args.waves, return_outputs=True,
                       run_name=f"sim-{args.sim}", progress=progress)
        outs = r["outputs"]
        return {
            "engine": self.name, "design": cfg.name, "features": source, "simulator": args.sim,
            "episodes": len(eps), "queries": r["queries"], "mismatches": r["mismatches"],
            "latency_cycles": r["cycles"], "ii_measured": r.get("ii_measured"), "model": r["model"],
            "predictions": [int(o[-1]) for o in outs],
            "probabilities": [to_float(np.asarray(o[:-1]), cfg.prob_fmt).tolist() for o in outs],
            "labels": [int(v) for e in eps for v in e["query_labels"]],
            "run_folder": r["test_dir"],
        }

    def format_sim(self, doc):
        lines = [f"{doc['design']}: {doc['episodes']} episode(s), {doc['queries']} queries on {doc['simulator']}, "
                 f"features: {doc['features']}"]
        truth = doc["labels"]
        t = len(doc["predictions"]) - len(truth)  # the timing phase's queries come first
        for n, (c, p) in enumerate(zip(doc["predictions"][t:], doc["probabilities"][t:], strict=True)):
            vals = " ".join(f"{v:.3f}" for v in p)
            lines.append(f"query {n}: class {c} (label {truth[n]}); probabilities {vals}")
        m = doc["model"]
        lines.append(f"latency {sorted(set(doc['latency_cycles']))} cycles (model {m['latency']}), "
                     f"interval {doc['ii_measured']} cycles per query (model {m['ii']}); "
                     f"mismatches against the reference: {doc['mismatches']}")
        return "\n".join(lines)

    def verify_options(self, args):
        return {"features": args.features, "input": getattr(args, "input", None)}

    def verify_workload(self, cfg, *, count, seed, features="auto", input=None):
        from threadpoolctl import threadpool_limits

        n_eps = -(-count // (cfg.n_way * VERIFY_QUERIES_PER_CLASS))
        with threadpool_limits(limits=1, user_api="blas"):
            if input:
                eps, _ = _file_episodes(input, cfg)
                source = f"file {input}"
            else:
                eps, source = make_episodes(cfg, n_eps, seed, features, VERIFY_QUERIES_PER_CLASS)
            codes = episode_codes(cfg, eps)
            fixed, flt, labels = [], [], []
            for ep, cd in zip(eps, codes, strict=True):
                prep = mx.prepare(np.asarray(cd["support"]), np.asarray(cd["labels"]), cfg)
                fixed.append(mx.readout(np.asarray(cd["queries"]), prep, cfg).pred)
                flt.append(_float_preds(cfg, ep))
                labels.append(np.asarray(ep["query_labels"]))
        return Workload(codes, source, {"fixed": np.concatenate(fixed), "float64": np.concatenate(flt),
                                        "truth": np.concatenate(labels)})

    def verify_chunk(self, cfg, work, items, *, first, sim, seed, verilog, verilator_opt, progress):
        r = run_engine(cfg, items, sim=sim, idle=0.1, backpressure=0.2, seed=seed, verilog=verilog,
                       timing_queries=TIMING_QUERIES if first else 0, verilator_opt=verilator_opt,
                       run_name=f"verify-{sim}", progress=progress)
        r["preds"] = r["preds"][TIMING_QUERIES if first else 0:]
        return r

    def verify_report(self, cfg, work, runs):
        truth = work.data["truth"]
        meaningful = work.source != "extreme" and bool((truth >= 0).all())  # a user's file may not know them
        model = self.cycles(cfg)
        report = episode_report(cfg, model, work, runs, meaningful)
        report.update(ii_core=model.ii_core, ii_bound=model.bound, lanes=cfg.lanes)
        return report

    def passed(self, r):
        return r["mismatches"] == 0 and r["rtl_equals_fixed"] and r["cycles_match_model"]

    def verify_rows(self, r):
        a = r["accuracy"]
        return [
            ("design", r["design"]),
            ("features", r["features"]),
            ("simulator", r["simulator"]),
            ("episodes, queries", f"{r['episodes']}, {r['queries']}"),
            ("output words", str(r["output_words"])),
            ("mismatches", f"{r['mismatches']}" + ("" if not r["mismatches"] else f"  first: {r['first_mismatch']}")),
            ("accuracy", f"RTL {_pct(a['rtl'])}, fixed point {_pct(a['fixed'])}, float64 {_pct(a['float64'])} "
                         f"(fixed = float64 on {100 * r['agreement_fixed_float64']:.2f} % of queries)"),
            ("latency", f"{', '.join(map(str, r['latency_measured']))} cycles measured, {r['latency_model']} "
                        f"modelled (begin to result); {r['query_latency_model']} from the last query word"),
            ("packet latency", f"{r['packet_latency_measured']} cycles measured, {r['packet_latency_model']} "
                               f"modelled (request header to last response word)"),
            ("interval", f"{r['ii_measured']} cycles per query measured, {r['ii_model']} modelled "
                         f"({r['ii_bound']}-bound; core {r['ii_core']})"),
            ("LOAD", f"{r['load_cycles_measured']} cycles measured, {r['load_cycles_model']} modelled"),
        ]

    # --- board ------------------------------------------------------------
    #: the seed of the episode whose support set the board top holds (``metafab run match --support preloaded``)
    PRELOAD_SEED = 0

    def preload(self, cfg, args):
        eps, source = make_episodes(cfg, 1, self.PRELOAD_SEED, "auto", n_query=1)
        (ep,) = episode_codes(cfg, eps)
        return match_load_words(ep["support"], ep["labels"]), source

    def item_cycles(self, cfg):
        return self.cycles(cfg).query_latency

    def build_figures(self, cfg, r, preload_source):
        from metafab.gen.anchors import MATCHING_D64_US

        model = self.cycles(cfg)
        clock, fmax = r.get("clock_mhz"), r.get("fmax_mhz")
        anchor = MATCHING_D64_US.get((cfg.n_way, cfg.k_shot)) if cfg.dim == 64 else None
        return {
            "preloaded_support": preload_source,
            "cycles": model.to_dict(),
            "latency_us": model.latency_us(clock) if clock else None,
            "latency_us_at_fmax": model.latency_us(fmax) if fmax else None,
            "anchor": dict(anchor) if anchor else None,
        }

    def build_rows(self, r):
        c = r["cycles"]
        at = (f"at the {r['clock_mhz']:.4g} MHz clock (timing {r['timing']})" if r.get("latency_us")
              else f"at Fmax {r['fmax_mhz']:.2f} MHz (harness, no PLL)")
        us = r.get("latency_us") or r.get("latency_us_at_fmax") or {}
        return [
            ("latency", f"{c['latency']} cycles = {us.get('compute', 0):.3f} us (begin to result); "
                        f"{c['query_latency']} cycles = {us.get('query', 0):.3f} us from the last query word; {at}"),
            ("packet latency", f"{c['packet_latency']} cycles = {us.get('packet', 0):.3f} us"),
            ("interval", f"{c['ii']} cycles = {us.get('ii', 0):.3f} us per query ({c['bound']}-bound)"),
        ]

    def run_on_board(self, cfg, args, host, say, progress):
        from metafab.reference import fixed as fx

        preloaded = args.support == "preloaded"
        if args.input:
            eps, source = _file_episodes(args.input, cfg)
        elif preloaded:  # the episode the board top was built with
            eps, source = make_episodes(cfg, 1, self.PRELOAD_SEED, "auto", n_query=1)
        else:
            if args.episodes < 1:
                raise UserError(f"--episodes must be at least 1, got {args.episodes}")
            eps, source = make_episodes(cfg, args.episodes, args.seed, "auto", n_query=1)
        results, mismatches, correct, labelled = [], 0, 0, 0
        for n, (ep, codes) in enumerate(zip(eps, episode_codes(cfg, eps), strict=True)):
            support, labels = np.asarray(codes["support"]), np.asarray(codes["labels"])
            if not (preloaded and n == 0 and not args.input):
                progress(f"episode {n}: loading {len(labels)} support embeddings ({source})")
                host.load(match_load_words(support, labels))
            ro = mx.readout(np.asarray(codes["queries"]), mx.prepare(support, labels, cfg), cfg)
            for q, query in enumerate(codes["queries"]):
                got = host.run(match_run_words(query, cfg)).tolist()
                want = mx.result_words(ro.probs[q], ro.pred[q])
                bad = sum(int(a != b) for a, b in zip(got, want, strict=True))
                mismatches += bad
                label = int(ep["query_labels"][q])
                if label >= 0:
                    labelled += 1
                    correct += int(got[-1] == label)
                st = host.status()
                probs = fx.to_float(np.asarray(got[:-1]), cfg.prob_fmt).tolist()
                results.append({"episode": n, "query": q, "class": int(got[-1]), "label": label,
                                "probabilities": probs, "mismatches": bad, "cycles": st["last_cycles"]})
                vals = " ".join(f"{v:.3f}" for v in probs)
                lab = f" (label {label})" if label >= 0 else ""
                say(f"episode {n} query {q}: class {got[-1]}{lab}, {st['last_cycles']} cycles on chip, "
                    f"{bad} mismatches; probabilities {vals}")
        accuracy = correct / labelled if labelled else None
        if accuracy is not None:
            say(f"accuracy {100 * accuracy:.1f} % over {labelled} queries; mismatches {mismatches}")
        return {"design": cfg.name, "features": source, "results": results, "accuracy": accuracy,
                "mismatches": mismatches}

    def demo_heading(self, cfg):
        return f"{self.title} ({'Matching' if cfg.mode == 'matching' else 'Prototypical'} Networks)"

    def demo_rows(self, m):
        a = m["accuracy"]
        return [
            ("design", m["design"]),
            ("features", m["features"]),
            ("queries verified (Verilator)", f"{m['queries']} in {m['episodes']} episodes "
                                             f"({m['output_words']} output words)"),
            ("mismatching output words", str(m["mismatches"])),
            ("accuracy RTL / fixed / float64", f"{100 * a['rtl']:.2f} / {100 * a['fixed']:.2f} / "
                                               f"{100 * a['float64']:.2f} %"),
            ("latency per query", f"{m['latency_model']} cycles modelled, "
                                  f"{', '.join(map(str, m['latency_measured']))} measured"),
            ("initiation interval", f"{m['ii_model']} cycles modelled, {m['ii_measured']} measured"),
        ]

    def demo_build_rows(self, b):
        us = b.get("latency_us") or {}
        return [(f"latency per query at {b['clock_mhz']:.4g} MHz", f"{us.get('compute', 0):.3f} us; one query every "
                                                                  f"{us.get('ii', 0):.3f} us")]

    def demo_anchor_rows(self):
        from metafab.gen.anchors import MATCHING_D64_US

        anchor = MATCHING_D64_US.get((5, 5))
        return [("H100, PyTorch CUDA graph", f"{anchor['h100_cuda_graph']} us")] if anchor else []

    # --- report page ------------------------------------------------------
    def report_sections(self, cfg, reports):
        return [*super().report_sections(cfg, reports), self._pipeline_section(cfg),
                self._numerics_section(cfg, reports.studies)]

    #: queries the pipeline chart shows, sent back to back
    REPORT_QUERIES = 3

    def _pipeline_section(self, cfg):
        """The Gantt chart of queries sent back to back, from the cycle model's stream timeline: each
        query's request words, its dot products on the lanes, the softmax, the reciprocal, the argmax and
        its response."""
        from metafab.gen.report_figures import gantt
        from metafab.gen.report_page import Figure, Section
        from metafab.hw.match_cycles import stream_timeline
        from metafab.hw.match_schedule import timing

        tm, model = timing(cfg), self.cycles(cfg)
        softmax = "dot drain, scale, exp" if cfg.mode == "matching" else "dot drain, logits, exp pass"
        phases = ["request words", "wait for a slot", f"dot products ({cfg.lanes} lanes)", softmax,
                  "1/T reciprocal", "probabilities, argmax", "result waits", "response beats"]
        busy = cfg.dim / (cfg.chunks * cfg.lanes)
        rows, notes = [], {}
        for q, t in enumerate(stream_timeline(cfg, self.REPORT_QUERIES)):
            b = t["begin"]
            marks = [t["header"], t["start"], b, b + tm.issue_cycles, b + tm.f0, b + tm.f0 + tm.recip_latency + 1,
                     t["done"], t["response"], t["last_beat"] + 1]
            segs = [(a, z - a, p) for a, z, p in zip(marks[:-1], marks[1:], phases, strict=True) if z > a]
            label = f"query {q}"
            rows.append((label, segs))
            notes[label] = [f"{100 * busy:.0f} % lanes" if p == phases[2] else ""
                            for a, z, p in zip(marks[:-1], marks[1:], phases, strict=True) if z > a]
        s = Section("pipeline", "Pipeline: queries through the similarity engine (cycle model)")
        s.figures.append(Figure("gantt", gantt(rows, title=f"{cfg.name}: {self.REPORT_QUERIES} queries back to back",
                                               xlabel="cycle from the first request header", phases=phases,
                                               notes=notes, name="match-gantt"),
                                f"one query every {model.ii} cycles in steady state ({model.bound}-bound); "
                                "text: the share of the lanes busy during the dot products"))
        s.rows = [("latency", f"{model.latency} cycles begin to result; {model.query_latency} from the last query "
                              f"word; {model.packet_latency} request header to last response word"),
                  ("initiation interval", f"{model.ii} cycles per query (core {model.ii_core}, {model.bound}-bound)"),
                  ("lanes", f"{cfg.lanes} lanes, {tm.issue_cycles} issue cycles per query "
                            f"({cfg.n_vectors} vectors x {cfg.chunks} chunks); {100 * model.lane_utilisation:.1f} % "
                            f"busy at the steady-state rate"),
                  ("slots", f"{tm.query_slots} query-buffer, {tm.result_slots} result")]
        return s

    def _numerics_section(self, cfg, studies):
        """The precision study (fixed - float64 accuracy vs operand width, per read-out and shot count; the
        softmax and rounding variants at W=16) and the float64 few-shot accuracy with 95 % intervals."""
        from metafab.gen.report_figures import curves
        from metafab.gen.report_page import STUDY_COMMANDS, Figure, Missing, Section, Table

        s = Section("numerics", "Numerics: fixed point against float64")
        prec = studies.get("match-precision")
        if prec:
            widths = {v["label"]: v["width"] for v in prec["variants"] if not v["overrides"]}
            series = []
            for features, readout, k in sorted({(r["features"], r["readout"], r["k"]) for r in prec["rows"]}):
                rs = sorted((r for r in prec["rows"] if (r["features"], r["readout"], r["k"]) == (features, readout, k)
                             and r["variant"] in widths), key=lambda r: widths[r["variant"]])
                series.append((f"{features}, {readout}, {k}-shot", [widths[r["variant"]] for r in rs],
                               [r["difference"] for r in rs], [r["difference_ci95"] for r in rs]))
            s.figures.append(Figure("precision", curves(
                series, title="accuracy, fixed point - float64", xlabel="operand width W (bits)",
                ylabel="accuracy points", hline=(0.0, "float64"), name="match-precision"),
                f"{prec['metric']}; {prec['settings']['episodes']} episodes per shot count"))
            s.tables.append(Table("softmax and rounding variants at W=16 (accuracy %, fixed - float64 +- 95 % "
                                  "paired half-width)",
                                  ["features", "read-out", "K", "variant", "float64", "fixed", "difference",
                                   "agreement"],
                                  [[r["features"], r["readout"], str(r["k"]), r["variant"],
                                    f"{r['accuracy_float64']:.2f}", f"{r['accuracy_fixed']:.2f}",
                                    f"{r['difference']:+.2f} +- {r['difference_ci95']:.2f}",
                                    f"{100 * r['agreement']:.1f} %"] for r in prec["rows"]
                                   if r["variant"] not in widths or r["variant"] == "W=16"]))
        else:
            s.missing.append(Missing("precision study", STUDY_COMMANDS["match-precision"]))
        dig = studies.get("digits")
        if dig:
            s.tables.append(Table("few-shot accuracy, float64 (mean +- 95 % half-width over episodes)",
                                  ["features", "read-out", "K", "accuracy"],
                                  [[r["features"], r["readout"], str(r["k"]),
                                    f"{100 * r['accuracy']:.1f} +- {100 * r['ci95']:.1f} %"] for r in dig["rows"]]))
            s.notes.append(f"digits study: {dig['metric']}; {dig['settings']['episodes']} episodes per shot count")
        else:
            s.missing.append(Missing("few-shot accuracy table (digits study)", STUDY_COMMANDS["digits"]))
        return s


ENGINE = MatchEngineSpec()
