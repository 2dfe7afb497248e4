"""The ``maml-cls`` engine: MAML (or ANIL) adaptation of an N-way classifier on chip, softmax cross-entropy.

The hardware is the MAML engine (:class:`metafab.hw.maml_engine.MamlEngine`)
built for a :class:`~metafab.reference.config.MamlClsConfig`: the same jobs and
lanes, plus the softmax unit that turns the logits into the error
``lr_eff (p - onehot(y))`` and answers each query with its class
probabilities and its class. Bit-exact reference
:mod:`metafab.reference.maml_cls_fixed`; bench
:mod:`metafab.sim.benches.maml_cls`. Workload: glyph meta-test episodes
(:mod:`metafab.reference.glyphs`), adapted from the shipped meta-trained
classifier when the net is the shipped one (5-way, 1 or 5 shots).
"""

from __future__ import annotations

import numpy as np

from metafab.gen.engines.base import DesignFlag, Exchange, status_exchange, unknown_opcode_exchange
from metafab.gen.engines.maml import MamlEngineSpec, random_params, read_back_check
from metafab.gen.engines.weight_source import (
    WEIGHTS,
    add_weights_argument,
    imported_params,
    is_model_file,
    model_layers,
)
from metafab.reference import maml_cls_fixed as mc
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlClsConfig
from metafab.reference.errors import UserError
from metafab.reference.payloads import maml_cls_run_words, maml_load_words
from metafab.reference.protocol import Opcode, Packet, Status, to_words

__all__ = ["ENGINE", "MamlClsEngineSpec", "initial_params", "glyph_episodes", "random_episodes"]



def _shots(cfg: MamlClsConfig) -> int | None:
    """Support samples per class (``k_support / N``), or None when they are not a whole number."""
    return cfg.k_support // cfg.n_way if cfg.k_support % cfg.n_way == 0 else None


def _queries_per_class(cfg: MamlClsConfig) -> int | None:
    return cfg.n_query // cfg.n_way if cfg.n_query % cfg.n_way == 0 else None


def _shipped_fits(cfg: MamlClsConfig) -> bool:
    from metafab.reference.weights import GLYPH_LAYERS

    return "-".join(map(str, cfg.layers)) == GLYPH_LAYERS and _shots(cfg) in (1, 5)


def initial_params(cfg: MamlClsConfig, weights: str = "auto", seed: int = 0):
    """Float initial parameters for ``cfg`` and where they come from.

    ``"shipped"``: the glyph classifier meta-trained for this shot count, by MAML
    (``adapt_layers="all"``) or ANIL (``"head"``); ``"random"``: He-initialised with
    ``seed``; ``"auto"``: shipped when the net is the shipped one, random otherwise; a
    model file: its weights (:mod:`metafab.gen.engines.weight_source`).
    """
    if is_model_file(weights):
        return imported_params(cfg, weights, classifier=True)
    if weights not in WEIGHTS:
        raise UserError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    from metafab.reference.weights import GLYPH_LAYERS, load_glyph_classifier

    if weights == "shipped" or (weights == "auto" and _shipped_fits(cfg)):
        if not _shipped_fits(cfg):
            raise UserError(f"the shipped glyph classifiers are {GLYPH_LAYERS} nets for 5-way 1- or 5-shot "
                            f"episodes, not layers {'-'.join(map(str, cfg.layers))} with {cfg.k_support} support "
                            f"samples; use --weights random")
        method = "maml" if cfg.adapt_layers == "all" else "anil"
        w = load_glyph_classifier(method, _shots(cfg))
        return w.params, f"shipped {method.upper()} glyph classifier (5-way {_shots(cfg)}-shot)"
    return random_params(cfg, seed), f"random (He, seed {seed})"


def glyph_episodes(cfg: MamlClsConfig, n: int, seed: int):
    """``n`` glyph meta-test episodes of ``cfg``'s shape (``default_rng([seed, i])`` each): the float
    episodes and the bench's code lists ``[xs, labels, xq]``. Needs a 256-input net (16x16 glyphs) and
    whole numbers of support and query samples per class."""
    from metafab.reference import glyphs

    k, q = _shots(cfg), _queries_per_class(cfg)
    if cfg.n_in != 256 or k is None or q is None:
        raise UserError(f"glyph episodes need 256 inputs and whole samples per class; {cfg.name} has {cfg.n_in} "
                        f"inputs, {cfg.k_support} support and {cfg.n_query} query samples for {cfg.n_way} classes")
    sampler = glyphs.EpisodeSampler(split="test", n_way=cfg.n_way, k_shot=k, n_query=q)
    eps = list(glyphs.episodes(sampler, n, seed))
    codes = [[mf.quantize_inputs(e.support, cfg).tolist(), e.support_labels.tolist(),
              mf.quantize_inputs(e.query, cfg).tolist()] for e in eps]
    return eps, codes


def random_episodes(cfg: MamlClsConfig, n: int, seed: int, *, extreme: bool = False):
    """``n`` random episodes for any net: inputs uniform in ``[0, 1]`` (``extreme``: at the input format's
    limits and 0, to drive the activations into saturation), labels uniform over the classes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if extreme:
            lo, hi = cfg.act_fmt.min_value, cfg.act_fmt.max_value
            xs = rng.choice([lo, hi, 0.0], size=(cfg.k_support, cfg.n_in))
            xq = rng.choice([lo, hi], size=(cfg.n_query, cfg.n_in))
        else:
            xs = rng.uniform(0, 1, (cfg.k_support, cfg.n_in))
            xq = rng.uniform(0, 1, (cfg.n_query, cfg.n_in))
        labels = rng.integers(0, cfg.n_way, cfg.k_support)
        out.append([mf.quantize_inputs(xs, cfg).tolist(), labels.tolist(), mf.quantize_inputs(xq, cfg).tolist()])
    return out


def file_episodes(path: str, cfg: MamlClsConfig):
    """A user's episodes (``--input``, JSON or npz): ``(float episodes or None, code lists)``; the float
    episodes (for the accuracies) when every one has its ``query_labels``."""
    from types import SimpleNamespace

    from metafab.gen.engines.user_input import read_items

    K, Q, N = cfg.k_support, cfg.n_query, cfg.n_way
    items = read_items(path, "episode", {"xs": ((K, cfg.n_in), "real", True), "labels": ((K,), ("label", N), True),
                                         "xq": ((Q, cfg.n_in), "real", True),
                                         "query_labels": ((Q,), ("label", N), False)})
    codes = [[mf.quantize_inputs(e["xs"], cfg).tolist(), e["labels"].tolist(),
              mf.quantize_inputs(e["xq"], cfg).tolist()] for e in items]
    if not all("query_labels" in e for e in items):
        return None, codes
    return [SimpleNamespace(support=e["xs"], support_labels=e["labels"], query=e["xq"],
                            query_labels=e["query_labels"]) for e in items], codes


def _float_accuracy(params, ep, cfg: MamlClsConfig) -> float:
    from metafab.reference import classify

    layers = None if cfg.adapt_layers == "all" else classify.anil_layers(cfg.n_layers)
    adapted = classify.adapt(params, ep.support, ep.support_labels, cfg.steps, cfg.lr, layers=layers)
    return float(classify.accuracy(adapted, ep.query, ep.query_labels))


class MamlClsEngineSpec(MamlEngineSpec):
    name = "maml-cls"
    summary = ("MAML / ANIL adaptation of an N-way classifier on chip (softmax cross-entropy); glyph "
               "5-way 1-shot by default")
    title = "MAML classification engine"
    toplevel = "maml_cls_engine"  # its own module name: a design may hold both MAML engines
    bench = "metafab.sim.benches.maml_cls"
    config_class = MamlClsConfig
    weights_flag = "--weights"
    design_flags = (
        DesignFlag("--layers", "layers", metavar="A-B-...", help="layer widths, the last one the class count "
                   "(default 256-128-64-64-5)"),
        DesignFlag("--ways", "ways", int, "N", "classes per episode (sets the last layer's width)"),
        DesignFlag("--shots", "shots", int, "K", "support samples per class (default 1)"),
        DesignFlag("--queries", "queries", int, "Q", "query samples per class (default 5)"),
        DesignFlag("--steps", "steps", int, "S", "inner SGD steps (default 5, as the shipped nets were trained)"),
        DesignFlag("--lanes", "lanes", int, "P", "parallel MAC lanes (a power of two)"),
        DesignFlag("--lr", "lr", float, help="inner learning rate (default 0.4, as the shipped nets were trained)"),
    )
    item = "episode"
    count_flag = "--episodes"
    count_default = 100
    demo_count = 10
    chunk = 100
    in_demo = True
    build_order = 0
    demo_builds = False  # the default's place and route does not converge on the 85F (docs/maml_engine.md)
    default_clock = {"ecp5": 75.0, "ice40": 24.0}

    def add_arguments(self, parser, command):
        super().add_arguments(parser, command)
        g = next(g for g in parser._action_groups if g.title == f"{self.name} design")
        g.add_argument("--anil", action="store_true", default=None,
                       help="ANIL: only the last layer adapts (the shipped ANIL classifier)")

    def config(self, args):
        """The built-in default (5-way 1-shot, 5 queries per class), then ``--config``, the flags, ``--set``."""
        from metafab.gen.designs import parse_sets, read_toml

        fields: dict = {"k_support": 5, "n_query": 25}
        if getattr(args, "config", None):
            fields.update(read_toml(args.config, self.name))
        get = lambda name: getattr(args, "design_" + name, None)  # noqa: E731
        model = model_layers(args)  # --weights FILE: the model's layers unless the layers are given
        if model is not None and "layers" not in fields and get("layers") is None and \
                "layers" not in parse_sets(getattr(args, "set", None)):
            fields.update(layers=model, k_support=model[-1], n_query=5 * model[-1])
        for name in ("layers", "steps", "lanes", "lr"):
            if get(name) is not None:
                fields[name] = get(name)
        layers = MamlClsConfig(**{k: v for k, v in fields.items() if k == "layers"}).layers
        ways = get("ways")
        for flag, value in (("--ways", ways), ("--shots", get("shots")), ("--queries", get("queries"))):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        if ways is not None:
            if ways < 2:
                raise UserError(f"--ways must be at least 2 (a classifier), got {ways}")
            layers = (*layers[:-1], ways)
            fields["layers"] = layers
        n = layers[-1]
        if get("shots") is not None or ways is not None:
            fields["k_support"] = n * (get("shots") or 1)
        if get("queries") is not None or ways is not None:
            fields["n_query"] = n * (get("queries") or 5)
        if getattr(args, "anil", None):
            fields["adapt_layers"] = "head"
        fields.update(parse_sets(getattr(args, "set", None)))
        return self.config_from_dict(fields)

    def add_command_arguments(self, p, command):
        if command == "build":
            add_weights_argument(p, extra=("none",),
                                 help="initial weights preloaded into the board top (default: the shipped glyph "
                                 "classifier when the net is the shipped one, else random); 'none': no preload "
                                 "ROM (its block RAMs stay free; metafab run sends LOAD first)")
        if command in ("generate", "sim", "verify"):
            what = {"generate": "written to weights.txt"}.get(command, "of the engine")
            add_weights_argument(p, help=f"initial weights {what} (default: the shipped glyph classifier when "
                                         f"the net is the shipped one, else random)")
        if command == "run":
            add_weights_argument(p, extra=("preloaded",),
                                 help="weights to LOAD first; 'preloaded' sends none (the board top has them)")
            p.add_argument("--read-weights", action="store_true",
                           help="after every episode, read the adapted weights back and check them too")
            p.add_argument("--episodes", type=int, default=3, help="glyph meta-test episodes to run (default 3)")
        if command == "sim":
            p.add_argument("--episodes", type=int, default=3, help="episodes to run (default 3)")
        if command == "verify":
            p.add_argument("--episodes", type=int, default=self.count_default,
                           help=f"glyph meta-test episodes (random ones for other nets) to run "
                                f"(default {self.count_default})")
        self.add_user_data_arguments(p, command)

    # --- hardware: the MAML engine's component and cycle model (both read the classifier config) ------
    def manifest_fields(self, cfg):
        out = super().manifest_fields(cfg)
        out["formats"].update(exp=str(cfg.exp_fmt), prob=str(cfg.prob_fmt))
        out.update(classes=cfg.n_way, adapt_layers=cfg.adapt_layers,
                   softmax={"exp_table_bits": cfg.exp_table_bits, "exp_range": cfg.exp_range,
                            "recip": cfg.recip_method, "mant_bits": cfg.mant_bits})
        return out

    def initial(self, cfg, weights, seed: int):
        return initial_params(cfg, weights, seed)

    def workload(self, cfg, count: int, seed: int, input=None):
        return file_episodes(input, cfg) if input else self.episodes(cfg, count, seed)

    def episodes(self, cfg, n: int, seed: int):
        """``n`` episodes of ``seed``: ``(float glyph episodes or None, code lists)``."""
        try:
            return glyph_episodes(cfg, n, seed)
        except UserError:
            return None, random_episodes(cfg, n, seed)

    def example_session(self, cfg, args, count):
        """LOAD of the example weights, ``count`` episodes answered by
        :func:`metafab.reference.maml_cls_fixed.run_task`, an unknown opcode, STATUS."""
        params, source = initial_params(cfg, args.weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        eps, codes = self.episodes(cfg, count, args.seed)
        session = [Exchange("LOAD", Opcode.LOAD, tuple(maml_load_words(wq)), Packet(Status.OK, ()))]
        for n, (xs, labels, xq) in enumerate(codes):
            res = mc.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in (xs, labels, xq)), cfg)
            session.append(Exchange(f"RUN episode {n}", Opcode.RUN, tuple(maml_cls_run_words(xs, labels, xq)),
                                    Packet(Status.OK, tuple(to_words(mc.result_words(res))))))
        session.append(unknown_opcode_exchange())
        session.append(status_exchange(last_cycles=self.cycles(cfg).task_cycles, runs=count, errors=1,
                                       last_error=Status.UNKNOWN_OPCODE, loaded=True))
        what = "glyph meta-test" if eps is not None else "random"
        return session, f"weights: {source}; {count} {what} episode(s), seed {args.seed}"

    def bench_model(self):
        rows = []
        for adapt in ("all", "head"):
            for lanes in (16, 64, 128):
                m = self.cycles(MamlClsConfig(lanes=lanes, adapt_layers=adapt))
                rows.append({"adapt": adapt, "lanes": lanes, "cycles": m.task_cycles,
                             "utilisation %": round(100 * m.lane_utilisation, 1),
                             "latency us @75MHz": round(m.latency_us(75.0), 1)})
        return "MAML classification engine cycle model, 256-128-64-64-5, 5-way 1-shot, 25 queries, 5 steps", rows

    def cpu_kernel(self, cfg):
        """One episode of ``cfg`` in float32 C: the inner loop (softmax cross-entropy, the adapted layers
        only) from the initial weights, then the queries' class probabilities; checked against
        :mod:`metafab.reference.classify` on a glyph episode (random inputs for other nets)."""
        from metafab.gen.cpu_baseline import CpuKernel, render
        from metafab.reference import classify

        params, source = initial_params(cfg, "auto", 0)
        eps, _ = self.episodes(cfg, 1, 0)
        if eps is not None:
            xs, ls, xq = eps[0].support, eps[0].support_labels, eps[0].query
        else:
            rng = np.random.default_rng(0)
            xs, xq = rng.uniform(0, 1, (cfg.k_support, cfg.n_in)), rng.uniform(0, 1, (cfg.n_query, cfg.n_in))
            ls = rng.integers(0, cfg.n_way, cfg.k_support)
        flat = np.concatenate([np.concatenate([np.asarray(w).reshape(-1), np.asarray(b)]) for w, b in params])
        layers, at = [], 0
        for n, (i, o) in enumerate(zip(cfg.layers[:-1], cfg.layers[1:], strict=True)):
            layers.append({"n": n, "i": i, "o": o, "off": at, "last": n == cfg.n_layers - 1})
            at += o * i + o
        low = min(cfg.adapted)
        text = render("maml_cpu.c.j2", design=cfg.name, layers=layers, k=cfg.k_support, q=cfg.n_query,
                      steps=cfg.steps, nparam=at, lr=repr(float(cfg.lr)), ce=True, low=low)
        adapted = classify.adapt(params, xs, ls, cfg.steps, cfg.lr,
                                 layers=None if cfg.adapt_layers == "all" else classify.anil_layers(cfg.n_layers))
        probs, classes = classify.predict(adapted, xq)
        inputs = np.concatenate([flat, xs.reshape(-1), np.asarray(ls, dtype=np.float64), xq.reshape(-1)])
        return CpuKernel(source=text, inputs=inputs,
                         n_out=cfg.n_query * cfg.n_way, want=np.asarray(probs).reshape(-1), per="episode",
                         atol=1e-3, rtol=1e-2,
                         check=lambda out: bool((out.reshape(cfg.n_query, cfg.n_way).argmax(1) == classes).all()),
                         notes={"weights": source})

    # --- simulation -------------------------------------------------------
    def simulate(self, cfg, args, progress):
        if getattr(args, "input", None):
            _, codes = file_episodes(args.input, cfg)
        elif args.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {args.episodes}")
        params, source = initial_params(cfg, args.weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        if not getattr(args, "input", None):
            _, codes = self.episodes(cfg, args.episodes, args.seed)
        r = self._run(cfg, wq, codes, sim=args.sim, waves=args.waves, return_outputs=True,
                      run_name=f"sim-{args.sim}", progress=progress)
        N = cfg.n_way
        classes = [[int(o[q * (N + 1) + N]) for q in range(cfg.n_query)] for o in r["outputs"]]
        return {
            "engine": self.name, "design": cfg.name, "weights": source, "simulator": args.sim,
            "episodes": r["tasks"], "cycles_per_episode": r["cycles"], "model_cycles": r["model_cycles"],
            "mismatches": r["mismatches"], "classes": classes,
            "labels": [list(map(int, c[1])) for c in codes], "run_folder": r["test_dir"],
        }

    def format_sim(self, doc):
        lines = [f"{doc['design']}: {doc['episodes']} episode(s) on {doc['simulator']}, weights: {doc['weights']}"]
        for n, (c, cl) in enumerate(zip(doc["cycles_per_episode"], doc["classes"], strict=True)):
            lines.append(f"episode {n}: {c} cycles; query classes: {' '.join(map(str, cl))}")
        lines.append(f"cycle model: {doc['model_cycles']} cycles per episode; mismatches against the reference: "
                     f"{doc['mismatches']}")
        return "\n".join(lines)

    def verify_report(self, cfg, work, runs):
        wq, eps, n = work.data["wq"], work.data["floats"], len(work.items)
        outputs = [o for r in runs for o in r["outputs"]]
        N, Q = cfg.n_way, cfg.n_query
        rtl_pred = np.array([[o[q * (N + 1) + N] for q in range(Q)] for o in outputs], dtype=np.int64)
        fixed_pred = np.array([mc.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in item), cfg).pred
                               for item in work.items])
        report = self.report_common(cfg, work, runs)
        report.update(episodes=n, rtl_equals_fixed_predictions=bool((rtl_pred == fixed_pred).all()))
        if eps is not None:
            labels = np.stack([e.query_labels for e in eps])
            acc_rtl = 100 * (rtl_pred == labels).mean(axis=1)
            acc_fixed = 100 * (fixed_pred == labels).mean(axis=1)
            acc_float = np.array([100 * _float_accuracy(work.data["params"], e, cfg) for e in eps])

            def ci(a):
                return float(1.96 * np.std(a, ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None

            report.update(accuracy_rtl=float(acc_rtl.mean()), accuracy_fixed=float(acc_fixed.mean()),
                          accuracy_float64=float(acc_float.mean()), accuracy_ci95=ci(acc_rtl),
                          accuracy_float64_ci95=ci(acc_float))
        return report

    def passed(self, report):
        return super().passed(report) and report["rtl_equals_fixed_predictions"]

    def verify_rows(self, r):
        rows = self.rows_common(r)
        if "accuracy_rtl" in r:
            ci = f" +- {r['accuracy_ci95']:.2f}" if r.get("accuracy_ci95") is not None else ""
            rows.append(("query accuracy", f"RTL {r['accuracy_rtl']:.2f}{ci} %, fixed point {r['accuracy_fixed']:.2f} "
                                           f"%, float64 {r['accuracy_float64']:.2f} %"))
        return rows

    # --- board ------------------------------------------------------------
    def build_figures(self, cfg, r, preload_source):
        model = self.cycles(cfg)
        clock, fmax = r.get("clock_mhz"), r.get("fmax_mhz")
        return {
            "preloaded_weights": preload_source,
            "task_cycles": model.task_cycles,
            "lane_utilisation": model.lane_utilisation,
            "latency_us": model.latency_us(clock) if clock else None,
            "latency_us_at_fmax": model.latency_us(fmax) if fmax else None,
        }

    def build_rows(self, r):
        rows = [("cycles per episode", str(r["task_cycles"]))]
        if r.get("latency_us") is not None:
            rows.append(("latency", f"{r['latency_us']:.2f} us per episode at the {r['clock_mhz']:.4g} MHz clock "
                                    f"(timing {r['timing']})"))
        if r.get("latency_us_at_fmax") is not None:
            rows.append(("at Fmax", f"{r['latency_us_at_fmax']:.2f} us per episode if clocked at "
                                    f"{r['fmax_mhz']:.2f} MHz (not the bitstream's clock)"))
        return rows

    def run_on_board(self, cfg, args, host, say, progress):
        if args.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {args.episodes}")
        weights = "auto" if args.weights == "preloaded" else args.weights
        params, source = initial_params(cfg, weights, args.seed)
        wq = mf.quantize_params(params, cfg)
        if args.weights != "preloaded":
            progress(f"loading {cfg.n_params} weights ({source})")
            host.load(maml_load_words(wq))
        eps, codes = self.episodes(cfg, args.episodes, args.seed)
        results, mismatches = [], 0
        for n, item in enumerate(codes):
            got = host.run(maml_cls_run_words(*item))
            ref = mc.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in item), cfg)
            want = np.asarray(mc.result_words(ref))
            bad = int((np.asarray(got) != want).sum())
            st = host.status()
            N = cfg.n_way
            classes = [int(got[q * (N + 1) + N]) for q in range(cfg.n_query)]
            results.append({"episode": n, "classes": classes, "mismatches": bad, "cycles": st["last_cycles"]})
            bad += read_back_check(host, ref.weights, results[-1], args)
            mismatches += bad
            say(f"episode {n}: {st['last_cycles']} cycles on chip, {bad} mismatches; "
                f"classes {' '.join(map(str, classes))}")
        return {"design": cfg.name, "results": results, "mismatches": mismatches}

    def demo_rows(self, v):
        rows = [
            ("design", v["design"]),
            ("initial weights", v["weights"]),
            ("episodes verified (Verilator)", f"{v['episodes']} ({v['output_words']} output words)"),
            ("mismatching output words", str(v["mismatches"])),
            ("cycles per episode", f"{v['cycles_model']} modelled, {', '.join(map(str, v['cycles_measured']))} "
                                   f"measured"),
            ("MAC-lane utilisation", f"{100 * v['lane_utilisation']:.1f} % of {v['lanes']} lanes"),
        ]
        if "accuracy_rtl" in v:
            rows.append(("query accuracy RTL / fixed / float64", f"{v['accuracy_rtl']:.2f} / {v['accuracy_fixed']:.2f}"
                                                                 f" / {v['accuracy_float64']:.2f} %"))
        return rows

    def demo_build_note(self, cfg):
        """The latest board build of this design under the build folder, if any (the demo does not build it)."""
        rows = [("board build", "not run by the demo: the 16-lane default does not route on the 85F; "
                                f"metafab build {self.name} --lanes 8 --board ulx3s-85f --weights none --clock-mhz 60 "
                                "does (docs/maml_engine.md)")]
        b = _latest_build(self, cfg)
        if b:
            rows.append((f"last build, {b['board']}", f"clock {b['clock_mhz']:.4g} MHz (PLL), Fmax "
                                                      f"{b['fmax_mhz']:.1f} MHz: timing {b['timing']}; "
                                                      f"{b['latency_us']:.1f} us per episode at the clock"))
        return rows

    def demo_build_rows(self, b):
        return [(f"batch-1 latency at {b['clock_mhz']:.4g} MHz", f"{b['latency_us']:.2f} us per episode")]

    def demo_anchor_rows(self):
        return []

    def report_sections(self, cfg, reports):
        from metafab.gen.engines.base import Engine

        return [*Engine.report_sections(self, cfg, reports), self._schedule_section(cfg)]


def _latest_build(engine, cfg) -> dict | None:
    """The newest board-build report of ``cfg``'s design under the build folder (``metafab build`` writes
    one per build), or None."""
    import json

    from metafab.reference.config import config_digest
    from metafab.sim.runner import build_root

    digest = config_digest(cfg)[:8]
    found = sorted((build_root() / "synth").glob(f"*{digest}*/report.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("latency_us") is not None and doc.get("fmax_mhz") is not None:
            return doc
    return None


ENGINE = MamlClsEngineSpec()
