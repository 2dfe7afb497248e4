"""The MAML engine's simulate/verify flow: Verilog, stimulus, the cocotb bench, the figures.

Used by ``metafab sim maml`` / ``metafab verify maml`` and by the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from metafab.gen.cycles import maml_cycles
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig, config_digest
from metafab.reference.errors import UserError
from metafab.sim.runner import run_bench

__all__ = [
    "engine_verilog",
    "weight_words",
    "random_params",
    "random_tasks",
    "run_engine",
    "TOPLEVEL",
]

TOPLEVEL = "maml_engine"


def engine_verilog(cfg: MamlConfig, progress: Callable[[str], object] | None = None) -> str:
    """The engine's Verilog for ``cfg``, cached under the build folder by config and generator."""
    from metafab.gen.export import cached_verilog
    from metafab.hw.maml_engine import MamlEngine

    return cached_verilog(cfg, TOPLEVEL, lambda: MamlEngine(config=cfg), progress)


def weight_words(wq) -> list[int]:
    """Augmented master codes in protocol order (layer by layer, row-major)."""
    return [int(v) for w in wq for v in np.asarray(w).reshape(-1)]


def random_params(cfg: MamlConfig, seed: int, scale: float = 1.0):
    """Random float weights (He-like, times ``scale``) and small random biases."""
    rng = np.random.default_rng(seed)
    params = []
    for i, o in zip(cfg.layers[:-1], cfg.layers[1:], strict=True):
        params.append((rng.normal(0, scale * np.sqrt(2.0 / i), (o, i)), rng.normal(0, 0.1 * scale, o)))
    return params


def random_tasks(cfg: MamlConfig, n: int, seed: int, *, kind: str = "sinusoid", extreme: bool = False):
    """``n`` tasks as act-format code lists ``[xs, ys, xq]``.

    ``kind="sinusoid"``: Finn et al. 2017 tasks (amplitude 0.1-5, phase 0-pi,
    x in [-5, 5]), the target repeated on every output. ``extreme=True``
    draws inputs and targets at the format's limits (saturation cases).
    """
    if kind != "sinusoid":
        raise UserError(f"unknown task kind {kind!r}; valid: sinusoid")
    rng = np.random.default_rng(seed)
    K, Q = cfg.k_support, cfg.n_query
    tasks = []
    for _ in range(n):
        if extreme:
            lo, hi = cfg.act_fmt.min_value, cfg.act_fmt.max_value
            xs = rng.choice([lo, hi, 0.0], size=(K, cfg.n_in))
            ys = rng.choice([lo, hi], size=(K, cfg.n_out))
            xq = rng.choice([lo, hi], size=(Q, cfg.n_in))
        else:
            amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
            xs = rng.uniform(-5, 5, (K, cfg.n_in))
            xq = rng.uniform(-5, 5, (Q, cfg.n_in))
            ys = np.repeat(amp * np.sin(xs[:, :1] - phase), cfg.n_out, axis=1)
        tasks.append([mf.quantize_inputs(a, cfg).tolist() for a in (xs, ys, xq)])
    return tasks


def run_engine(
    cfg: MamlConfig,
    wq,
    tasks,
    *,
    sim: str = "verilator",
    scenario: str = "tasks",
    idle: float = 0.2,
    backpressure: float = 0.3,
    seed: int = 1,
    waves: bool = False,
    run_name: str | None = None,
    verilator_opt: str | None = None,
    progress: Callable[[str], object] | None = None,
    reset_after: int | None = None,
    expect_weights=None,
    return_outputs: bool = False,
    verilog: str | None = None,
) -> dict:
    """Run the cocotb MAML bench and return its figures (raises SimulationFailed on a mismatch).

    ``expect_weights`` makes the scoreboard expect the outputs of other
    initial weights than the loaded ones (a check that it catches errors).
    ``verilog`` replaces the engine's generated Verilog (e.g. the engine as
    elaborated for a device, with models of its primitives).
    """
    verilog = verilog or engine_verilog(cfg, progress)
    model = maml_cycles(cfg)
    params = {
        "config": cfg.to_dict(),
        "weights": weight_words(wq),
        "tasks": tasks,
        "idle": idle,
        "backpressure": backpressure,
        "seed": seed,
        "scenario": scenario,
        "expected_cycles": model.task_cycles,
    }
    if return_outputs:
        params["return_outputs"] = True
    if reset_after is not None:
        params["reset_after"] = int(reset_after)
    if expect_weights is not None:
        params["reference_weights"] = weight_words(expect_weights)
    json.dumps(params)
    if progress:
        progress(f"simulating {len(tasks)} task(s) of {cfg.name} with {sim} ({scenario})")
    name = run_name or f"{scenario}-{config_digest(cfg)}"
    r = run_bench(verilog=verilog, toplevel=TOPLEVEL, bench="metafab.sim.benches.maml", params=params,
                  sim=sim, waves=waves, run_name=name, verilator_opt=verilator_opt)
    out = dict(r.data)
    out.update(
        simulator=sim,
        build_seconds=r.build_seconds,
        run_seconds=r.run_seconds,
        build_cached=r.cached,
        model_cycles=model.task_cycles,
        utilisation=model.utilisation,
        test_dir=str(r.test_dir),
    )
    return out


SHIPPED_LAYERS = (1, 40, 40, 1)


def initial_params(cfg: MamlConfig, weights: str = "auto", seed: int = 0):
    """Float initial parameters for ``cfg`` and where they come from.

    ``weights="shipped"``: the meta-trained sinusoid init (1-40-40-1 only);
    ``"random"``: He-initialised with ``seed``; ``"auto"``: shipped when the
    layers allow it, random otherwise.
    """
    if weights not in ("auto", "shipped", "random"):
        raise UserError(f"unknown weights {weights!r}; valid: auto, shipped, random")
    if weights == "shipped" or (weights == "auto" and tuple(cfg.layers) == SHIPPED_LAYERS):
        if tuple(cfg.layers) != SHIPPED_LAYERS:
            raise UserError(
                f"the shipped weights are for layers {'-'.join(map(str, SHIPPED_LAYERS))}, "
                f"not {'-'.join(map(str, cfg.layers))}; use --weights random"
            )
        from metafab.reference.weights import load_sinusoid_init

        k = 5 if cfg.k_support == 5 else 10
        return load_sinusoid_init(k), f"shipped MAML init (meta-trained with K={k})"
    return random_params(cfg, seed), f"random (He, seed {seed})"


def sinusoid_batch(cfg: MamlConfig, n: int, seed: int):
    """``n`` sinusoid tasks (floats) for a 1-input 1-output net (Finn et al. 2017 ranges)."""
    if cfg.n_in != 1 or cfg.n_out != 1:
        raise UserError(f"sinusoid tasks need a 1-input 1-output net, not layers {cfg.layers}")
    from metafab.reference.sinusoid import SinusoidTasks

    return SinusoidTasks(k_support=cfg.k_support, k_query=cfg.n_query).sample(np.random.default_rng(seed), n)


def verify(
    cfg: MamlConfig,
    *,
    tasks: int = 100,
    sim: str = "verilator",
    seed: int = 0,
    weights: str = "auto",
    chunk: int = 250,
    idle: float = 0.1,
    backpressure: float = 0.2,
    verilator_opt: str | None = None,
    verilog: str | None = None,
    progress: Callable[[str], object] | None = None,
) -> dict:
    """RTL against the bit-exact reference and the float64 model on ``tasks`` random tasks.

    Returns the figures ``metafab verify maml`` prints: mismatching output
    words (must be 0), cycles per task measured by the engine and modelled,
    MAC-lane utilisation, and the query MSE of the RTL's outputs relative to
    the float64 model adapted from the same initial weights on the same tasks.
    ``verilog``: the engine's Verilog if already generated (default: generated here).
    """
    import time

    from metafab.reference import maml as fmaml

    if tasks < 1:
        raise UserError(f"--tasks must be at least 1, got {tasks}")
    t0 = time.perf_counter()
    params, source = initial_params(cfg, weights, seed)
    wq = mf.quantize_params(params, cfg)
    saturated = int(sum(np.isin(w, [cfg.master_fmt.min_code, cfg.master_fmt.max_code]).sum() for w in wq))
    sinusoid = cfg.n_in == 1 and cfg.n_out == 1
    if sinusoid:
        batch = sinusoid_batch(cfg, tasks, seed)
        codes = [
            [mf.quantize_inputs(batch.x_support[i], cfg).tolist(),
             mf.quantize_inputs(batch.y_support[i], cfg).tolist(),
             mf.quantize_inputs(batch.x_query[i], cfg).tolist()]
            for i in range(tasks)
        ]
    else:
        codes = random_tasks(cfg, tasks, seed)
    model = maml_cycles(cfg)
    outputs, cycles, mismatches, words = [], [], 0, 0
    first = None
    for at in range(0, tasks, chunk):
        part = codes[at : at + chunk]
        r = run_engine(cfg, wq, part, sim=sim, idle=idle, backpressure=backpressure, seed=seed + at,
                       verilog=verilog, verilator_opt=verilator_opt, return_outputs=True, run_name=f"verify-{sim}",
                       progress=progress if at == 0 else None)
        outputs += r["outputs"]
        cycles += r["cycles"]
        mismatches += r["mismatches"]
        words += r["words"]
        first = first or r.get("first_mismatch")
        if progress:
            progress(f"  {min(at + chunk, tasks)}/{tasks} tasks, {mismatches} mismatching words")
    report = {
        "engine": "maml",
        "design": cfg.name,
        "config": cfg.to_dict(),
        "weights": source,
        "saturated_weights": saturated,
        "simulator": sim,
        "tasks": tasks,
        "output_words": words,
        "mismatches": mismatches,
        "first_mismatch": first,
        "cycles_measured": sorted(set(cycles)),
        "cycles_model": model.task_cycles,
        "cycles_match_model": set(cycles) == {model.task_cycles},
        "useful_macs": model.useful_macs,
        "lanes": cfg.lanes,
        "utilisation": model.utilisation,
    }
    if sinusoid:
        y_rtl = np.array([mf_to_float(o, cfg) for o in outputs]).reshape(tasks, cfg.n_query, 1)
        mse_fixed = ((y_rtl - batch.y_query) ** 2).mean(axis=(1, 2))
        mse_float = np.empty(tasks)
        for i in range(tasks):
            adapted = fmaml.adapt(params, batch.x_support[i], batch.y_support[i], cfg.steps, cfg.lr)
            mse_float[i] = ((fmaml.forward(adapted, batch.x_query[i]) - batch.y_query[i]) ** 2).mean()
        report.update(
            mse_float64=float(mse_float.mean()),
            mse_fixed=float(mse_fixed.mean()),
            mse_ratio=float(mse_fixed.mean() / mse_float.mean()),
        )
    report["seconds"] = time.perf_counter() - t0
    return report


def mf_to_float(codes, cfg: MamlConfig) -> np.ndarray:
    from metafab.reference.fixed import to_float

    return to_float(np.asarray(codes, dtype=np.int64), cfg.act_fmt)


def maml_build(cfg: MamlConfig, board: str, *, top: str = "uart", baud: int = 115200, weights: str = "auto",
               target_mhz=None, seed: int = 1, timing_ripup: bool = False, progress=None) -> dict:
    """Synthesis, place and route of the engine for ``board``, with latency at the achieved Fmax.

    ``top="uart"``: the board top (USB-UART bridge, the engine, and the
    initial weights preloaded from a ROM so the board answers RUN at once);
    its bitstream is the one to program. ``top="harness"``: the engine alone
    behind the serial measurement harness (every port registered), for the
    engine's own resources and Fmax.
    """
    from metafab.gen.anchors import maml_anchor
    from metafab.gen.flow import build, build_board_top, check_options
    from metafab.hw.board_top import BoardTop
    from metafab.hw.maml_engine import MamlEngine
    from metafab.reference.protocol import Opcode, encode_request

    if top not in ("uart", "harness"):
        raise UserError(f"unknown top {top!r}; valid: uart, harness")
    name = f"maml_p{cfg.lanes}_{top}"
    # before any component exists (an unused one warns when it is collected)
    check_options(board, name=name, target_mhz=target_mhz, seed=seed, timing_ripup=timing_ripup)
    source = None
    if top == "harness":
        r = build(MamlEngine(config=cfg), board, name=name, target_mhz=target_mhz, seed=seed,
                  timing_ripup=timing_ripup, progress=progress)
    else:
        params, source = initial_params(cfg, weights, 0)
        preload = encode_request(Opcode.LOAD, weight_words(mf.quantize_params(params, cfg)))
        board_top = BoardTop(MamlEngine(config=cfg), baud=baud, preload=preload)
        r = build_board_top(board_top, board, clock=board_top.clock, name=name, target_mhz=target_mhz,
                            seed=seed, timing_ripup=timing_ripup, progress=progress)
    model = maml_cycles(cfg)
    r.update(
        design=cfg.name,
        config=cfg.to_dict(),
        top=top,
        baud=baud if top == "uart" else None,
        preloaded_weights=source,
        task_cycles=model.task_cycles,
        utilisation=model.utilisation,
        latency_us=model.latency_us(r["fmax_mhz"]) if r.get("fmax_mhz") else None,
        anchor=maml_anchor(cfg.layers, cfg.k_support, cfg.steps),
    )
    return r
