"""The ``maml`` engine: the MAML inner loop of an MLP on chip (MSE; sinusoid regression by default).

Hardware :class:`metafab.hw.maml_engine.MamlEngine`, cycle model
:mod:`metafab.hw.maml_cycles`, bit-exact reference
:mod:`metafab.reference.maml_fixed`, payloads
:mod:`metafab.reference.payloads`, bench :mod:`metafab.sim.benches.maml`.
Workload: sinusoid tasks (Finn et al. 2017 ranges) for a 1-input 1-output
net, random tasks otherwise.
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
from metafab.gen.engines.weight_source import (
    WEIGHTS,
    add_weights_argument,
    imported_params,
    is_model_file,
    model_layers,
)
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import maml_load_words, maml_run_words, maml_weight_codes
from metafab.reference.protocol import Opcode, Packet, Status, to_words

__all__ = ["ENGINE", "MamlEngineSpec", "initial_params", "random_params", "random_tasks", "sinusoid_tasks",
           "run_engine", "WEIGHTS", "SHIPPED_LAYERS"]

SHIPPED_LAYERS = (1, 40, 40, 1)


def random_params(cfg: MamlConfig, seed: int, scale: float = 1.0):
    """Random float weights (He-like, times ``scale``) and small random biases."""
    rng = np.random.default_rng(seed)
    params = []
    for i, o in zip(cfg.layers[:-1], cfg.layers[1:], strict=True):
        params.append((rng.normal(0, scale * np.sqrt(2.0 / i), (o, i)), rng.normal(0, 0.1 * scale, o)))
    return params


def initial_params(cfg: MamlConfig, weights: str = "auto", seed: int = 0):
    """Float initial parameters for ``cfg`` and where they come from.

    ``weights="shipped"``: the meta-trained sinusoid init (1-40-40-1 only);
    ``"random"``: He-initialised with ``seed``; ``"auto"``: shipped when the
    layers allow it, random otherwise; a model file (``.onnx``, ``.safetensors``,
    ``.npz``): its weights (:mod:`metafab.gen.engines.weight_source`).
    """
    if is_model_file(weights):
        return imported_params(cfg, weights)
    if weights not in WEIGHTS:
        raise UserError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHTS)}")
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


def random_tasks(cfg: MamlConfig, n: int, seed: int, *, extreme: bool = False):
    """``n`` tasks as act-format code lists ``[xs, ys, xq]`` for any net shape.

    Sinusoid-like targets (amplitude 0.1-5, phase 0-pi, x in [-5, 5]) on
    every output; ``extreme=True`` draws inputs and targets at the format's
    limits (saturation cases). Task ``i`` is the same whatever ``n`` is.
    """
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
        tasks.append(quantize_task(cfg, xs, ys, xq))
    return tasks


def quantize_task(cfg: MamlConfig, xs, ys, xq) -> list:
    """One task's real inputs and targets as act-format code lists ``[xs, ys, xq]`` (the bench's form)."""
    return [mf.quantize_inputs(a, cfg).tolist() for a in (xs, ys, xq)]


def sinusoid_tasks(cfg: MamlConfig, n: int, seed: int):
    """``n`` sinusoid tasks for a 1-input 1-output net (Finn et al. 2017 ranges): the float batch and
    the tasks as act-format code lists. The tasks are drawn one after the other from one generator, so
    task ``i`` of a seed is the same whatever ``n`` is."""
    import dataclasses

    if cfg.n_in != 1 or cfg.n_out != 1:
        raise UserError(f"sinusoid tasks need a 1-input 1-output net, not layers {cfg.layers}")
    from metafab.reference.sinusoid import SinusoidTasks, TaskBatch

    rng, sampler = np.random.default_rng(seed), SinusoidTasks(k_support=cfg.k_support, k_query=cfg.n_query)
    one = [sampler.sample(rng, 1) for _ in range(n)]
    b = TaskBatch(**{f.name: np.concatenate([getattr(t, f.name) for t in one]) for f in dataclasses.fields(TaskBatch)})
    return b, [quantize_task(cfg, b.x_support[i], b.y_support[i], b.x_query[i]) for i in range(n)]


def run_engine(cfg: MamlConfig, wq, tasks, *, sim: str = "verilator", scenario: str = "tasks", idle: float = 0.2,
               backpressure: float = 0.3, seed: int = 1, waves: bool = False, run_name: str | None = None,
               verilator_opt: str | None = None, progress: Progress = None, reset_after: int | None = None,
               expect_weights=None, return_outputs: bool = False, verilog: str | None = None,
               engine=None, read_weights: bool = False) -> dict:
    """Run the cocotb MAML bench on ``tasks`` (code lists) with initial weights ``wq``; its figures.

    ``expect_weights`` makes the scoreboard expect the outputs of other
    initial weights than the loaded ones (a check that it catches errors).
    ``verilog`` replaces the engine's generated Verilog (e.g. the engine as
    elaborated for a device, with models of its primitives); ``engine`` is the
    registered engine whose bench runs (default ``maml``; ``maml-cls`` passes
    itself, with episodes as ``tasks``); ``read_weights`` reads every task's adapted weights back
    (READ_WEIGHTS) and checks them against the reference's too (``weight_words``, ``weight_mismatches``;
    with ``return_outputs``, ``adapted``: the read-back codes). Raises
    :class:`~metafab.sim.runner.SimulationFailed` on a mismatch.
    """
    from metafab.gen.flow import simulate

    engine = ENGINE if engine is None else engine  # the classifier's engine shares this bench driver
    model = engine.cycles(cfg)
    params = {
        "config": cfg.to_dict(),
        "weights": maml_weight_codes(wq),
        "tasks": tasks,
        "idle": idle,
        "backpressure": backpressure,
        "seed": seed,
        "scenario": scenario,
        "expected_cycles": model.task_cycles,
    }
    if return_outputs:
        params["return_outputs"] = True
    if read_weights:
        params["read_weights"] = True
    if reset_after is not None:
        params["reset_after"] = int(reset_after)
    if expect_weights is not None:
        params["reference_weights"] = maml_weight_codes(expect_weights)
    json.dumps(params)
    if progress:
        progress(f"simulating {len(tasks)} {engine.item}(s) of {cfg.name} with {sim} ({scenario})")
    out = simulate(engine, cfg, params, sim=sim, scenario=scenario, waves=waves, run_name=run_name,
                   verilator_opt=verilator_opt, verilog=verilog, progress=progress)
    out.update(model_cycles=model.task_cycles, lane_utilisation=model.lane_utilisation)
    return out


def read_back_check(host, want_codes, result: dict, args) -> int:
    """With ``--read-weights``: READ_WEIGHTS on the board, compared word by word with the reference's adapted
    weights; the count of wrong words (also put in ``result``)."""
    if not getattr(args, "read_weights", False):
        return 0
    got = host.read_weights()
    want = np.asarray(maml_weight_codes(want_codes), dtype=np.int64)
    bad = int(len(want)) if len(got) != len(want) else int((got != want).sum())
    result.update(weight_words=int(len(want)), weight_mismatches=bad)
    return bad


def _layers_given(args) -> bool:
    """The command line sets the design's layers (``--layers``, ``--set layers=``, a config file's)."""
    from metafab.gen.designs import parse_sets, read_toml

    if getattr(args, "design_layers", None) is not None or "layers" in parse_sets(getattr(args, "set", None)):
        return True
    return bool(getattr(args, "config", None)) and "layers" in read_toml(args.config, args.engine)


def _act_float(codes, cfg: MamlConfig) -> np.ndarray:
    from metafab.reference.fixed import to_float

    return to_float(np.asarray(codes, dtype=np.int64), cfg.act_fmt)


def _file_items(path: str, cfg: MamlConfig) -> list[dict]:
    """A user's tasks (``--input``): dicts of ``xs``, ``ys``, ``xq`` and optionally ``yq``, checked."""
    from metafab.gen.engines.user_input import read_items

    K, Q = cfg.k_support, cfg.n_query
    return read_items(path, "task", {"xs": ((K, cfg.n_in), "real", True), "ys": ((K, cfg.n_out), "real", True),
                                     "xq": ((Q, cfg.n_in), "real", True), "yq": ((Q, cfg.n_out), "real", False)})


def _file_tasks(path: str, cfg: MamlConfig):
    """Real-valued tasks ``(xs, ys, xq)`` from a user's JSON or npz file, checked against the design."""
    return [(t["xs"], t["ys"], t["xq"]) for t in _file_items(path, cfg)]


def file_workload(path: str, cfg: MamlConfig):
    """A user's tasks as ``(float batch or None, code lists)``: the batch (for the query MSE) when every task
    has its query targets ``yq``."""
    from types import SimpleNamespace

    items = _file_items(path, cfg)
    codes = [quantize_task(cfg, t["xs"], t["ys"], t["xq"]) for t in items]
    if not all("yq" in t for t in items):
        return None, codes
    batch = SimpleNamespace(**{k: np.stack([t[f] for t in items]) for k, f in
                               (("x_support", "xs"), ("y_support", "ys"), ("x_query", "xq"), ("y_query", "yq"))})
    return batch, codes


class MamlEngineSpec(Engine):
    name = "maml"
    summary = "MAML adaptation engine: inner-loop SGD of an MLP on chip, then the queries (MSE)"
    title = "MAML adaptation engine"
    toplevel = "maml_engine"
    bench = "metafab.sim.benches.maml"
    config_class = MamlConfig
    weights_flag = "--weights"
    design_flags = (
        DesignFlag("--layers", "layers", metavar="A-B-...", help="layer widths, e.g. 1-40-40-1"),
        DesignFlag("--k-support", "k_support", int, "K", "support samples per task"),
        DesignFlag("--queries", "n_query", int, "Q", "query samples per task"),
        DesignFlag("--steps", "steps", int, "S", "inner SGD steps"),
        DesignFlag("--lanes", "lanes", int, "P", "parallel MAC lanes (a power of two)"),
        DesignFlag("--lr", "lr", float, help="inner learning rate"),
    )
    item = "task"
    count_flag = "--tasks"
    count_default = 100
    demo_count = 100
    chunk = 250
    in_demo = True
    build_order = 0
    default_clock = {"ecp5": 80.0, "ice40": 24.0}

    def add_command_arguments(self, p, command):
        if command in ("generate", "sim", "verify", "build"):
            what = {"generate": "written to weights.txt", "build": "preloaded into the board top"}.get(
                command, "of the engine")
            add_weights_argument(p, help=f"initial weights {what} (default: shipped when the layers allow, "
                                         f"else random)")
        if command == "run":
            add_weights_argument(p, extra=("preloaded",),
                                 help="weights to LOAD first; 'preloaded' sends none (the board top has them)")
            p.add_argument("--read-weights", action="store_true",
                           help="after every task, read the adapted weights back and check them too")
            p.add_argument("--tasks", type=int, default=3, help="built-in sinusoid tasks to run (default 3)")
            p.add_argument("--input", metavar="FILE",
                           help='JSON or npz file of tasks instead of the built-in ones: a list of {"xs": [[..]], '
                           '"ys": [[..]], "xq": [[..]]} in real numbers (see metafab sim maml --help)')
        if command == "sim":
            p.add_argument("--tasks", type=int, default=3, help="tasks to run (default 3)")
        if command == "verify":
            p.add_argument("--tasks", type=int, default=self.count_default,
                           help=f"random tasks to run (default {self.count_default})")
        self.add_user_data_arguments(p, command)

    def add_user_data_arguments(self, p, command):
        """``--read-weights`` (verify) and ``--input`` (sim, verify): the same on both MAML engines."""
        from metafab.gen.engines.user_input import INPUT_HELP

        if command == "verify":
            p.add_argument("--read-weights", action="store_true",
                           help=f"after every {self.item}, read the adapted weights back (READ_WEIGHTS) and compare "
                           "every word with the reference's too")
        if command in ("sim", "verify"):
            p.add_argument("--input", metavar="FILE", help=f"your own {INPUT_HELP[self.name]} ({self.count_flag} is "
                           "then ignored)")

    def config(self, args):
        """The base config (default, ``--config``, flags, ``--set``); with ``--weights FILE`` and no layers
        given, the model's layers."""
        cfg = super().config(args)
        layers = model_layers(args)
        if layers is not None and not _layers_given(args):
            cfg = cfg.replace(layers=layers)
        return cfg

    # --- hardware ---------------------------------------------------------
    def component(self, cfg):
        from metafab.hw.maml_engine import MamlEngine

        return MamlEngine(config=cfg)

    def cycles(self, cfg):
        from metafab.hw.maml_cycles import maml_cycles

        return maml_cycles(cfg)

    def extra_packets(self, cfg):
        return {"READ_WEIGHTS": (0, cfg.n_params)}  # the adapted weights, read back (docs/protocol.md)

    def manifest_fields(self, cfg):
        return {
            "formats": {
                "act": str(cfg.act_fmt), "weight": str(cfg.weight_fmt), "master": str(cfg.master_fmt),
                "grad": str(cfg.grad_fmt), "lr": str(cfg.lr_fmt), "acc": str(cfg.acc_fmt),
            },
            "lr_eff": cfg.lr_eff,
            "lr_code": cfg.lr_code,
            "n_params": cfg.n_params,
            "weights": None,
        }

    # --- what the classifier (a subclass) replaces: its weights, its workload -------------------
    def initial(self, cfg, weights, seed: int):
        """Float initial parameters of ``cfg`` and where they come from (``--weights``)."""
        return initial_params(cfg, weights, seed)

    def workload(self, cfg, count: int, seed: int, input=None):
        """``(float tasks or None, code lists)``: ``count`` built-in tasks of ``seed``, or a user's file."""
        return file_workload(input, cfg) if input else self.tasks(cfg, count, seed)

    def _run(self, cfg, wq, items, **kw):
        return run_engine(cfg, wq, items, engine=self, **kw)

    def example_files(self, cfg, args):
        params, source = self.initial(cfg, args.weights, args.seed)
        words = maml_weight_codes(mf.quantize_params(params, cfg))
        # the weight files are the protocol's LOAD payload, in order ($readmemh-ready)
        return ({"weights.txt": "".join(f"{w}\n" for w in words),
                 "weights.hex": "".join(f"{w & 0xFFFFFFFF:08x}\n" for w in words)},
                {"weights": source})

    def example_session(self, cfg, args, count):
        """LOAD of the example weights (``weights.hex``), ``count`` tasks of the verification workload (seed
        ``--seed``) answered by :func:`metafab.reference.maml_fixed.run_task`, an unknown opcode, STATUS."""
        params, source = initial_params(cfg, args.weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        _, tasks = self.tasks(cfg, count, args.seed)
        session = [Exchange("LOAD", Opcode.LOAD, tuple(maml_load_words(wq)), Packet(Status.OK, ()))]
        for n, (xs, ys, xq) in enumerate(tasks):
            y = mf.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in (xs, ys, xq)), cfg).y_query
            session.append(Exchange(f"RUN task {n}", Opcode.RUN, tuple(maml_run_words(xs, ys, xq)),
                                    Packet(Status.OK, tuple(to_words(y.reshape(-1))))))
        session.append(unknown_opcode_exchange())
        session.append(status_exchange(last_cycles=self.cycles(cfg).task_cycles, runs=count, errors=1,
                                       last_error=Status.UNKNOWN_OPCODE, loaded=True))
        what = "sinusoid" if cfg.n_in == 1 and cfg.n_out == 1 else "random"
        return session, f"weights: {source}; {count} {what} task(s), seed {args.seed}"

    def bench_model(self):
        rows = []
        for steps in (1, 5):
            for lanes in (1, 4, 16, 32, 64, 128):
                m = self.cycles(MamlConfig(lanes=lanes, steps=steps))
                rows.append({"steps": steps, "lanes": lanes, "cycles": m.task_cycles,
                             "utilisation %": round(100 * m.lane_utilisation, 1),
                             "latency us @100MHz": round(m.latency_us(100.0), 1)})
        return "MAML engine cycle model, 1-40-40-1, K=10, 10 queries", rows

    def cpu_kernel(self, cfg):
        """One task of ``cfg`` in float32 C: the inner loop from the initial weights, then the queries."""
        from metafab.gen.cpu_baseline import CpuKernel, render
        from metafab.reference import maml as fmaml

        params, source = initial_params(cfg, "auto", 0)
        if cfg.n_in == 1 and cfg.n_out == 1:
            b, _ = sinusoid_tasks(cfg, 1, 0)
            xs, ys, xq = b.x_support[0], b.y_support[0], b.x_query[0]
        else:
            rng = np.random.default_rng(0)
            xs, ys, xq = (rng.uniform(-1, 1, (n, w)) for n, w in
                          ((cfg.k_support, cfg.n_in), (cfg.k_support, cfg.n_out), (cfg.n_query, cfg.n_in)))
        flat = np.concatenate([np.concatenate([np.asarray(w).reshape(-1), np.asarray(bias)]) for w, bias in params])
        layers, at = [], 0
        for n, (i, o) in enumerate(zip(cfg.layers[:-1], cfg.layers[1:], strict=True)):
            layers.append({"n": n, "i": i, "o": o, "off": at, "last": n == cfg.n_layers - 1})
            at += o * i + o
        text = render("maml_cpu.c.j2", design=cfg.name, layers=layers, k=cfg.k_support, q=cfg.n_query,
                      steps=cfg.steps, nparam=at, lr=repr(float(cfg.lr)), ce=False, low=0)
        want = fmaml.forward(fmaml.adapt(params, xs, ys, cfg.steps, cfg.lr), xq).reshape(-1)
        return CpuKernel(source=text, inputs=np.concatenate([flat, xs.reshape(-1), ys.reshape(-1), xq.reshape(-1)]),
                         n_out=cfg.n_query * cfg.n_out, want=want, per="task", notes={"weights": source})

    # --- workloads --------------------------------------------------------
    def tasks(self, cfg, n: int, seed: int):
        """``n`` tasks of ``seed``: ``(float batch or None, code lists)`` (sinusoid when the net allows)."""
        if cfg.n_in == 1 and cfg.n_out == 1:
            return sinusoid_tasks(cfg, n, seed)
        return None, random_tasks(cfg, n, seed)

    def simulate(self, cfg, args, progress):
        if getattr(args, "input", None):
            _, tasks = file_workload(args.input, cfg)
        elif args.tasks < 1:
            raise UserError(f"--tasks must be at least 1, got {args.tasks}")
        params, source = initial_params(cfg, args.weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        if not getattr(args, "input", None):
            _, tasks = self.tasks(cfg, args.tasks, args.seed)
        r = run_engine(cfg, wq, tasks, sim=args.sim, waves=args.waves, return_outputs=True,
                       run_name=f"sim-{args.sim}", progress=progress)
        return {
            "engine": self.name, "design": cfg.name, "weights": source, "simulator": args.sim,
            "tasks": r["tasks"], "cycles_per_task": r["cycles"], "model_cycles": r["model_cycles"],
            "mismatches": r["mismatches"], "outputs": [_act_float(o, cfg).tolist() for o in r["outputs"]],
            "run_folder": r["test_dir"],
        }

    def format_sim(self, doc):
        lines = [f"{doc['design']}: {doc['tasks']} task(s) on {doc['simulator']}, weights: {doc['weights']}"]
        for n, (c, o) in enumerate(zip(doc["cycles_per_task"], doc["outputs"], strict=True)):
            vals = ", ".join(f"{v:+.4f}" for v in o)
            lines.append(f"task {n}: {c} cycles; query outputs: {vals}")
        lines.append(f"cycle model: {doc['model_cycles']} cycles per task; mismatches against the reference: "
                     f"{doc['mismatches']}")
        return "\n".join(lines)

    def verify_options(self, args):
        return {"weights": args.weights, "input": getattr(args, "input", None),
                "read_weights": bool(getattr(args, "read_weights", False))}

    def verify_workload(self, cfg, *, count, seed, weights="auto", input=None, read_weights=False):
        params, source = self.initial(cfg, weights, seed)
        wq = mf.quantize_params(params, cfg)
        floats, codes = self.workload(cfg, count, seed, input)
        return Workload(codes, source, {"params": params, "wq": wq, "floats": floats, "input": input,
                                        "read_weights": read_weights})

    def verify_chunk(self, cfg, work, items, *, first, sim, seed, verilog, verilator_opt, progress):
        return self._run(cfg, work.data["wq"], items, sim=sim, idle=0.1, backpressure=0.2, seed=seed,
                         verilog=verilog, verilator_opt=verilator_opt, return_outputs=True,
                         read_weights=work.data.get("read_weights", False),
                         run_name=f"verify-{sim}", progress=progress)

    def report_common(self, cfg, work, runs) -> dict:
        """The verify report's fields both MAML engines have: weights, cycles, lanes, input, read-back."""
        model = self.cycles(cfg)
        cycles = [c for r in runs for c in r["cycles"]]
        report = {
            "weights": work.source,
            "saturated_weights": int(sum(np.isin(w, [cfg.master_fmt.min_code, cfg.master_fmt.max_code]).sum()
                                         for w in work.data["wq"])),
            "tasks": len(work.items),
            "cycles_measured": sorted(set(cycles)),
            "cycles_model": model.task_cycles,
            "cycles_match_model": set(cycles) == {model.task_cycles},
            "useful_macs": model.useful_macs,
            "lanes": cfg.lanes,
            "lane_utilisation": model.lane_utilisation,
        }
        if work.data.get("input"):
            report["input"] = work.data["input"]
        if work.data.get("read_weights"):
            report.update(weight_words=sum(r["weight_words"] for r in runs),
                          weight_mismatches=sum(r["weight_mismatches"] for r in runs))
        return report

    def rows_common(self, r) -> list[tuple[str, str]]:
        """The verify rows both MAML engines print first."""
        item = self.item
        return [
            ("design", r["design"]),
            ("weights", r["weights"]),
            ("simulator", r["simulator"]),
            (f"{item}s", str(r["tasks"]) + (f" from {r['input']}" if r.get("input") else "")),
            ("output words", str(r["output_words"]) + (
                f" (with {r['weight_words']} adapted-weight words read back)" if "weight_words" in r else "")),
            ("mismatches", f"{r['mismatches']}" + ("" if not r["mismatches"] else f"  first: {r['first_mismatch']}")),
            (f"cycles per {item}", f"{', '.join(map(str, r['cycles_measured']))} measured, {r['cycles_model']} "
                                   f"modelled"),
            ("lane utilisation", f"{100 * r['lane_utilisation']:.1f} % of {r['lanes']} lanes"),
        ]

    def verify_report(self, cfg, work, runs):
        from metafab.reference import maml as fmaml

        report = self.report_common(cfg, work, runs)
        batch, tasks = work.data["floats"], len(work.items)
        if batch is not None:
            outputs = [o for r in runs for o in r["outputs"]]
            y_rtl = np.array([_act_float(o, cfg) for o in outputs]).reshape(tasks, cfg.n_query, cfg.n_out)
            mse_fixed = ((y_rtl - batch.y_query) ** 2).mean(axis=(1, 2))
            mse_float = np.empty(tasks)
            params = work.data["params"]
            for i in range(tasks):
                adapted = fmaml.adapt(params, batch.x_support[i], batch.y_support[i], cfg.steps, cfg.lr)
                mse_float[i] = ((fmaml.forward(adapted, batch.x_query[i]) - batch.y_query[i]) ** 2).mean()
            report.update(mse_float64=float(mse_float.mean()), mse_fixed=float(mse_fixed.mean()),
                          mse_ratio=float(mse_fixed.mean() / mse_float.mean()))
        return report

    def verify_rows(self, r):
        rows = self.rows_common(r)
        if "mse_ratio" in r:
            rows.append(("query MSE", f"fixed {r['mse_fixed']:.5f}, float64 {r['mse_float64']:.5f}, "
                                      f"ratio {r['mse_ratio']:.4f}"))
        return rows

    # --- board ------------------------------------------------------------
    def preload(self, cfg, args):
        weights = getattr(args, "weights", "auto") if args else "auto"
        if weights == "none":
            return None, "none (no preload ROM: the host sends LOAD)"
        params, source = self.initial(cfg, weights, 0)
        return maml_load_words(mf.quantize_params(params, cfg)), source

    def item_cycles(self, cfg):
        return self.cycles(cfg).task_cycles

    def build_figures(self, cfg, r, preload_source):
        from metafab.gen.anchors import maml_anchor

        model = self.cycles(cfg)
        clock, fmax = r.get("clock_mhz"), r.get("fmax_mhz")
        return {
            "preloaded_weights": preload_source,
            "task_cycles": model.task_cycles,
            "lane_utilisation": model.lane_utilisation,
            "latency_us": model.latency_us(clock) if clock else None,
            "latency_us_at_fmax": model.latency_us(fmax) if fmax else None,
            "anchor": maml_anchor(cfg.layers, cfg.k_support, cfg.steps),
        }

    def build_rows(self, r):
        rows = [("cycles per task", str(r["task_cycles"]))]
        if r.get("latency_us") is not None:
            rows.append(("latency", f"{r['latency_us']:.2f} us per task at the {r['clock_mhz']:.4g} MHz clock "
                                    f"(timing {r['timing']})"))
        if r.get("latency_us_at_fmax") is not None:
            rows.append(("at Fmax", f"{r['latency_us_at_fmax']:.2f} us per task if clocked at "
                                    f"{r['fmax_mhz']:.2f} MHz (not the bitstream's clock)"))
        return rows

    def run_on_board(self, cfg, args, host, say, progress):
        from metafab.reference import fixed as fx

        if args.input:
            tasks = _file_tasks(args.input, cfg)
        else:
            if args.tasks < 1:
                raise UserError(f"--tasks must be at least 1, got {args.tasks}")
            b, _ = sinusoid_tasks(cfg, args.tasks, args.seed)
            tasks = [(b.x_support[i], b.y_support[i], b.x_query[i]) for i in range(args.tasks)]
        weights = "auto" if args.weights == "preloaded" else args.weights
        params, source = initial_params(cfg, weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        if args.weights != "preloaded":
            progress(f"loading {cfg.n_params} weights ({source})")
            host.load(maml_load_words(wq))
        results, mismatches = [], 0
        for n, (xs, ys, xq) in enumerate(tasks):
            codes = [mf.quantize_inputs(a, cfg) for a in (xs, ys, xq)]
            got = host.run(maml_run_words(*codes))
            ref = mf.run_task(wq, *codes, cfg)
            want = ref.y_query.reshape(-1)
            bad = int((got != want).sum())
            st = host.status()
            results.append({"task": n, "outputs": fx.to_float(got, cfg.act_fmt).tolist(),
                            "mismatches": bad, "cycles": st["last_cycles"]})
            bad += read_back_check(host, ref.weights, results[-1], args)
            mismatches += bad
            vals = ", ".join(f"{v:+.4f}" for v in results[-1]["outputs"])
            say(f"task {n}: {st['last_cycles']} cycles on chip, {bad} mismatches; outputs {vals}")
        return {"design": cfg.name, "results": results, "mismatches": mismatches}

    def demo_rows(self, v):
        rows = [
            ("design", v["design"]),
            ("initial weights", v["weights"]),
            ("tasks verified (Verilator)", f"{v['tasks']} ({v['output_words']} output words)"),
            ("mismatching output words", str(v["mismatches"])),
            ("cycles per task", f"{v['cycles_model']} modelled, {', '.join(map(str, v['cycles_measured']))} measured"),
            ("MAC-lane utilisation", f"{100 * v['lane_utilisation']:.1f} % of {v['lanes']} lanes"),
        ]
        if "mse_ratio" in v:
            rows.append(("query MSE fixed / float64", f"{v['mse_fixed']:.4f} / {v['mse_float64']:.4f} "
                                                       f"= {v['mse_ratio']:.4f}"))
        return rows

    def demo_build_rows(self, b):
        return [(f"batch-1 latency at {b['clock_mhz']:.4g} MHz", f"{b['latency_us']:.2f} us per task")]

    def demo_anchor_rows(self):
        from metafab.gen.anchors import MAML_SINUSOID_US

        anchor = MAML_SINUSOID_US[1]
        return [("H100, PyTorch CUDA graph", f"{anchor['h100_cuda_graph']} us"),
                ("numpy float64 on a host CPU", f"{anchor['numpy_f64_host_cpu']} us")]

    # --- report page ------------------------------------------------------
    def report_sections(self, cfg, reports):
        return [*super().report_sections(cfg, reports), self._schedule_section(cfg),
                self._numerics_section(cfg, reports.studies)]

    def _schedule_section(self, cfg):
        """The Gantt chart of one task from the cycle model: each job over the task's cycles, lanes busy."""
        from metafab.gen.report_figures import gantt
        from metafab.gen.report_page import Figure, Section, Table

        model = self.cycles(cfg)
        s = Section("schedule", "Schedule: the jobs of one task (cycle model)")
        kinds = {"forward": "forward", "error": "output error", "backward": "backward", "update": "SGD update"}
        rows, notes, at = [], {}, 0
        for j in model.jobs:
            kind = next(k for k in kinds if j.name.startswith(k))
            layer, part = j.name[len(kind):-1], {"s": "support", "q": "query"}[j.name[-1]]
            label = f"{kinds[kind]} L{layer} ({part}), {j.M}x{j.N}x{j.R}"
            segs = []
            if j.gap:
                segs.append((at, j.gap, "wait (dependency)"))
            segs.append((at + j.gap, j.issue, kinds[kind]))
            rows.append((label, segs))
            busy = j.lane_util * cfg.lanes
            notes[label] = ([""] if j.gap else []) + [f"{busy:.3g}/{cfg.lanes} lanes, {j.issue} cyc"]
            at += j.gap + j.issue
        rows.append(("write-back and done", [(at, model.tail_cycles, "tail")]))
        phases = ["forward", "output error", "backward", "SGD update", "wait (dependency)", "tail"]
        s.figures.append(Figure("gantt", gantt(rows, title=f"{cfg.name}: {model.task_cycles} cycles per task",
                                               xlabel="cycle of the task", phases=phases, notes=notes,
                                               name="maml-gantt"),
                                "each job's issue cycles (tile shape pm x pn x pr over the M x N x R product); "
                                "text: mean MAC lanes busy per cycle of the job"))
        s.rows = [("cycles per task", f"{model.task_cycles} = {model.issue_cycles} issue + {model.gap_cycles} "
                                      f"wait + {model.tail_cycles} tail"),
                  ("MAC-lane utilisation", f"{100 * model.lane_utilisation:.1f} % of {cfg.lanes} lanes "
                                           f"({model.useful_macs} useful MACs)")]
        s.tables.append(Table(
            "jobs", ["job", "M x N x R", "tile", "passes", "wait", "issue", "lanes busy"],
            [[j.name, f"{j.M}x{j.N}x{j.R}", "x".join(map(str, j.shape)), str(j.passes), str(j.gap), str(j.issue),
              f"{100 * j.lane_util:.1f} %"] for j in model.jobs]))
        return s

    def _numerics_section(self, cfg, studies):
        """The precision study (fixed / float64 MSE ratio vs width, per rounding mode and steps) and the
        query MSE after 0, 1, 10 inner steps (the sinusoid study), with 95 % intervals."""
        from metafab.gen.report_figures import curves
        from metafab.gen.report_page import STUDY_COMMANDS, Figure, Missing, Section, Table

        s = Section("numerics", "Numerics: fixed point against float64")
        prec = studies.get("maml-precision")
        if prec:
            series = []
            for rounding, steps in sorted({(r["rounding"], r["steps"]) for r in prec["rows"]}):
                rs = sorted((r for r in prec["rows"] if r["rounding"] == rounding and r["steps"] == steps),
                            key=lambda r: r["width"])
                series.append((f"{rounding}, {steps} step{'s' if steps != 1 else ''}", [r["width"] for r in rs],
                               [r["ratio"] for r in rs], [r["ratio_ci95"] for r in rs]))
            s.figures.append(Figure("precision", curves(
                series, title="query MSE, fixed point / float64", xlabel="operand width (bits)",
                ylabel="MSE ratio (1 = float64)", hline=(1.0, "float64"), name="maml-precision"),
                f"{prec['metric']}; {prec['settings']['tasks']} tasks, seed {prec['settings']['seed']}; "
                f"this design: act {cfg.act_fmt}, weights {cfg.weight_fmt}, forward rounding "
                f"{cfg.to_dict()['forward_rounding']}"))
        else:
            s.missing.append(Missing("precision study", STUDY_COMMANDS["maml-precision"]))
        sin = studies.get("sinusoid")
        if sin:
            series = []
            for init, k in sorted({(r["init"], r["k"]) for r in sin["rows"]}):
                rs = sorted((r for r in sin["rows"] if r["init"] == init and r["k"] == k), key=lambda r: r["steps"])
                series.append((f"{init}, K={k}", [r["steps"] for r in rs], [r["mse"] for r in rs],
                               [r["ci95"] for r in rs]))
            s.figures.append(Figure("steps", curves(
                series, title="query MSE vs inner SGD steps (float64)", xlabel="inner steps", ylabel="query MSE",
                logy=True, name="maml-steps"),
                f"{sin['metric']}; {sin['settings']['tasks']} tasks per K, lr {sin['settings']['lr']}"))
            s.tables.append(Table("query MSE after adaptation (mean +- 95 % half-width)",
                                  ["init", "K", "steps", "MSE", "median"],
                                  [[r["init"], str(r["k"]), str(r["steps"]), f"{r['mse']:.4f} +- {r['ci95']:.4f}",
                                    f"{r['median']:.4f}"] for r in sin["rows"]]))
        else:
            s.missing.append(Missing("query MSE vs inner steps (sinusoid study)", STUDY_COMMANDS["sinusoid"]))
        return s


ENGINE = MamlEngineSpec()
