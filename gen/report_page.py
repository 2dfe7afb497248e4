"""``metafab report``: one self-contained HTML page per design, from the JSON reports under a build folder.

What the other commands write, and where this module finds it (``<build>`` is the build folder):

| report | written by | path |
|---|---|---|
| manifest | ``metafab generate`` | ``<build>/generate/<design>-<digest>/manifest.json`` |
| verification | ``metafab verify``, ``metafab demo`` | ``<build>/verify/<design>-<digest>/report.json`` |
| board build | ``metafab build`` (and the demo's builds) | ``<build>/synth/<name>/report.json`` |
| studies | ``metafab study TARGET`` | ``<build>/study/<target>.json`` |
| sweeps | ``metafab sweep SPEC.toml`` | ``<build>/sweeps/<spec>.json`` (one page for all: ``sweeps.html``) |

A design is an engine and a config (its digest); every report names both. The page of a design is a
list of :class:`Section` objects: the engine makes them (:meth:`Engine.report_sections`, whose generic
default is :func:`generic_sections`), this module only collects the reports and renders the sections
through the Jinja2 template ``templates/report.html.j2``. Figures are inline SVG
(:mod:`metafab.gen.report_figures`), so a page needs no network and opens from ``file://``; the same
reports give byte-identical pages. An input that is missing is a section part saying "not built" with
the command that makes it, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from metafab.reference.errors import UserError

__all__ = ["Figure", "Table", "Missing", "Section", "DesignReports", "find_designs", "generic_sections",
           "config_section", "design_page", "index_page", "write_report", "page_name", "page_file", "STUDY_COMMANDS",
           "find_sweeps", "sweep_section", "sweeps_page", "SWEEPS_PAGE"]

#: The file name of the sweeps page.
SWEEPS_PAGE = "sweeps.html"

#: How each study is made (the command a "not built" line names).
STUDY_COMMANDS = {
    "maml-precision": "metafab study maml-precision",
    "sinusoid": "metafab study sinusoid",
    "match-precision": "metafab study match-precision",
    "digits": "metafab study digits",
    "glyphs-cls": "metafab study glyphs-cls",
    "maml-cls-precision": "metafab study maml-cls-precision",
}


@dataclass
class Figure:
    """One chart: its SVG text (from :mod:`metafab.gen.report_figures`), a name (its HTML id) and a caption."""

    name: str
    svg: str
    caption: str = ""


@dataclass
class Table:
    """A table: a header and rows of cells (text)."""

    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Missing:
    """An input a section needs that is not under the build folder, and the command that makes it."""

    what: str
    command: str


@dataclass
class Section:
    """A part of a design's page: key/value rows, figures, tables, and missing inputs."""

    id: str
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: a list shown in order (e.g. the steps of the critical path)
    steps: list[str] = field(default_factory=list)


@dataclass
class DesignReports:
    """Every report of one design found under the build folder (None / empty when not made yet)."""

    engine: object
    cfg: object
    digest: str
    manifest: dict | None = None
    manifest_path: str | None = None
    verify: dict | None = None
    verify_path: str | None = None
    builds: list[dict] = field(default_factory=list)  # board builds, one per board and top, by name
    build_paths: list[str] = field(default_factory=list)
    studies: dict[str, dict] = field(default_factory=dict)  # every study under the folder, by target

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def board_build(self) -> dict | None:
        """The board-top build (PLL clock) to show, the first by name; a harness build otherwise."""
        tops = [b for b in self.builds if b.get("clock_mhz")]
        return (tops or self.builds or [None])[0]


def page_name(d: DesignReports) -> str:
    """The file name of a design's page: ``<design>-<digest8>.html``."""
    return page_file(d.cfg)


def page_file(cfg) -> str:
    """The file name of the page of the design ``cfg``."""
    from metafab.reference.config import config_digest

    return f"{cfg.name}-{config_digest(cfg)[:8]}.html"


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def find_designs(root: Path) -> tuple[list[DesignReports], list[str]]:
    """The designs with a report under ``root`` (sorted by engine registry order, then name) and notes on
    reports that were skipped (an unknown engine, an unreadable file)."""
    from metafab.gen.engines import engine_names, get_engine
    from metafab.reference.config import config_digest

    designs: dict[tuple[str, str], DesignReports] = {}
    skipped: list[str] = []
    studies = {}
    for path in sorted((root / "study").glob("*.json")):
        doc = _read_json(path)
        if doc and doc.get("study"):
            studies[doc["study"]] = doc

    def design(doc: dict, path: Path) -> DesignReports | None:
        try:
            engine = get_engine(doc["engine"])
            cfg = engine.config_from_dict(doc["config"])
        except (KeyError, TypeError, UserError) as exc:
            skipped.append(f"{path}: {exc}")
            return None
        digest = config_digest(cfg)
        key = (engine.name, digest)
        if key not in designs:
            designs[key] = DesignReports(engine=engine, cfg=cfg, digest=digest, studies=studies)
        return designs[key]

    def reports(folder: str, name: str):
        """The JSON objects ``<root>/<folder>/*/<name>`` with the design each belongs to (unreadable ones
        listed as skipped)."""
        for path in sorted((root / folder).glob(f"*/{name}")):
            doc = _read_json(path)
            if doc is None:
                skipped.append(f"{path}: not a JSON object")
            elif (d := design(doc, path)) is not None:
                yield d, doc, str(path.relative_to(root))

    for d, doc, rel in reports("generate", "manifest.json"):
        d.manifest, d.manifest_path = doc, rel
    for d, doc, rel in reports("verify", "report.json"):
        d.verify, d.verify_path = doc, rel
    for d, doc, rel in reports("synth", "report.json"):
        d.builds.append(doc)
        d.build_paths.append(rel)
    order = {name: i for i, name in enumerate(engine_names())}
    out = sorted(designs.values(), key=lambda d: (order.get(d.engine.name, len(order)), d.name, d.digest))
    return out, skipped


# --- the generic sections ---------------------------------------------------------------------------

def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "-".join(map(str, v)) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def design_section(engine, cfg, d: DesignReports) -> Section:
    """What the design is: engine, name, digest, every number format, the generated files."""
    s = Section("design", "Design")
    s.rows = [("engine", f"{engine.name} ({engine.summary})"), ("design", cfg.name), ("config digest", d.digest)]
    formats = dict(engine.manifest_fields(cfg).get("formats") or {})
    if formats:
        s.rows.append(("number formats", ", ".join(f"{k} {v}" for k, v in formats.items())))
    if d.manifest_path:
        s.rows.append(("generated files", f"{Path(d.manifest_path).parent}/ (manifest.json, Verilog, wrapper, core)"))
    else:
        s.missing.append(Missing("generated Verilog and manifest", f"metafab generate {engine.name}"))
    return s


def config_section(engine, cfg, d: DesignReports) -> Section:
    """Every config field, every number format and the cycle model's figures, as tables."""
    s = Section("config", "Config, number formats and cycle model")
    s.tables.append(Table("config", ["field", "value"], [[k, _value(v)] for k, v in cfg.to_dict().items()]))
    formats = dict(engine.manifest_fields(cfg).get("formats") or {})
    if formats:
        s.tables.append(Table("number formats (Q int.frac; U: unsigned)", ["tensor role", "format"],
                              [[k, v] for k, v in formats.items()]))
    try:
        cycles = engine.cycles(cfg).to_dict()
    except NotImplementedError:
        cycles = {}
    if cycles:
        s.tables.append(Table("cycle model", ["figure", "value"], [[k, _value(v)] for k, v in cycles.items()]))
    return s


def verification_section(engine, cfg, d: DesignReports) -> Section:
    """RTL against the bit-exact reference: the engine's verification rows and the verdict."""
    s = Section("verification", "Verification: RTL against the bit-exact reference")
    if d.verify is None:
        s.missing.append(Missing("verification", f"metafab verify {engine.name}"))
        return s
    v = d.verify
    s.rows = [(k, val) for k, val in engine.verify_rows(v)]
    s.rows.append(("verdict", "PASS" if engine.passed(v) else "FAIL"))
    s.notes.append(f"from {d.verify_path}")
    return s


#: Resources shown as utilisation bars, per FPGA family: (label, nextpnr cell type).
DEVICE_RESOURCES = {
    "ecp5": (("LUT4 (TRELLIS_COMB)", "TRELLIS_COMB"), ("FF (TRELLIS_FF)", "TRELLIS_FF"),
             ("DSP (MULT18X18D)", "MULT18X18D"), ("BRAM (DP16KD)", "DP16KD"), ("I/O (TRELLIS_IO)", "TRELLIS_IO"),
             ("PLL (EHXPLLL)", "EHXPLLL")),
    "ice40": (("logic cells (ICESTORM_LC)", "ICESTORM_LC"), ("DSP (ICESTORM_DSP)", "ICESTORM_DSP"),
              ("BRAM (ICESTORM_RAM)", "ICESTORM_RAM"), ("SPRAM (ICESTORM_SPRAM)", "ICESTORM_SPRAM"),
              ("I/O (SB_IO)", "SB_IO"), ("PLL (ICESTORM_PLL)", "ICESTORM_PLL")),
}


def _build_missing(engine) -> Missing:
    return Missing("board build", f"metafab build {engine.name} --board ulx3s-85f")


def utilisation_section(engine, cfg, d: DesignReports) -> Section:
    """Device utilisation as bars: used / available per resource."""
    from metafab.gen.report_figures import utilisation_bars

    s = Section("utilisation", "Device utilisation")
    b = d.board_build
    if b is None:
        s.missing.append(_build_missing(engine))
        return s
    util = b.get("utilisation") or {}
    names = DEVICE_RESOURCES.get(b.get("family"), ())
    rows = [(label, util[cell]["used"], util[cell]["available"]) for label, cell in names if cell in util]
    shown = {cell for _, cell in names}
    rows += [(cell, e["used"], e["available"]) for cell, e in util.items()
             if cell not in shown and e.get("available")]
    s.rows = [("board", f"{b['board']} ({b['device']}, package {b.get('package', '?')}, speed {b.get('speed', '?')})"),
              ("resources", f"LUT {b['lut']}, FF {b['ff']}, DSP {b['dsp']}, BRAM {b['bram']}")]
    if rows:
        s.figures.append(Figure("utilisation", utilisation_bars(rows, title=f"{b['board']}: {cfg.name}"),
                                "used / available per resource after place and route (nextpnr)"))
    return s


def timing_section(engine, cfg, d: DesignReports) -> Section:
    """The clock the bitstream runs at, Fmax, PASS/FAIL and the critical path, step by step."""
    s = Section("timing", "Timing")
    b = d.board_build
    if b is None:
        s.missing.append(_build_missing(engine))
        return s
    if b.get("clock_mhz"):
        clock = (f"{b['clock_mhz']:.4g} MHz from the PLL ({b.get('oscillator_mhz', 0):g} MHz oscillator; "
                 f"asked {b.get('requested_mhz', 0):g} MHz)")
    else:
        clock = f"{b.get('clock_source', 'harness')}: constraint {b.get('constraint_mhz')} MHz"
    fmax = b.get("fmax_mhz")
    s.rows = [("clock", clock),
              ("Fmax", f"{fmax:.2f} MHz" if fmax is not None else "not reported"),
              ("timing", str(b.get("timing"))),
              ("place and route", f"nextpnr seed {b.get('seed')}" + (", timing-driven rip-up"
                                                                     if b.get("timing_ripup") else "")),
              ("critical path", f"{b.get('critical_path_ns')} ns, {b.get('critical_path_from')} -> "
                                f"{b.get('critical_path_to')}"),
              ("tools", f"{b.get('yosys', '')}; {b.get('nextpnr', '')}")]
    for t in (b.get("tries") or [])[:-1]:
        s.notes.append(f"an earlier try at {t['clock_mhz']:g} MHz: Fmax {t['fmax_mhz']} MHz, {t['timing']}")
    for step in b.get("critical_path") or []:
        net = f" via net {step['net']}" if step.get("net") else ""
        s.steps.append(f"{step['type']}: {step['from']} -> {step['to']}{net}, {step['delay_ns']:.3f} ns")
    return s


#: Labels of the anchor figures (``gen/anchors.py`` keys), and the kind of each (its bar's colour).
ANCHOR_LABELS = {
    "h100_cuda_graph": ("H100, PyTorch CUDA graph (anchor)", "gpu"),
    "h100_eager": ("H100, PyTorch eager (anchor)", "gpu"),
    "numpy_f64_host_cpu": ("numpy float64, host CPU (anchor)", "cpu"),
}


def latency_section(engine, cfg, d: DesignReports) -> Section:
    """Latency of one item at the bitstream's clock next to the CPU baseline and the labelled GPU anchor."""
    from metafab.gen.anchors import ANCHOR_SOURCE
    from metafab.gen.report_figures import latency_bars

    s = Section("latency", f"Latency per {engine.run_item} at the clock")
    b = d.board_build
    if b is None or not b.get("clock_mhz"):
        s.missing.append(_build_missing(engine))
        return s
    cycles = engine.item_cycles(cfg)
    us = cycles / b["clock_mhz"]
    rows = [(f"engine at {b['clock_mhz']:.4g} MHz ({b['board']}, timing {b.get('timing')})", us, "engine")]
    s.rows = [("engine", f"{cycles} cycles = {us:.3f} us per {engine.run_item} at {b['clock_mhz']:.4g} MHz")]
    cpu = b.get("cpu_baseline") or {}
    if cpu.get("min_us"):
        rows.append((f"plain C float32, 1 host core (min of {cpu['runs']})", cpu["min_us"], "cpu"))
        s.rows.append(("CPU baseline", f"{cpu['min_us']:.2f} us per {cpu.get('per', engine.run_item)} "
                                       f"({cpu.get('flags', '')}); engine / CPU speed {b.get('cpu_ratio')}x"))
    else:
        s.missing.append(Missing("CPU baseline (plain C on this host)", f"metafab build {engine.name} --board "
                                 f"{b['board']} (measures it) or metafab bench --cpu"))
    for key, value in sorted((b.get("anchor") or {}).items()):
        label, kind = ANCHOR_LABELS.get(key, (f"{key} (anchor)", "other"))
        rows.append((label, float(value), kind))
    if b.get("anchor"):
        s.notes.append(f"anchors: {ANCHOR_SOURCE}")
    s.figures.append(Figure("latency", latency_bars(rows, title=f"{cfg.name}: batch-1 latency",
                                                    unit=engine.run_item),
                            f"one {engine.run_item}, batch 1; the engine at the clock its PLL makes"))
    return s


def generic_sections(engine, cfg, d: DesignReports) -> list[Section]:
    """The sections every engine's page has (:meth:`Engine.report_sections`' default); the config tables go
    last (:func:`config_section`, the page builder appends it)."""
    return [design_section(engine, cfg, d), verification_section(engine, cfg, d),
            utilisation_section(engine, cfg, d), timing_section(engine, cfg, d), latency_section(engine, cfg, d)]


# --- pages ------------------------------------------------------------------------------------------

def _template(name: str):
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("metafab.gen", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template(name)


def _version() -> str:
    from metafab.gen.cli import _version as v

    return v()


def design_page(d: DesignReports) -> str:
    """The HTML page of one design."""
    sections = [*d.engine.report_sections(d.cfg, d), config_section(d.engine, d.cfg, d)]
    return _template("report.html.j2").render(title=f"metafab report: {d.name}", heading=d.name,
                                               subtitle=f"{d.engine.title} ({d.engine.name})", sections=sections,
                                               index="index.html", version=_version())


def index_page(designs: list[DesignReports], skipped: list[str], sweeps: list[dict] | None = None) -> str:
    """The index: every design, what is built of it, and a link to its page; every sweep with a link."""
    rows = []
    for d in designs:
        b = d.board_build
        rows.append({
            "href": page_name(d), "design": d.name, "engine": d.engine.name,
            "verify": ("not run" if d.verify is None else
                       ("PASS" if d.engine.passed(d.verify) else "FAIL") + f", {d.verify['mismatches']} mismatches"),
            "build": ("not built" if b is None else f"{b['board']}: {b.get('clock_mhz') or '-'} MHz, "
                      f"Fmax {b.get('fmax_mhz')} MHz, {b.get('timing')}"),
        })
    studies = sorted({t for d in designs for t in d.studies})
    sweep_rows = [{"href": f"{SWEEPS_PAGE}#{_sweep_id(doc)}", "name": _sweep_name(doc), "engine": doc["engine"],
                   "stages": ", ".join(doc.get("stages", [])), "points": len(doc["points"]),
                   "failed": doc.get("failed", 0), "front": len(doc["pareto"]["keys"])} for doc in sweeps or []]
    return _template("report.html.j2").render(title="metafab report", heading="metafab report",
                                               subtitle="every design found under the build folder",
                                               designs=rows, studies=studies, skipped=skipped, sections=[],
                                               sweeps=sweep_rows, index=None, version=_version())


# --- sweeps -----------------------------------------------------------------------------------------

def find_sweeps(root: Path) -> tuple[list[dict], list[str]]:
    """The sweep documents ``<root>/sweeps/*.json`` (by file name) and notes on files that are not one."""
    docs, skipped = [], []
    for path in sorted((root / "sweeps").glob("*.json")):
        doc = _read_json(path)
        if doc is None or not isinstance(doc.get("points"), list) or "pareto" not in doc or "engine" not in doc:
            skipped.append(f"{path}: not a sweep document")
            continue
        doc["_file"] = path.stem
        docs.append(doc)
    return docs, skipped


def _sweep_name(doc: dict) -> str:
    return doc.get("_file") or doc["engine"]


def _sweep_id(doc: dict) -> str:
    return "sweep-" + "".join(c if c.isalnum() else "-" for c in _sweep_name(doc))


def sweep_section(doc: dict) -> Section:
    """One sweep: what ran, the Pareto figure, the table sorted by the objective, the best seeds."""
    from metafab.gen.report_figures import pareto_scatter
    from metafab.gen.sweep import best_seed_lines, sweep_table

    rows = doc["points"]
    objective = doc.get("objective", "latency_us")
    front = set(doc["pareto"]["keys"])
    axes = doc["pareto"]["axes"]
    s = Section(_sweep_id(doc), f"Sweep: {_sweep_name(doc)}")
    s.rows = [("engine", doc["engine"]), ("spec", doc.get("spec") or "-"), ("stages", ", ".join(doc.get("stages", []))),
              ("points", f"{len(rows)} ({doc.get('failed', 0)} failed)"), ("objective", objective),
              ("Pareto front", f"{len(front)} design(s): {' vs '.join(axes)}, all minimised; one point a design "
                               "(its best seed)"),
              ("results store", doc.get("store", "-"))]
    ok = [r for r in rows if r["status"] == "ok" and all(r["metrics"].get(a) is not None for a in axes)]
    if ok:
        # the first axis (latency or cycles) against the second (LUT or lanes); each design's best seed
        # is the point that stands for it, the other seeds are drawn as dominated points
        label = {"latency_us": "latency at the clock (us)", "lut": "LUTs", "cycles": "cycles per item",
                 "lanes": "MAC lanes"}
        pts = [(r["design"], float(r["metrics"][axes[1]]), float(r["metrics"][axes[0]]), r["key"] in front)
               for r in ok]
        s.figures.append(Figure("pareto", pareto_scatter(pts, title=f"{_sweep_name(doc)}: {axes[0]} vs {axes[1]}",
                                                         xlabel=label.get(axes[1], axes[1]),
                                                         ylabel=label.get(axes[0], axes[0]),
                                                         logx=axes[1] == "lanes", name=_sweep_id(doc)),
                                f"filled: the Pareto front ({' vs '.join(axes)}); hollow: dominated points "
                                "and the other seeds of a design"))
    head, table = sweep_table(doc)
    s.tables.append(Table(f"points, sorted by {objective} (* = Pareto front)", head, table))
    s.notes += best_seed_lines(doc)
    s.notes.append(f"{doc.get('ran', 0)} point(s) run, {doc.get('skipped', 0)} from the store, in "
                   f"{doc.get('seconds', 0.0):.1f} s")
    return s


def sweeps_page(sweeps: list[dict]) -> str:
    """The page of every sweep under the build folder."""
    return _template("report.html.j2").render(title="metafab report: sweeps", heading="sweeps",
                                               subtitle="metafab sweep results found under the build folder",
                                               sections=[sweep_section(doc) for doc in sweeps],
                                               index="index.html", version=_version())


def write_report(root: Path, out: Path) -> list[Path]:
    """The index, one page per design and the sweeps page under ``out``; returns the paths written (index
    first; none when the folder holds no report)."""
    designs, skipped = find_designs(root)
    sweeps, skipped_sweeps = find_sweeps(root)
    if not designs and not sweeps:
        return []
    out.mkdir(parents=True, exist_ok=True)
    pages = {"index.html": index_page(designs, skipped + skipped_sweeps, sweeps)}
    for d in designs:
        pages[page_name(d)] = design_page(d)
    if sweeps:
        pages[SWEEPS_PAGE] = sweeps_page(sweeps)
    for name, text in pages.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in pages]
