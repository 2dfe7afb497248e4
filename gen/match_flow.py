"""The similarity engine's simulate/verify/build flow: Verilog, episodes, the cocotb bench, the figures.

Used by ``metafab {generate,sim,verify,build} match`` and by the tests.

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
import time
from collections.abc import Callable

import numpy as np

from metafab.gen.match_cycles import ii_of, match_cycles, stream_timeline
from metafab.hw.match_schedule import timing
from metafab.reference import match_fixed as mx
from metafab.reference.config import MatchConfig, config_digest
from metafab.reference.errors import UserError
from metafab.sim.runner import run_bench

__all__ = [
    "TOPLEVEL",
    "FEATURES",
    "engine_verilog",
    "make_episodes",
    "episode_codes",
    "run_engine",
    "verify",
    "match_build",
    "TIMING_QUERIES",
]

TOPLEVEL = "match_engine"
FEATURES = ("auto", "embedding", "pixels", "random", "extreme")
#: Queries sent back to back in a bench's timing phase (enough for the steady state).
TIMING_QUERIES = 6


def engine_verilog(cfg: MatchConfig, progress: Callable[[str], object] | None = None) -> str:
    """The engine's Verilog for ``cfg``, cached under the build folder by config and generator source."""
    from metafab.gen.export import cached_verilog
    from metafab.hw.match_engine import MatchEngine

    return cached_verilog(cfg, TOPLEVEL, lambda: MatchEngine(config=cfg), progress)


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

    Returns ``(episodes, features)`` with ``features`` resolved (see the module docstring).
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


def run_engine(
    cfg: MatchConfig,
    episodes: list[dict],
    *,
    sim: str = "verilator",
    scenario: str = "episodes",
    idle: float = 0.2,
    backpressure: float = 0.3,
    seed: int = 1,
    timing_queries: int = TIMING_QUERIES,
    waves: bool = False,
    run_name: str | None = None,
    verilator_opt: str | None = None,
    progress: Callable[[str], object] | None = None,
    reset_after: int | None = None,
    return_outputs: bool = False,
    expect_episodes: list[dict] | None = None,
    verilog: str | None = None,
) -> dict:
    """Run the cocotb similarity bench on ``episodes`` (code dicts, see :func:`episode_codes`).

    ``expect_episodes`` makes the scoreboard expect the outputs of other
    episodes than the ones sent (a check that it catches errors). ``verilog``
    replaces the engine's generated Verilog (e.g. the engine as elaborated for
    a device, with models of its primitives).

    Raises :class:`~metafab.sim.runner.SimulationFailed` on any mismatching
    word or any cycle count that differs from the model.
    """
    verilog = verilog or engine_verilog(cfg, progress)
    model = match_cycles(cfg)
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
    name = run_name or f"{scenario}-{config_digest(cfg)}"
    r = run_bench(verilog=verilog, toplevel=TOPLEVEL, bench="metafab.sim.benches.match", params=params,
                  sim=sim, waves=waves, run_name=name, verilator_opt=verilator_opt)
    out = dict(r.data)
    t = out.get("timing")
    if t:
        out["ii_measured"] = ii_of(t["responses"]) if len(t["responses"]) > 1 else None
        out["packet_latency_measured"] = t["responses"][0] + cfg.n_way + 2
    out.update(
        simulator=sim,
        build_seconds=r.build_seconds,
        run_seconds=r.run_seconds,
        build_cached=r.cached,
        model=model.to_dict(),
        test_dir=str(r.test_dir),
    )
    return out


def _float_preds(cfg: MatchConfig, ep) -> np.ndarray:
    from metafab.reference import matching, proto

    s, q, y = ep["support"], ep["queries"], ep["labels"]
    if cfg.mode == "matching":
        return matching.readout(q, s, y, cfg.n_way)[1]
    return proto.readout(q, proto.prototypes(s, y, cfg.n_way))[1]


def verify(
    cfg: MatchConfig,
    *,
    queries: int = 1000,
    sim: str = "verilator",
    seed: int = 0,
    features: str = "auto",
    idle: float = 0.1,
    backpressure: float = 0.2,
    chunk: int = 20,
    verilator_opt: str | None = None,
    verilog: str | None = None,
    progress: Callable[[str], object] | None = None,
) -> dict:
    """RTL against the bit-exact reference and float64 on digits (or random) episodes.

    Returns the figures ``metafab verify match`` prints: mismatching output
    words (must be 0), accuracy of the RTL, the fixed-point model and
    float64, the query latency measured by the engine and modelled, the
    steady-state initiation interval measured with back-to-back queries and
    modelled. ``verilog``: the engine's Verilog if already generated
    (default: generated here).
    """
    from threadpoolctl import threadpool_limits

    if queries < 1:
        raise UserError(f"--queries must be at least 1, got {queries}")
    t0 = time.perf_counter()
    n_query = 15
    per_episode = cfg.n_way * n_query
    n_eps = -(-queries // per_episode)
    with threadpool_limits(limits=1, user_api="blas"):
        eps, source = make_episodes(cfg, n_eps, seed, features, n_query)
        codes = episode_codes(cfg, eps)
        fixed_preds, float_preds, labels = [], [], []
        for ep, cd in zip(eps, codes, strict=True):
            prep = mx.prepare(np.asarray(cd["support"]), np.asarray(cd["labels"]), cfg)
            fixed_preds.append(mx.readout(np.asarray(cd["queries"]), prep, cfg).pred)
            float_preds.append(_float_preds(cfg, ep))
            labels.append(np.asarray(ep["query_labels"]))
    model = match_cycles(cfg)
    rtl_preds, cycles, mismatches, words, first, timing = [], [], 0, 0, None, None
    for at in range(0, n_eps, chunk):
        part = codes[at: at + chunk]
        r = run_engine(cfg, part, sim=sim, idle=idle, backpressure=backpressure, seed=seed + at,
                       verilog=verilog, timing_queries=TIMING_QUERIES if at == 0 else 0, verilator_opt=verilator_opt,
                       run_name=f"verify-{sim}", progress=progress if at == 0 else None)
        t_q = TIMING_QUERIES if at == 0 else 0
        rtl_preds += r["preds"][t_q:]
        cycles += r["cycles"]
        mismatches += r["mismatches"]
        words += r["words"]
        first = first or r.get("first_mismatch")
        if at == 0:
            timing = r
        if progress:
            progress(f"  {min(at + chunk, n_eps)}/{n_eps} episodes, {mismatches} mismatching words")
    rtl = np.asarray(rtl_preds)
    fixed = np.concatenate(fixed_preds)
    flt = np.concatenate(float_preds)
    truth = np.concatenate(labels)
    meaningful = source != "extreme"
    report = {
        "engine": "match",
        "design": cfg.name,
        "mode": cfg.mode,
        "config": cfg.to_dict(),
        "features": source,
        "simulator": sim,
        "episodes": n_eps,
        "queries": int(len(truth)),
        "output_words": words,
        "mismatches": mismatches,
        "first_mismatch": first,
        "rtl_equals_fixed": bool(np.array_equal(rtl, fixed)),
        "accuracy": {
            "rtl": float(np.mean(rtl == truth)) if meaningful else None,
            "fixed": float(np.mean(fixed == truth)) if meaningful else None,
            "float64": float(np.mean(flt == truth)) if meaningful else None,
        },
        "agreement_fixed_float64": float(np.mean(fixed == flt)),
        "latency_measured": sorted(set(cycles)),
        "latency_model": model.latency,
        "query_latency_model": model.query_latency,
        "packet_latency_measured": timing.get("packet_latency_measured") if timing else None,
        "packet_latency_model": model.packet_latency,
        "ii_measured": timing.get("ii_measured") if timing else None,
        "ii_model": model.ii,
        "ii_core": model.ii_core,
        "ii_bound": model.bound,
        "load_cycles_measured": (timing.get("timing") or {}).get("load_cycles") if timing else None,
        "load_cycles_model": model.load_cycles,
        "lanes": cfg.lanes,
        "utilisation": model.utilisation,
    }
    report["cycles_match_model"] = (
        set(cycles) == {model.latency} and report["ii_measured"] == model.ii
        and report["packet_latency_measured"] == model.packet_latency
    )
    report["seconds"] = time.perf_counter() - t0
    return report


def match_build(cfg: MatchConfig, board: str, *, top: str = "uart", baud: int = 115200, seed: int = 1,
                target_mhz=None, support_seed: int = 0, timing_ripup: bool = False,
                progress=None) -> dict:
    """Synthesis, place and route of the engine for ``board``, with the latencies at the achieved Fmax.

    ``top="uart"``: the board top (USB-UART bridge, the engine, and one
    episode's support set preloaded from a ROM, so the board answers queries
    at once; ``metafab run match`` may LOAD another); its bitstream is the one
    to program. ``top="harness"``: the engine alone behind the serial
    measurement harness, for the engine's own resources and Fmax.
    """
    from metafab.gen.anchors import MATCHING_D64_US
    from metafab.gen.flow import build, build_board_top, check_options
    from metafab.gen.host import match_load_payload
    from metafab.hw.board_top import BoardTop
    from metafab.hw.match_engine import MatchEngine
    from metafab.reference.protocol import Opcode, encode_request

    if top not in ("uart", "harness"):
        raise UserError(f"unknown top {top!r}; valid: uart, harness")
    name = f"match_{cfg.mode}_{cfg.n_way}w{cfg.k_shot}s_d{cfg.dim}_p{cfg.lanes}_{top}"
    # before any component exists (an unused one warns when it is collected)
    check_options(board, name=name, target_mhz=target_mhz, seed=seed, timing_ripup=timing_ripup)
    preloaded = None
    if top == "harness":
        r = build(MatchEngine(config=cfg), board, name=name, target_mhz=target_mhz, seed=seed,
                  timing_ripup=timing_ripup, progress=progress)
    else:
        eps, preloaded = make_episodes(cfg, 1, support_seed, "auto", n_query=1)
        (ep,) = episode_codes(cfg, eps)
        preload = encode_request(Opcode.LOAD, match_load_payload(ep["support"], ep["labels"]))
        board_top = BoardTop(MatchEngine(config=cfg), baud=baud, preload=preload)
        r = build_board_top(board_top, board, clock=board_top.clock, name=name, target_mhz=target_mhz,
                            seed=seed, timing_ripup=timing_ripup, progress=progress)
    model = match_cycles(cfg)
    anchor = MATCHING_D64_US.get((cfg.n_way, cfg.k_shot)) if cfg.dim == 64 else None
    r.update(
        design=cfg.name,
        config=cfg.to_dict(),
        top=top,
        baud=baud if top == "uart" else None,
        preloaded_support=preloaded,
        cycles=model.to_dict(),
        latency_us=model.latency_us(r["fmax_mhz"]) if r.get("fmax_mhz") else None,
        anchor=dict(anchor) if anchor else None,
    )
    return r
