"""Design-space sweeps: a grid of designs and build options, each point a Dask task, results in a store.

A sweep spec (TOML, ``metafab sweep SPEC.toml``; docs/sweeps.md)::

    engine = "maml"
    stages = ["model", "verify"]   # model: the cycle model; verify: tasks through the simulator; build: a board
    tasks = 20                     # verify: tasks (or queries) per point
    objective = "latency_us"       # the table's order (lower is better; fmax_mhz and utilisation: higher)

    [design]                       # fields every point shares
    layers = [1, 6, 1]

    [grid]                         # field -> values: every combination is a point
    lanes = [1, 2, 4]
    steps = [1, 5]

    [[points]]                     # and/or explicit points (over [design])
    lanes = 8

A point's fields are the engine's config fields and the options ``board``,
``clock_mhz`` (default: the engine's clock for the board) and ``seed`` (the
verification's workload seed and the nextpnr seed of a build; default 1). A
config field named like an option (the MAML config's stochastic-rounding
``seed``) is written ``config_seed``. Each point
is one task on a worker (:func:`run_point`, which gets plain dicts); its
result goes into the :class:`ResultsStore` (SQLite under the build folder),
keyed by the config digest and the options, so an interrupted sweep resumes
where it stopped. A point that fails (an invalid config, a verify that
raises) is recorded with a one-line reason and never stops the sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from metafab.gen.engines.base import Progress
from metafab.reference.errors import UserError

__all__ = ["SweepSpec", "Point", "ResultsStore", "STAGES", "OPTIONS", "METRICS", "read_spec", "parse_spec",
           "expand", "run_point", "run_sweep", "point_build_folder", "pareto", "best_seeds", "format_sweep",
           "sweep_document_path", "write_sweep_document", "sweep_table", "best_seed_lines",
           "default_store"]

#: What a point can run, in order.
STAGES = ("model", "verify", "build")
#: Point fields that are options of the flows, not of the design; their defaults.
OPTIONS = {"board": "ulx3s-85f", "clock_mhz": None, "seed": 1}
#: The figures of a point a sweep can sort by; those where higher is better.
METRICS = ("latency_us", "cycles", "utilisation", "mismatches", "lut", "ff", "dsp", "bram", "fmax_mhz")
HIGHER_IS_BETTER = ("utilisation", "fmax_mhz")
#: The spec's top-level keys.
SPEC_KEYS = ("engine", "stages", "tasks", "sim", "objective", "design", "grid", "points")


@dataclass(frozen=True)
class Point:
    """One point of a sweep: the design's fields (over the spec's ``[design]``) and the flow options."""

    fields: dict
    options: dict

    def key(self, engine) -> tuple[str, str]:
        """``(key, digest)``: the store's key of the point and its config digest (``invalid-...`` when the
        fields make no valid config)."""
        from metafab.reference.config import config_digest

        try:
            digest = config_digest(engine.config_from_dict(self.fields))
        except (UserError, ValueError, TypeError):
            text = json.dumps(self.fields, sort_keys=True, default=str)
            digest = "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{engine.name}:{digest}:{json.dumps(self.options, sort_keys=True)}", digest


@dataclass
class SweepSpec:
    """A parsed sweep spec (:func:`parse_spec`)."""

    engine: str
    stages: tuple[str, ...]
    points: list[Point]
    tasks: int = 20
    sim: str = "verilator"
    objective: str = "latency_us"
    source: str = ""
    grid: dict = field(default_factory=dict)


def read_spec(path: str | Path) -> SweepSpec:
    """The spec in the TOML file ``path`` (one-line UserErrors for an unreadable or bad file)."""
    from metafab.gen.designs import read_toml_file

    return parse_spec(read_toml_file(path, "sweep spec"), source=str(path))


def _where(source: str) -> str:
    return f"sweep spec {source!r}" if source else "sweep spec"


def parse_spec(doc: dict, *, source: str = "") -> SweepSpec:
    """A :class:`SweepSpec` from the spec's TOML document; every mistake is a UserError naming the bad
    key or value and what is valid."""
    from metafab.gen.engines import engine_names, get_engine
    from metafab.sim.tools import SIMULATORS

    where = _where(source)
    unknown = sorted(set(doc) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SPEC_KEYS)}")
    if "engine" not in doc:
        raise UserError(f"{where}: no engine; give engine = one of {', '.join(map(repr, engine_names()))}")
    try:
        engine = get_engine(doc["engine"])
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    stages = tuple(doc.get("stages", ("model",)))
    _check_stages(stages, where)
    tasks = doc.get("tasks", 20)
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise UserError(f"{where}: tasks must be a whole number of at least 1, got {tasks!r}")
    sim = doc.get("sim", "verilator")
    if sim not in SIMULATORS:
        raise UserError(f"{where}: sim {sim!r}; valid: {', '.join(SIMULATORS)}")
    objective = doc.get("objective", "latency_us")
    check_objective(objective, where)
    # a config field named like an option (the MAML config's stochastic-rounding ``seed``) is config_<name>
    names = [f.name for f in dataclasses.fields(engine.config_class)]
    renamed = {f"config_{n}": n for n in names if n in OPTIONS}
    valid = [n for n in names if n not in OPTIONS] + list(renamed) + list(OPTIONS)

    def table(name) -> dict:
        t = doc.get(name, {})
        if not isinstance(t, dict):
            raise UserError(f"{where}: [{name}] must be a table of field = value")
        for k in t:
            if k not in valid:
                raise UserError(f"{where}: [{name}] field {k!r} is no field of the {engine.name} engine; valid "
                                f"fields: {', '.join(valid)}")
        return dict(t)

    base, grid = table("design"), table("grid")
    for k, values in grid.items():
        if not isinstance(values, list):
            raise UserError(f"{where}: [grid] {k} must be a list of values, got {values!r}")
        if not values:
            raise UserError(f"{where}: [grid] {k} is an empty list; give at least one value")
    explicit = doc.get("points", [])
    if not isinstance(explicit, list) or not all(isinstance(x, dict) for x in explicit):
        raise UserError(f"{where}: points must be an array of tables ([[points]])")
    for n, x in enumerate(explicit):
        for k in x:
            if k not in valid:
                raise UserError(f"{where}: [[points]] number {n + 1}: field {k!r} is no field of the "
                                f"{engine.name} engine; valid fields: {', '.join(valid)}")
    if not grid and not explicit:
        raise UserError(f"{where}: no points; give a [grid] (field = [values]) and/or [[points]] tables")
    points = expand(base, grid, explicit, renamed)
    return SweepSpec(engine=engine.name, stages=stages, points=points, tasks=tasks, sim=sim, objective=objective,
                     source=source, grid=grid)


def _check_stages(stages, where: str) -> None:
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UserError(f"{where}: stage {bad[0] if bad else 'list'!r} is not valid; valid stages: "
                        f"{', '.join(STAGES)} (at least one)")


def check_objective(objective: str, where: str = "--objective") -> None:
    if objective not in METRICS:
        raise UserError(f"{where}: objective {objective!r}; valid: {', '.join(METRICS)}")


def parse_stages(text: str) -> tuple[str, ...]:
    """``--stages model,verify`` as a tuple (UserError naming the valid stages)."""
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    _check_stages(stages, "--stages")
    return stages


def expand(base: dict, grid: dict, explicit: list[dict], renamed: dict | None = None) -> list[Point]:
    """The points: every combination of the grid's values, then the explicit points, each over ``base``;
    a point equal to an earlier one is dropped. ``renamed``: spec names of config fields that an option's
    name hides (``{"config_seed": "seed"}``)."""
    rows = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())] if grid else []
    out, seen = [], set()
    for row in rows + list(explicit):
        merged = {**base, **row}
        options = {k: merged.pop(k, v) for k, v in OPTIONS.items()}
        for alias, name in (renamed or {}).items():
            if alias in merged:
                merged[name] = merged.pop(alias)
        p = Point(fields=merged, options=options)
        ident = json.dumps([p.fields, p.options], sort_keys=True, default=str)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out


class _PointFailed(Exception):
    """A point whose stage ran but did not pass (its message is the reason)."""


def _one_line(exc: BaseException) -> str:
    """The reason of a failed point: the exception's first line (with its type unless it is ours)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if isinstance(exc, UserError | _PointFailed) else f"{type(exc).__name__}: {line}".rstrip(": ")


def run_point(engine_name: str, fields: dict, options: dict, stages: tuple, *, tasks: int = 20,
              sim: str = "verilator") -> dict:
    """Run one point (on a worker): ``{"status": "ok"|"failed", "reason", "report", "seconds"}``.

    ``report``: ``design``, ``config``, ``options``, ``metrics`` (the flat figures a sweep sorts by) and
    one entry per stage run: ``model`` (cycles of one item, lane utilisation, latency at the engine's
    default clock for the board or at ``clock_mhz``), ``verify`` (:func:`metafab.gen.flow.verify`'s report
    on ``tasks`` items of seed ``seed``), ``build`` (:func:`metafab.gen.flow.build`'s report). Any
    exception is caught: the point is ``failed`` with a one-line reason.
    """
    from metafab.gen import flow
    from metafab.gen.boards import get_board
    from metafab.gen.cluster import worker_tag
    from metafab.gen.engines import get_engine
    from metafab.sim.runner import run_folder_tag

    t0 = time.perf_counter()
    report: dict = {"engine": engine_name, "options": dict(options), "stages": list(stages)}
    try:
        engine = get_engine(engine_name)
        cfg = engine.config_from_dict(fields)
        report.update(design=cfg.name, config=cfg.to_dict())
        board = get_board(options.get("board") or OPTIONS["board"])
        clock = options.get("clock_mhz") or engine.default_clock_mhz(board.family)
        model = engine.cycles(cfg)
        cycles = engine.item_cycles(cfg)
        util = getattr(model, "lane_utilisation", None)
        metrics = {"cycles": cycles, "lanes": getattr(cfg, "lanes", None), "utilisation": util,
                   "clock_mhz": clock, "latency_us": cycles / clock}
        report["model"] = {"cycles": cycles, "utilisation": util, "clock_mhz": clock, "latency_us": cycles / clock,
                           "cycle_model": model.to_dict() if hasattr(model, "to_dict") else None}
        seed = int(options.get("seed", OPTIONS["seed"]))
        with run_folder_tag(worker_tag()):
            if "verify" in stages:
                report["verify_settings"] = {"tasks": tasks, "sim": sim}
                v = flow.verify(engine, cfg, count=tasks, sim=sim, seed=seed)
                report["verify"] = v
                metrics.update(mismatches=v["mismatches"], passed=engine.passed(v))
                if not engine.passed(v):
                    raise _PointFailed(f"verification failed: {v['mismatches']} mismatching words, cycles as "
                                       f"modelled: {v.get('cycles_match_model')}")
            if "build" in stages:
                with point_build_folder(engine.name, cfg, options):
                    b = flow.build(engine, cfg, board.name, clock_mhz=options.get("clock_mhz"), seed=seed)
                report["build"] = b
                metrics.update({k: b.get(k) for k in ("lut", "ff", "dsp", "bram", "fmax_mhz", "timing")})
                if b.get("clock_mhz"):
                    metrics.update(clock_mhz=b["clock_mhz"], latency_us=b.get("latency_us"))
        report["metrics"] = metrics
        status, reason = "ok", ""
    except Exception as exc:  # a failing point is recorded, never stops the sweep
        status, reason = "failed", _one_line(exc)
    return {"status": status, "reason": reason, "report": report, "seconds": time.perf_counter() - t0}


@contextmanager
def point_build_folder(engine_name: str, cfg, options: dict):
    """Within this block the build folder is the point's own, ``<build>/sweeps/builds/<engine>-<digest>-<board>-
    <clock>-s<seed>``: a board build's folder is named by the design alone, so two points of one design (other
    seeds or clocks) building at once would share it. Sets ``METAFAB_BUILD_DIR`` of this process: one
    thread per worker process (as :func:`metafab.gen.cluster.connect` starts them)."""
    from metafab.reference.config import config_digest
    from metafab.sim.runner import build_root

    clock = options.get("clock_mhz") or "default"
    folder = build_root() / "sweeps" / "builds" / (
        f"{engine_name}-{config_digest(cfg)[:12]}-{options.get('board')}-{clock}-s{options.get('seed')}")
    folder.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("METAFAB_BUILD_DIR")
    os.environ["METAFAB_BUILD_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("METAFAB_BUILD_DIR", None)
        else:
            os.environ["METAFAB_BUILD_DIR"] = old


def default_store() -> Path:
    """The results store of this build folder: ``<build>/sweeps/results.sqlite``."""
    from metafab.sim.runner import build_root

    return build_root() / "sweeps" / "results.sqlite"


def sweep_document_path(doc: dict) -> Path:
    """Where the last run of a sweep keeps its document (what ``--json`` prints), for ``metafab report``:
    ``<build>/sweeps/<spec file name without .toml>.json`` (``<engine>.json`` for a spec given as a dict)."""
    from metafab.sim.runner import build_root

    name = Path(doc["spec"]).stem if doc.get("spec") else doc["engine"]
    return build_root() / "sweeps" / f"{name}.json"


def write_sweep_document(doc: dict) -> Path:
    """Write the sweep's document (JSON, sorted keys); its path."""
    path = sweep_document_path(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


class ResultsStore:
    """The sweep results: one SQLite row per point (key: engine, config digest and options), with the full
    report as JSON, ``ok``/``failed``, a one-line reason, how many times the point ran and when."""

    SCHEMA = """CREATE TABLE IF NOT EXISTS points (
        key TEXT PRIMARY KEY, engine TEXT NOT NULL, design TEXT, digest TEXT NOT NULL, fields TEXT NOT NULL,
        options TEXT NOT NULL, stages TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        report TEXT NOT NULL, seconds REAL, runs INTEGER NOT NULL DEFAULT 1, finished REAL NOT NULL)"""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.row_factory = sqlite3.Row
        with self._db:
            self._db.execute(self.SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT * FROM points WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        for k in ("fields", "options", "stages", "report"):
            out[k] = json.loads(out[k])
        return out

    def put(self, key: str, *, engine: str, digest: str, point: Point, stages, result: dict) -> None:
        """Record a point's result (a second run of the key counts in ``runs``)."""
        report = result["report"]
        with self._db:
            self._db.execute(
                """INSERT INTO points (key, engine, design, digest, fields, options, stages, status, reason, report,
                   seconds, runs, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
                   ON CONFLICT(key) DO UPDATE SET design = excluded.design, stages = excluded.stages,
                   status = excluded.status, reason = excluded.reason, report = excluded.report,
                   seconds = excluded.seconds, runs = points.runs + 1, finished = excluded.finished""",
                (key, engine, report.get("design"), digest, json.dumps(point.fields, sort_keys=True, default=str),
                 json.dumps(point.options, sort_keys=True), json.dumps(list(stages)), result["status"],
                 result["reason"], json.dumps(report, sort_keys=True, default=_plain), result.get("seconds"),
                 time.time()))

    def delete(self, key: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM points WHERE key = ?", (key,))

    def keys(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT key FROM points ORDER BY key")]


def _plain(x):
    """JSON for numpy scalars and arrays in a report."""
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _covers(old: dict, stages, spec: SweepSpec) -> bool:
    """Whether a recorded point ran every stage asked (a verification: on as many items, same simulator)."""
    if not set(stages) <= set(old["stages"]):
        return False
    v = old["report"].get("verify_settings")
    return "verify" not in stages or old["status"] != "ok" or v == {"tasks": spec.tasks, "sim": spec.sim}


def run_sweep(spec: SweepSpec, client, store: ResultsStore, *, stages: tuple | None = None, force: bool = False,
              retry_failed: bool = False, progress: Progress = None) -> dict:
    """Run the points of ``spec`` not in ``store`` yet on the Dask ``client``; the sweep's document.

    A recorded point is skipped when its stages cover those asked, unless
    ``force`` (every point runs) or ``retry_failed`` (failed points run
    again). Each result is stored as it arrives. The document: ``points``
    (one row each, sorted by the objective), ``pareto`` (their keys),
    ``best_seed``, ``ran``, ``skipped``, ``failed``, ``seconds``.
    """
    from distributed import as_completed

    from metafab.gen.engines import get_engine

    engine = get_engine(spec.engine)
    stages = tuple(stages or spec.stages)
    t0 = time.perf_counter()
    keyed = [(p, *p.key(engine)) for p in spec.points]
    todo = []
    for p, key, digest in keyed:
        old = store.get(key)
        if old is None or force or not _covers(old, stages, spec) or (retry_failed and old["status"] != "ok"):
            todo.append((p, key, digest))
    skipped = len(keyed) - len(todo)
    if progress:
        progress(f"sweep {spec.source or spec.engine}: {len(keyed)} point(s), {skipped} already in {store.path}, "
                 f"{len(todo)} to run ({', '.join(stages)})")
    futures = {client.submit(run_point, engine.name, p.fields, p.options, stages, tasks=spec.tasks, sim=spec.sim,
                             pure=False): (p, key, digest) for p, key, digest in todo}
    done = failed = 0
    for future in as_completed(futures):
        p, key, digest = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # the worker died or the task could not run: recorded like any failure
            result = {"status": "failed", "reason": _one_line(exc), "report": {}, "seconds": None}
        store.put(key, engine=engine.name, digest=digest, point=p, stages=stages, result=result)
        done += 1
        failed += result["status"] != "ok"
        if progress:
            elapsed = time.perf_counter() - t0
            left = elapsed / done * (len(todo) - done)
            running = _running(client, futures)
            line = (f"  points {done}/{len(todo)} done, {running} running, {len(todo) - done - running} queued, "
                    f"{failed} failed")
            why = f"  ({result['report'].get('design') or p.fields}: {result['reason']})" if result["reason"] else ""
            progress(f"{line}, {elapsed:.1f} s, about {left:.0f} s left{why}")
    rows = [_row(store.get(key), key) for _, key, _ in keyed]
    rows = sort_rows(rows, spec.objective)
    return {
        "engine": engine.name,
        "spec": spec.source,
        "store": str(store.path),
        "stages": list(stages),
        "objective": spec.objective,
        "points": rows,
        "pareto": pareto(rows, spec.objective),
        "best_seed": best_seeds(rows, spec.objective),
        "ran": len(todo),
        "skipped": skipped,
        "failed": sum(r["status"] != "ok" for r in rows),
        "seconds": time.perf_counter() - t0,
    }


def _running(client, futures) -> int:
    """How many of ``futures`` the workers are running now: per worker, those the scheduler has given it, at
    most its threads (a worker holds more than it runs)."""
    try:
        threads = {a: w.get("nthreads", 1) for a, w in client.scheduler_info()["workers"].items()}
        given = client.processing()
    except Exception:  # noqa: BLE001 - a progress figure only; the scheduler may be going away
        return 0
    ours = {f.key for f in futures if not f.done()}
    return sum(min(threads.get(a, 1), sum(k in ours for k in keys)) for a, keys in given.items())


def _row(rec: dict, key: str) -> dict:
    rep = rec["report"]
    invalid = "invalid: " + " ".join(f"{k}={v}" for k, v in sorted(rec["fields"].items()))
    return {"key": key, "design": rec["design"] or invalid, "digest": rec["digest"], "fields": rec["fields"],
            "options": rec["options"], "status": rec["status"], "reason": rec["reason"],
            "metrics": rep.get("metrics", {}), "runs": rec["runs"], "seconds": rec["seconds"]}


def sort_rows(rows: list[dict], objective: str) -> list[dict]:
    """Rows by ``objective`` (best first; failed and missing figures last)."""
    sign = -1 if objective in HIGHER_IS_BETTER else 1

    def order(r):
        v = r["metrics"].get(objective)
        return (r["status"] != "ok", v is None, sign * v if v is not None else 0, r["design"], r["key"])

    return sorted(rows, key=order)


def _design_group(r: dict) -> str:
    """The design a row builds: its config digest, board and clock (its seed is only the placement)."""
    o = r["options"]
    return f"{r['design']} {r['digest'][:8]} {o['board']} {o['clock_mhz'] or 'default'} MHz"


def _seed_rank(objective: str):
    """The order of one design's seeds: the ``objective`` first; among seeds that tie on it (latency at one
    clock does not depend on the placement), the highest Fmax; then the key."""
    sign = -1 if objective in HIGHER_IS_BETTER else 1

    def rank(r):
        v, fmax = r["metrics"].get(objective), r["metrics"].get("fmax_mhz")
        return (v is None, sign * v if v is not None else 0.0, -fmax if fmax is not None else 0.0, r["key"])

    return rank


def pareto(rows: list[dict], objective: str = "latency_us") -> dict:
    """The Pareto front of the ok points: latency vs LUT and DSP where builds exist, else cycles vs lanes
    (all minimised); ``{"axes": [...], "keys": [...]}``.

    Seeds of one design are one candidate (their latency at one clock and their resources are the same
    design's): the best seed by ``objective`` (then Fmax) stands for the design, so the front lists each
    design that is on it once.
    """
    built = [r for r in rows if r["status"] == "ok" and r["metrics"].get("lut") is not None]
    if built:
        axes, pool = ["latency_us", "lut", "dsp"], built
    else:
        axes = ["cycles", "lanes"]
        pool = [r for r in rows if r["status"] == "ok" and all(r["metrics"].get(a) is not None for a in axes)]
    groups: dict[str, list[dict]] = {}
    for r in pool:
        groups.setdefault(_design_group(r), []).append(r)
    pool = [min(group, key=_seed_rank(objective)) for group in groups.values()]
    front = []
    for r in pool:
        v = [r["metrics"][a] for a in axes]
        dominated = any(all(o <= x for o, x in zip(w, v, strict=True)) and w != v
                        for w in ([q["metrics"][a] for a in axes] for q in pool))
        if not dominated:
            front.append(r["key"])
    return {"axes": axes, "keys": front}


def best_seeds(rows: list[dict], objective: str) -> dict:
    """When seeds vary: for each design (digest, board, clock) the seed with the best ``objective``; among
    seeds that tie on it (latency at one clock does not depend on the placement), the highest Fmax."""
    ok = [r for r in rows if r["status"] == "ok" and r["metrics"].get(objective) is not None]
    if len({r["options"]["seed"] for r in ok}) < 2:
        return {}
    groups: dict[str, list[dict]] = {}
    for r in ok:
        groups.setdefault(_design_group(r), []).append(r)
    out = {}
    for name, group in groups.items():
        best = min(group, key=_seed_rank(objective))
        out[name] = {"seed": best["options"]["seed"], objective: best["metrics"][objective],
                     "fmax_mhz": best["metrics"].get("fmax_mhz"), "key": best["key"],
                     "seeds": sorted(r["options"]["seed"] for r in group)}
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def sweep_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    """The sweep's points as a table of text cells, sorted as in ``doc``: ``(header, rows)``; the first
    column marks the Pareto front with ``*``, the last is the status (and a failed point's reason)."""
    rows = doc["points"]
    cols = ["cycles", "utilisation", "latency_us"]
    if any("mismatches" in r["metrics"] for r in rows):
        cols.append("mismatches")
    if any(r["metrics"].get("lut") is not None for r in rows):
        cols += ["lut", "ff", "dsp", "bram", "fmax_mhz", "timing"]
    front = set(doc["pareto"]["keys"])
    table = []
    for r in rows:
        o, m = r["options"], r["metrics"]
        table.append(["*" if r["key"] in front else "", r["design"], o["board"], _fmt(m.get("clock_mhz")),
                      str(o["seed"]), *(_fmt(m.get(c)) for c in cols),
                      r["status"] + (f": {r['reason']}" if r.get("reason") else "")])
    return ["", "design", "board", "MHz", "seed", *cols, "status"], table


def best_seed_lines(doc: dict) -> list[str]:
    """One line per design whose seeds varied: its best seed, the objective and Fmax there, its seeds."""
    lines = []
    for name, b in doc.get("best_seed", {}).items():
        with_fmax = b.get("fmax_mhz") is not None and doc["objective"] != "fmax_mhz"
        fmax = f", Fmax {_fmt(b['fmax_mhz'])} MHz" if with_fmax else ""
        lines.append(f"best seed of {name}: {b['seed']} ({doc['objective']} {_fmt(b.get(doc['objective']))}{fmax}; "
                     f"seeds {', '.join(map(str, b['seeds']))})")
    return lines


def format_sweep(doc: dict) -> str:
    """The sweep's table (sorted by the objective), its Pareto front and best seeds, as text."""
    head, rows = sweep_table(doc)
    table = [head, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in table]
    lines.append(f"sorted by {doc['objective']}; * = Pareto front ({' vs '.join(doc['pareto']['axes'])}, "
                 f"{len(doc['pareto']['keys'])} point(s); one per design: its best seed)")
    lines += best_seed_lines(doc)
    lines.append(f"{len(rows)} point(s): {doc['ran']} run, {doc['skipped']} from the store, {doc['failed']} failed; "
                 f"store {doc['store']}; {doc['seconds']:.1f} s")
    return "\n".join(lines)
