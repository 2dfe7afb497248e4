"""The report's figures: matplotlib (Agg, headless) charts rendered to SVG text, byte-identical for the
same inputs.

Each function takes plain numbers (no report dicts: :mod:`metafab.gen.report_page` and the engines pick
the numbers) and returns the SVG document of one figure, ready to be inlined in an HTML page. The SVG
has no date (``metadata={"Date": None}``) and its element ids come from ``svg.hashsalt`` set to the
figure's name, so two figures on one page never share an id and a figure never changes unless its
numbers do.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless; the figures are SVG, but nothing may reach for a display

from matplotlib.figure import Figure  # noqa: E402 - after the backend is chosen
from matplotlib.patches import Patch  # noqa: E402

__all__ = ["to_svg", "utilisation_bars", "latency_bars", "gantt", "curves", "pareto_scatter", "PALETTE"]

#: The colours of the report (colour-blind safe, Okabe-Ito), in the order series take them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "svg.fonttype": "none",  # text stays text: small files, selectable in the page
}


def to_svg(fig: Figure, name: str) -> str:
    """``fig`` as an SVG document without the XML prolog (to inline in HTML); ``name`` salts its ids."""
    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"metafab-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), dpi=96, layout="constrained")


def utilisation_bars(rows: list[tuple[str, int, int]], *, title: str, name: str = "utilisation") -> str:
    """Horizontal bars, one per resource: ``used`` of ``available`` as a percentage, labelled with both."""
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 0.45 * len(rows) + 0.9)
        ax = fig.add_subplot()
        labels = [r[0] for r in rows][::-1]
        pct = [100 * used / avail if avail else 0.0 for _, used, avail in rows][::-1]
        ax.barh(labels, [100] * len(rows), color="#e8e8e8", height=0.6)
        ax.barh(labels, pct, color=[PALETTE[3] if p > 90 else PALETTE[0] for p in pct], height=0.6)
        for y, (p, (_, used, avail)) in enumerate(zip(pct, rows[::-1], strict=True)):
            ax.text(min(p, 100) + 1.5, y, f"{used:,} / {avail:,} ({p:.1f} %)", va="center", fontsize=8)
        ax.set_xlim(0, 135)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel("used, % of the device")
        ax.set_title(title, loc="left")
        return to_svg(fig, name)


def latency_bars(rows: list[tuple[str, float, str]], *, title: str, unit: str, name: str = "latency") -> str:
    """Horizontal bars of latencies in microseconds on a log axis; ``rows`` are ``(label, us, kind)`` and
    ``kind`` (``engine``, ``cpu``, ``gpu``, ``other``) picks the colour."""
    colour = {"engine": PALETTE[0], "cpu": PALETTE[1], "gpu": PALETTE[2], "other": "#999999"}
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 0.45 * len(rows) + 1.0)
        ax = fig.add_subplot()
        labels = [r[0] for r in rows][::-1]
        values = [r[1] for r in rows][::-1]
        ax.barh(labels, values, color=[colour.get(r[2], colour["other"]) for r in rows][::-1], height=0.6)
        for y, v in enumerate(values):
            ax.text(v * 1.12, y, f"{v:.0f} us" if v >= 100 else f"{v:.3g} us", va="center", fontsize=8)
        ax.set_xscale("log")
        lo, hi = min(values), max(values)
        ax.set_xlim(10 ** math.floor(math.log10(lo)), 10 ** (math.ceil(math.log10(hi)) + 0.6))
        ax.set_xlabel(f"microseconds per {unit} (log scale; shorter is faster)")
        ax.set_title(title, loc="left")
        return to_svg(fig, name)


def gantt(rows: list[tuple[str, list[tuple[float, float, str]]]], *, title: str, xlabel: str,
          phases: list[str], notes: dict[str, list[str]] | None = None, name: str = "gantt") -> str:
    """A Gantt chart: one lane per row label, each segment ``(start, length, phase)``; one colour per phase
    (legend in ``phases`` order); ``notes[row]`` is text written on the row's segments, in order."""
    colours = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(phases)}
    with matplotlib.rc_context(_RC):
        fig = _figure(7.2, 0.32 * len(rows) + 1.9)
        ax = fig.add_subplot()
        end = max((s + n for _, segs in rows for s, n, _ in segs), default=1)
        for y, (label, segs) in enumerate(rows):
            texts = (notes or {}).get(label, [])
            for k, (start, length, phase) in enumerate(segs):
                ax.barh(y, length, left=start, height=0.62, color=colours[phase], edgecolor="white", linewidth=0.4)
                if k < len(texts) and texts[k]:
                    # inside the bar when it fits (7-point text on a ~470-point wide axis), else beside it
                    if length > len(texts[k]) * 4.4 * end / 470:
                        x, ha, colour = start + length / 2, "center", "white"
                    elif start + length > 0.6 * end:
                        x, ha, colour = start - 0.005 * end, "right", "#333333"
                    else:
                        x, ha, colour = start + length + 0.005 * end, "left", "#333333"
                    ax.text(x, y, texts[k], va="center", ha=ha, fontsize=7, color=colour)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, end * 1.02)
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        handles = [Patch(color=colours[p], label=p) for p in phases]
        fig.legend(handles=handles, loc="outside lower center", fontsize=7, frameon=False, ncols=min(4, len(phases)))
        return to_svg(fig, name)


def curves(series: list[tuple[str, list[float], list[float], list[float] | None]], *, title: str, xlabel: str,
           ylabel: str, logy: bool = False, hline: tuple[float, str] | None = None, name: str = "curves") -> str:
    """Lines with markers (and error bars when a series has them): ``(label, xs, ys, yerr)`` per series;
    ``hline`` draws a labelled reference level (e.g. a ratio of 1)."""
    with matplotlib.rc_context(_RC):
        fig = _figure(6.0, 3.4)
        ax = fig.add_subplot()
        markers = "osD^v<>p"
        for i, (label, xs, ys, err) in enumerate(series):
            ax.errorbar(xs, ys, yerr=err, label=label, color=PALETTE[i % len(PALETTE)], marker=markers[i % 8],
                        markersize=4, linewidth=1.2, capsize=2)
        if hline is not None:
            ax.axhline(hline[0], color="#777777", linewidth=0.8, linestyle="--")
            ax.text(ax.get_xlim()[1], hline[0], f" {hline[1]}", va="bottom", ha="right", fontsize=7, color="#555555")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        ax.grid(True, linewidth=0.3, alpha=0.6)
        ax.legend(fontsize=7, frameon=False)
        return to_svg(fig, name)


def pareto_scatter(points: list[tuple[str, float, float, bool]], *, title: str, xlabel: str, ylabel: str,
                   logx: bool = False, name: str = "pareto") -> str:
    """A scatter of design points ``(label, x, y, on_front)`` (both axes minimised): the points on the
    Pareto front are filled, labelled and joined by a step line; the others are hollow grey."""
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 3.6)
        ax = fig.add_subplot()
        rest = [(x, y) for _, x, y, on in points if not on]
        front = sorted((x, y, label) for label, x, y, on in points if on)
        if rest:
            ax.scatter(*zip(*rest, strict=True), s=22, facecolors="none", edgecolors="#999999", linewidths=0.9,
                       label="dominated")
        if front:
            xs, ys, labels = zip(*front, strict=True)
            ax.step(xs, ys, where="post", color=PALETTE[0], linewidth=0.9, alpha=0.7)
            ax.scatter(xs, ys, s=30, color=PALETTE[0], zorder=3, label="Pareto front")
            for x, y, label in front:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color="#333333")
        if logx:  # powers of two (lane counts): ticks at the values, written plainly
            from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

            ax.set_xscale("log", base=2)
            xs_all = sorted({x for _, x, _, _ in points})
            ax.xaxis.set_major_locator(FixedLocator(xs_all))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        ax.grid(True, linewidth=0.3, alpha=0.6)
        ax.legend(fontsize=7, frameon=False)
        return to_svg(fig, name)
