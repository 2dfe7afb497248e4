"""metafab's Python API: designs, the CLI's flows as functions, and learners that adapt on a backend.

``docs/python_api.md`` has the walk-through; every example there runs in the test suite.

- :class:`Design`: an engine and its config (from keyword fields, a TOML file or an imported model) and
  its initial weights (``"auto"``, ``"shipped"``, ``"random"`` or a model file).
- :func:`import_model`, :func:`generate`, :func:`verify`, :func:`build`: what ``metafab import``,
  ``generate``, ``verify --json`` and ``build --json`` do, returning the same dicts.
- :class:`MAML` (the ``maml`` and ``maml-cls`` engines): ``learner.clone()`` gives a task learner;
  ``task.adapt(x, y)``, ``task(x_query)``, ``task.parameters()`` (the adapted weights, read back from the
  engine). :class:`Match` (the similarity engine): ``support(embeddings, labels)``, ``classify(queries)``.
- Backends (the same calls and, for the same inputs, the same answers on each): ``"reference"`` (the
  bit-exact fixed-point model), ``"verilator"`` / ``"icarus"`` (a cycle-level simulation of the RTL; each
  call is one simulator run of the cached build) and :class:`Board` (an engine on a board's serial port).

Numbers go in and come out as floats (numpy arrays); they are quantised to the design's formats on the way
in (half to even, saturating) exactly as the CLI does, and every answer is a decoded fixed-point code.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from metafab.reference.errors import UserError

__all__ = ["Design", "Board", "MAML", "TaskLearner", "Match", "FewShot", "import_model", "generate", "verify", "build",
           "BACKENDS"]

#: The backends named by a string (a :class:`Board` is the third kind).
BACKENDS = ("reference", "verilator", "icarus")


def _engine(name: str):
    from metafab.gen.engines import get_engine

    return get_engine(name)


def _namespace(engine, weights, config_file, sets=()) -> argparse.Namespace:
    ns = argparse.Namespace(engine=engine.name, config=config_file, set=list(sets), weights=weights, seed=0)
    for f in engine.design_flags:
        setattr(ns, f.dest, None)
    return ns


class Design:
    """One engine's design: its config and initial weights (or support set source).

    Parameters
    ----------
    engine : str
        A registered engine: ``"maml"``, ``"maml-cls"``, ``"match"``.
    weights : str
        The MAML engines' initial weights: ``"auto"`` (shipped when the layers allow, else random),
        ``"shipped"``, ``"random"``, or a model file (``.onnx``, ``.safetensors``, ``.npz``) whose layers
        become the design's unless ``layers`` is given.
    config : str or Path, optional
        A TOML file of config fields (as ``--config``).
    seed : int
        Seed of random weights.
    tensor_map : str, optional
        For a model file whose tensor names do not follow the conventions (``"W0=fc1.weight,b0=fc1.bias,..."``,
        as ``metafab import --map``): the model is imported first into ``build/import/<name>``.
    **fields
        Config fields (``layers=(1, 40, 40, 1)``, ``lanes=64``, ``steps=5``, ``k_support=5``, ...), applied
        last (as ``--set``).

    Attributes
    ----------
    config : the engine's config object (``MamlConfig``, ``MamlClsConfig``, ``MatchConfig``)
    """

    def __init__(self, engine: str = "maml", *, weights: str = "auto", config=None, seed: int = 0,
                 tensor_map: str | None = None, **fields):
        from metafab.gen.engines.weight_source import check_weights

        self.engine = _engine(engine)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a whole number >= 0, got {seed!r}")
        self.seed = seed
        if self.engine.weights_flag is None:
            if weights != "auto" or tensor_map is not None:
                raise UserError(f"the {self.engine.name} engine has no weights (its support set comes with "
                                f"Match.support)")
            self.weights = "auto"
        elif self.engine.weights_flag == "--encoder":  # the encoder's weights: "auto" or an encoder file
            if tensor_map is not None:
                raise UserError("the fewshot engine takes encoder files of 'metafab train glyph-encoder', no map")
            self.weights = str(weights)
        else:
            self.weights = check_weights(weights)
            if tensor_map is not None:
                self.weights = import_model(self.weights, tensor_map=tensor_map,
                                            engine=self.engine.name)["weights"]
        sets = []
        for k, v in fields.items():
            if isinstance(v, (tuple, list)):
                v = "-".join(map(str, v)) if k == "layers" else ",".join(map(str, v))
            sets.append(f"{k}={v}")
        self._args = _namespace(self.engine, self.weights, None if config is None else str(config), sets)
        self._args.seed = self.seed
        self.config = self.engine.config(self._args)

    @classmethod
    def from_model(cls, path, *, engine: str | None = None, **fields) -> Design:
        """The design of an imported model: ``maml-cls`` when its graph ends in a Softmax, else ``maml``."""
        from metafab.gen.model_import import read_model

        if engine is None:
            engine = "maml-cls" if read_model(path).softmax else "maml"
        return cls(engine, weights=str(path), **fields)

    def args(self, command: str, **options) -> argparse.Namespace:
        """The command line's arguments of ``metafab COMMAND ENGINE`` for this design (its defaults, then
        ``options``)."""
        from metafab.gen.cli import _parser

        argv = [command, self.engine.name]
        flag = self.engine.weights_flag
        if flag and command in ("generate", "sim", "verify", "build", "run"):
            argv += [flag, self.weights]
        if command == "run":
            argv += ["--port", options.pop("port", "-")]
        if command == "build":
            argv += ["--board", options.pop("board")]
        ns = _parser().parse_args(argv)
        for k, v in vars(self._args).items():
            if k not in ("weights",):
                setattr(ns, k, v)
        if flag:
            setattr(ns, flag.lstrip("-").replace("-", "_"), self.weights)
        for k, v in options.items():
            setattr(ns, k, v)
        return ns

    def initial_codes(self):
        """The MAML engines' initial weights as master-format codes (the LOAD payload's matrices)."""
        from metafab.reference import maml_fixed as mf

        params, _ = self._initial()
        return mf.quantize_params(params, self.config)

    def _initial(self):
        if self.engine.name == "maml":
            from metafab.gen.engines.maml import initial_params
        elif self.engine.name == "maml-cls":
            from metafab.gen.engines.maml_cls import initial_params
        else:
            raise UserError(f"the {self.engine.name} engine has no weights")
        return initial_params(self.config, self.weights, self.seed)

    def __repr__(self) -> str:
        return f"Design({self.engine.name!r}, {self.config.name}, weights={self.weights!r})"


def import_model(path, *, out=None, engine: str | None = None, tensor_map: str | None = None,
                 fit_formats: bool = False, **options) -> dict:
    """``metafab import``: the report dict (``--json``) and the weight file written (``report["weights"]``)."""
    from metafab.gen.cmd_import import import_model as run

    return run(path, out=out, engine=engine, tensor_map=tensor_map, fit_formats=fit_formats, **options)


def generate(design: Design, out=None, *, progress=None) -> dict:
    """``metafab generate``: the files of the design under ``out`` (default ``build/generate/...``)."""
    from metafab.gen import flow

    args = design.args("generate")
    folder = flow.output_folder(out, "generate", design.config)
    files = flow.generate(design.engine, design.config, folder, args, progress)
    return {"engine": design.engine.name, "design": design.config.name, "out": str(folder),
            "files": [str(p) for p in files]}


def verify(design: Design, count: int | None = None, *, sim: str = "verilator", seed: int | None = None,
           progress=None) -> dict:
    """``metafab verify --json``: the RTL against the bit-exact reference on ``count`` tasks/episodes
    (``seed``: of the workload and of random weights; default the design's)."""
    from metafab.gen import flow

    if sim not in ("verilator", "icarus"):
        raise UserError(f"unknown simulator {sim!r}; valid: verilator, icarus")
    args = design.args("verify")
    seed = design.seed if seed is None else seed
    return flow.verify(design.engine, design.config, count=count, sim=sim, seed=seed,
                       options=design.engine.verify_options(args), progress=progress)


def build(design: Design, board: str = "ulx3s-85f", *, clock_mhz=None, seed: int = 1, progress=None,
          **options) -> dict:
    """``metafab build --json``: bitstream, utilisation, clock, Fmax, timing, latency at the clock."""
    from metafab.gen import flow

    args = design.args("build", board=board, **options)
    return flow.build(design.engine, design.config, board, top=getattr(args, "top", "uart"),
                      baud=getattr(args, "baud", 115200), clock_mhz=clock_mhz, seed=seed,
                      timing_ripup=getattr(args, "timing_ripup", False), preload_args=args, progress=progress)


@dataclass(frozen=True)
class Board:
    """A backend on a board: the engine's bitstream on an FPGA behind the USB-UART at ``port``."""

    port: str
    baud: int = 115200
    timeout: float = 10.0

    def host(self):
        from metafab.gen.host import Host, open_serial

        return Host(open_serial(self.port, self.baud), timeout=self.timeout)


def _check_backend(backend):
    if isinstance(backend, Board) or backend in BACKENDS:
        return backend
    raise UserError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)} or metafab.api.Board(port)")


# --- MAML: adapt on chip ------------------------------------------------------------------------


class _MamlBackend:
    """Runs one task: ``(response codes, adapted master codes)`` from initial codes and task codes."""

    def __init__(self, design: Design, backend):
        self.design, self.backend = design, backend
        self._host = None
        self._loaded = None

    def run(self, wq, task):
        cfg, name = self.design.config, self.design.engine.name
        if self.backend == "reference":
            if name == "maml":
                from metafab.reference import maml_fixed as mf

                r = mf.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in task), cfg)
                words = r.y_query.reshape(-1)
            else:
                from metafab.reference import maml_cls_fixed as mc

                r = mc.run_task(wq, *(np.asarray(a, dtype=np.int64) for a in task), cfg)
                words = np.asarray(mc.result_words(r))
            return np.asarray(words, dtype=np.int64), [np.asarray(w, dtype=np.int64) for w in r.weights]
        if isinstance(self.backend, Board):
            return self._board(wq, task)
        from metafab.gen.engines.maml import run_engine

        r = run_engine(cfg, wq, [task], sim=self.backend, return_outputs=True, read_weights=True,
                       run_name=f"api-{self.backend}", engine=self.design.engine)
        return np.asarray(r["outputs"][0], dtype=np.int64), _split(cfg, r["adapted"][0])

    def _board(self, wq, task):
        from metafab.reference.payloads import maml_cls_run_words, maml_load_words, maml_run_words

        if self._host is None:
            self._host = self.backend.host()
        words = maml_load_words(wq)
        if self._loaded != words:
            self._host.load(words)
            self._loaded = words
        run_words = (maml_run_words if self.design.engine.name == "maml" else maml_cls_run_words)(*task)
        out = self._host.run(run_words)
        return np.asarray(out, dtype=np.int64), _split(self.design.config, self._host.read_weights())


def _split(cfg, codes):
    from metafab.reference.payloads import maml_weights_from_words

    return maml_weights_from_words(cfg, np.asarray(codes, dtype=np.int64))


def _rows(values, width: int, name: str) -> np.ndarray:
    """``values`` as rows of ``width`` floats: a 1-D array is ``n`` samples when ``width`` is 1, else one
    sample."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None] if width == 1 else a[None, :]
    if a.ndim != 2:
        raise UserError(f"{name} has shape {a.shape}; give it as (n, {width})")
    if not np.isfinite(a).all():
        raise UserError(f"{name} holds NaN or infinite values")
    return a


class MAML:
    """A meta-learned MLP that adapts on a backend, shaped like learn2learn's ``MAML``.

    ``learner.clone()`` gives a :class:`TaskLearner` that starts from the design's initial weights; its
    ``adapt(x_support, y_support)`` takes the task's support set (``K`` samples: targets for ``maml``,
    class labels for ``maml-cls``), ``task(x_query)`` answers queries with the adapted network and
    ``task.parameters()`` gives the adapted weights. The inner loop is the design's (``steps`` SGD steps of
    ``lr``), computed by the backend: ``"reference"``, ``"verilator"``, ``"icarus"`` or a :class:`Board`.

    Parameters
    ----------
    design : Design
        A ``maml`` or ``maml-cls`` design.
    backend : str or Board
    """

    def __init__(self, design: Design, *, backend="reference"):
        if not isinstance(design, Design):
            raise TypeError(f"design must be a metafab.api.Design, got {design!r}")
        if design.engine.name not in ("maml", "maml-cls"):
            raise UserError(f"MAML needs a maml or maml-cls design, not {design.engine.name}; use Match")
        self.design = design
        self.backend = _check_backend(backend)
        self._runner = _MamlBackend(design, self.backend)
        self._wq = design.initial_codes()

    @property
    def config(self):
        return self.design.config

    def initial_parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The initial (meta-learned) weights as the engine holds them, dequantised: ``[(W, b), ...]``."""
        from metafab.reference import maml_fixed as mf

        return mf.dequantize_params(self._wq, self.config)

    def clone(self) -> TaskLearner:
        """A learner for one task, starting from the initial weights."""
        return TaskLearner(self)


class TaskLearner:
    """One task's learner (made by :meth:`MAML.clone`)."""

    def __init__(self, parent: MAML):
        self._parent = parent
        self._support = None
        self._adapted = None  # master codes after adapt (from the last run)
        self._cache = None  # (query codes, answers) of the last call

    def adapt(self, x_support, y_support) -> TaskLearner:
        """Take the task's support set: ``x_support`` ``(K, n_in)`` and ``y_support`` ``(K, n_out)`` targets
        (``maml``) or ``(K,)`` class labels (``maml-cls``). The adaptation runs on the backend with the
        first query call (the engine takes the support set and the queries in one request)."""
        from metafab.reference import maml_fixed as mf

        cfg, cls = self._parent.config, self._parent.design.engine.name == "maml-cls"
        xs = _rows(x_support, cfg.n_in, "x_support")
        if xs.shape != (cfg.k_support, cfg.n_in):
            raise UserError(f"x_support has shape {xs.shape}, the design needs ({cfg.k_support}, {cfg.n_in})")
        if cls:
            ys = np.asarray(y_support)
            if ys.shape != (cfg.k_support,):
                raise UserError(f"y_support has shape {ys.shape}, the design needs {cfg.k_support} class labels")
            if ys.dtype == bool or not np.issubdtype(ys.dtype, np.integer):
                raise UserError(f"y_support must be integer class labels, got dtype {ys.dtype}")
            bad = [int(v) for v in ys if not 0 <= v < cfg.n_out]
            if bad:
                raise UserError(f"y_support holds label {bad[0]}; the design's classes are 0..{cfg.n_out - 1}")
            ycodes = [int(v) for v in ys]
        else:
            ys = _rows(y_support, cfg.n_out, "y_support")
            if ys.shape != (cfg.k_support, cfg.n_out):
                raise UserError(f"y_support has shape {ys.shape}, the design needs ({cfg.k_support}, {cfg.n_out})")
            ycodes = mf.quantize_inputs(ys, cfg).tolist()
        self._support = (mf.quantize_inputs(xs, cfg).tolist(), ycodes)
        self._adapted = None
        self._cache = None
        return self

    def _run(self, xq_codes: np.ndarray):
        if self._support is None:
            raise UserError("call adapt(x_support, y_support) first")
        p = self._parent
        task = [self._support[0], self._support[1], xq_codes.tolist()]
        words, adapted = p._runner.run(p._wq, task)
        self._adapted = adapted
        return words

    def _answers(self, x_query):
        """The response codes of every query (in runs of the design's ``Q`` queries, the last padded)."""
        from metafab.reference import maml_fixed as mf

        cfg = self._parent.config
        x = _rows(x_query, cfg.n_in, "x_query")
        if x.shape[1] != cfg.n_in or len(x) == 0:
            raise UserError(f"x_query has shape {x.shape}, the design needs (n, {cfg.n_in}) with n >= 1")
        codes = mf.quantize_inputs(x, cfg)
        key = codes.tobytes()
        if self._cache is not None and self._cache[0] == key:  # task(x) then task.classify(x): one run
            return self._cache[1]
        per = cfg.n_out if self._parent.design.engine.name == "maml" else cfg.n_out + 1
        out = []
        for at in range(0, len(codes), cfg.n_query):
            chunk = codes[at: at + cfg.n_query]
            pad = np.zeros((cfg.n_query - len(chunk), cfg.n_in), dtype=np.int64)
            words = self._run(np.concatenate([chunk, pad]))
            out.append(np.asarray(words).reshape(cfg.n_query, per)[: len(chunk)])
        self._cache = (key, np.concatenate(out))
        return self._cache[1]

    def __call__(self, x_query) -> np.ndarray:
        """The adapted network's answer to each query: outputs ``(n, n_out)`` (``maml``) or class
        probabilities ``(n, N)`` (``maml-cls``), as floats."""
        from metafab.reference.fixed import to_float

        cfg = self._parent.config
        words = self._answers(x_query)
        if self._parent.design.engine.name == "maml":
            return to_float(words, cfg.act_fmt)
        return to_float(words[:, : cfg.n_out], cfg.prob_fmt)

    def classify(self, x_query) -> np.ndarray:
        """``maml-cls``: the class of each query (the argmax of its logits, as the engine answers)."""
        if self._parent.design.engine.name != "maml-cls":
            raise UserError("classify() is for maml-cls designs; a maml design answers with outputs")
        return self._answers(x_query)[:, -1].copy()

    def parameter_codes(self) -> list[np.ndarray]:
        """The adapted weights as master-format codes, layer by layer ``[W | b]`` (the READ_WEIGHTS answer)."""
        if self._adapted is None:
            cfg = self._parent.config
            self._run(np.zeros((cfg.n_query, cfg.n_in), dtype=np.int64))  # the queries do not change them
        return [a.copy() for a in self._adapted]

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The adapted weights, dequantised: ``[(W, b), ...]`` as floats (read back from the engine)."""
        from metafab.reference import maml_fixed as mf

        return mf.dequantize_params(self.parameter_codes(), self._parent.config)


# --- the similarity engine ------------------------------------------------------------------------


def _support_labels(labels, m: int, n_way: int, item: str) -> np.ndarray:
    """A support set's ``m`` class labels as int64, each in ``0..n_way-1`` and every class present (UserError
    otherwise)."""
    y = np.asarray(labels)
    if y.shape != (m,) or y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"labels must be {m} integer class labels, got shape {y.shape}, dtype {y.dtype}")
    bad = [int(v) for v in y if not 0 <= v < n_way]
    if bad:
        raise UserError(f"labels hold {bad[0]}; the design's classes are 0..{n_way - 1}")
    missing = sorted(set(range(n_way)) - set(y.tolist()))
    if missing:
        raise UserError(f"class {missing[0]} has no support {item} (every class needs at least one)")
    return y.astype(np.int64)


class Match:
    """The Matching / Prototypical read-out on a backend: ``support(embeddings, labels)`` then
    ``classify(queries)`` -> ``(probabilities (n, N), classes (n,))``.

    Parameters
    ----------
    design : Design
        A ``match`` design (``n_way``, ``k_shot``, ``dim``, ``mode``: ``"matching"`` or ``"proto"``).
    backend : str or Board
    """

    def __init__(self, design: Design, *, backend="reference"):
        if not isinstance(design, Design):
            raise TypeError(f"design must be a metafab.api.Design, got {design!r}")
        if design.engine.name != "match":
            raise UserError(f"Match needs a match design, not {design.engine.name}; use MAML")
        self.design = design
        self.backend = _check_backend(backend)
        self._support = None
        self._host = None

    @property
    def config(self):
        return self.design.config

    def support(self, embeddings, labels) -> Match:
        """The support set: ``N K`` rows of ``dim`` floats and their class labels ``0..N-1``."""
        from metafab.reference import match_fixed as mx

        cfg = self.config
        s = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(labels)
        m = cfg.n_way * cfg.k_shot
        if s.shape != (m, cfg.dim):
            raise UserError(f"embeddings have shape {s.shape}, the design needs ({m}, {cfg.dim})")
        self._support = (mx.quantize(s, cfg), _support_labels(y, m, cfg.n_way, "row"))
        return self

    def classify(self, queries):
        """Class probabilities (floats, ``prob_fmt``) and the class of each query (rows of ``dim``)."""
        from metafab.reference import match_fixed as mx
        from metafab.reference.fixed import to_float

        if self._support is None:
            raise UserError("call support(embeddings, labels) first")
        cfg = self.config
        q = np.asarray(queries, dtype=np.float64)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != cfg.dim or len(q) == 0:
            raise UserError(f"queries have shape {q.shape}, the design needs (n, {cfg.dim}) with n >= 1")
        qc = mx.quantize(q, cfg)
        s, y = self._support
        if self.backend == "reference":
            r = mx.readout(qc, mx.prepare(s, y, cfg), cfg)
            words = np.concatenate([r.probs, r.pred[:, None]], axis=1)
        elif isinstance(self.backend, Board):
            words = self._board(s, y, qc)
        else:
            from metafab.gen.engines.match import run_engine

            ep = {"support": s.tolist(), "labels": y.tolist(), "queries": qc.tolist()}
            r = run_engine(cfg, [ep], sim=self.backend, return_outputs=True, timing_queries=0,
                           run_name=f"api-{self.backend}")
            words = np.asarray(r["outputs"], dtype=np.int64)
        words = np.asarray(words, dtype=np.int64)
        return to_float(words[:, : cfg.n_way], cfg.prob_fmt), words[:, -1].copy()

    def _board(self, s, y, qc):
        from metafab.reference.payloads import match_load_words, match_run_words

        if self._host is None:
            self._host = self.backend.host()
        self._host.load(match_load_words(s, y))
        return np.stack([self._host.run(match_run_words(row, self.config)) for row in qc])


# --- the few-shot pipeline ------------------------------------------------------------------------


class FewShot:
    """The few-shot pipeline on a backend, pixels in, class out: ``support(images, labels)`` then
    ``classify(images)`` -> ``(probabilities (n, N), classes (n,))``.

    Parameters
    ----------
    design : Design
        A ``fewshot`` design (``spec``, ``n_way``, ``k_shot``, ``mode``; ``weights``: the encoder, ``"auto"``
        or a ``metafab train glyph-encoder`` file).
    backend : str or Board
    """

    def __init__(self, design: Design, *, backend="reference"):
        if not isinstance(design, Design):
            raise TypeError(f"design must be a metafab.api.Design, got {design!r}")
        if design.engine.name != "fewshot":
            raise UserError(f"FewShot needs a fewshot design, not {design.engine.name}")
        from metafab.gen.engines.fewshot import encoder_weights

        self.design = design
        self.backend = _check_backend(backend)
        self.encoder_codes, self.encoder_source = encoder_weights(design.config, design.weights)
        self._support = None
        self._host = None

    @property
    def config(self):
        return self.design.config

    def _images(self, images, what: str) -> np.ndarray:
        from metafab.reference import encoder as enc

        n_in = self.config.spec.n_inputs
        x = np.asarray(images, dtype=np.float64)
        if x.ndim in (1, 3):
            x = x[None]
        x = x.reshape(len(x), -1) if x.ndim == 4 else x
        if x.ndim != 2 or x.shape[1] != n_in or len(x) == 0:
            raise UserError(f"{what} have shape {np.shape(images)}; the design needs (n, {n_in}) or "
                            f"(n, {', '.join(map(str, self.config.spec.input_shape))}) with n >= 1")
        return enc.quantize_images(x, self.config, what).reshape(len(x), -1)

    def support(self, images, labels) -> FewShot:
        """The support set: ``N K`` images (pixels as floats; ``C H W`` values each) and their class labels."""
        cfg = self.config
        m = cfg.n_way * cfg.k_shot
        s = self._images(images, "support images")
        if len(s) != m:
            raise UserError(f"the design takes {m} support images, got {len(s)}")
        self._support = (s, _support_labels(labels, m, cfg.n_way, "image"))
        return self

    def classify(self, images):
        """Class probabilities (floats, ``prob_fmt``) and the class of each query image."""
        from metafab.reference import encoder as enc
        from metafab.reference.fixed import to_float

        if self._support is None:
            raise UserError("call support(images, labels) first")
        cfg = self.config
        qc = self._images(images, "query images")
        s, y = self._support
        if self.backend == "reference":
            r = enc.fewshot_fixed(self.encoder_codes, s, y, qc, cfg)
            words = np.concatenate([r.probs, r.pred[:, None]], axis=1)
        elif isinstance(self.backend, Board):
            words = self._board(s, y, qc)
        else:
            from metafab.gen.engines.fewshot import run_engine

            ep = {"support": s.tolist(), "labels": y.tolist(), "queries": qc.tolist()}
            r = run_engine(cfg, self.encoder_codes, [ep], sim=self.backend, return_outputs=True, timing_queries=0,
                           run_name=f"api-{self.backend}")
            words = np.asarray(r["outputs"], dtype=np.int64)
        words = np.asarray(words, dtype=np.int64)
        return to_float(words[:, : cfg.n_way], cfg.match.prob_fmt), words[:, -1].copy()

    def _board(self, s, y, qc):
        from metafab.reference.payloads import fewshot_encoder_words, fewshot_load_words, fewshot_run_words
        from metafab.reference.protocol import Opcode

        if self._host is None:
            self._host = self.backend.host()
            self._host.checked(Opcode.LOAD_ENCODER, fewshot_encoder_words(self.encoder_codes))
        self._host.load(fewshot_load_words(s, y))
        return np.stack([self._host.run(fewshot_run_words(row)) for row in qc])
