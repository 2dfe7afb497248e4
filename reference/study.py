"""The paper-claim tables: MAML versus a pretrained init on sinusoids, few-shot digits accuracy.

Sinusoid study (Finn et al. 2017, section 5.1): for ``n_tasks`` held-out
tasks, adapt an initialisation with plain SGD (step size ``lr``) on ``K``
support points and measure the query MSE (on ``n_query`` fresh points per
task) after each number of steps. Both initialisations see the same tasks.

Digits study (Vinyals et al. 2016; Snell et al. 2017): over ``episodes``
5-way K-shot episodes from the meta-test digits, the query accuracy of the
Matching read-out (cosine attention) and the Prototypical read-out (squared
Euclidean distance to class means), on raw pixels and on the trained
embedding. All four combinations see the same episodes.

Intervals are 95 % normal intervals of the mean over tasks (episodes):
``mean +- 1.96 * std / sqrt(n)`` with the sample standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from metafab.reference import digits, embedding, inner_loop, matching, mlp, proto
from metafab.reference.arrays import as_count, as_rate
from metafab.reference.errors import UserError
from metafab.reference.sinusoid import SinusoidTasks

__all__ = [
    "SinusoidRow",
    "DigitsRow",
    "interval",
    "sinusoid_study",
    "digits_study",
    "sinusoid_markdown",
    "digits_markdown",
    "as_dicts",
]

Z_95 = 1.959963984540054


def interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % half-width ``1.96 * std / sqrt(n)`` of finite float64 ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(Z_95 * values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class SinusoidRow:
    """Query MSE of one initialisation after ``steps`` SGD steps on ``k`` support points.

    ``mse`` (mean), ``ci95`` and ``median`` are over the tasks whose loss stayed
    finite; ``diverged`` counts the tasks whose adaptation overflowed (0 in a
    healthy run).
    """

    init: str
    k: int
    steps: int
    mse: float
    ci95: float
    median: float
    diverged: int


@dataclass(frozen=True)
class DigitsRow:
    """Mean query accuracy (fraction) of one features/read-out pair on ``k``-shot episodes."""

    features: str
    readout: str
    k: int
    accuracy: float
    ci95: float


def _query_losses(params, tasks, steps: tuple[int, ...], lr: float) -> dict[int, np.ndarray]:
    """Per-task query MSE after each requested number of SGD steps (inf where diverged)."""
    out = {}
    theta = params
    done = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for s in sorted(steps):
            theta = inner_loop.adapt(theta, tasks.x_support, tasks.y_support, s - done, lr)
            done = s
            loss = mlp.mse(mlp.forward_trace(theta, tasks.x_query).output, tasks.y_query)
            out[s] = np.where(np.isfinite(loss), loss, np.inf)
    return out


def sinusoid_study(
    inits: dict,
    *,
    n_tasks: int = 600,
    shots: tuple[int, ...] = (5, 10),
    steps: tuple[int, ...] = (0, 1, 10),
    lr: float = 0.01,
    n_query: int = 100,
    seed: int = 2017,
) -> list[SinusoidRow]:
    """Query MSE after adaptation for each initialisation, support size and step count.

    Parameters
    ----------
    inits : dict of str -> list of (W, b)
        Named initialisations of the same 1-in 1-out network, e.g.
        ``{"MAML": ..., "pretrained": ...}``.
    n_tasks : int
        Held-out tasks per support size.
    shots : tuple of int
        Support sizes K.
    steps : tuple of int
        Numbers of SGD steps to report.
    lr : float
        SGD step size.
    n_query : int
        Query points per task.
    seed : int
        Seed of the task generator (draws the tasks of each K in turn).

    Returns
    -------
    list of SinusoidRow
        Ordered by K, then initialisation, then steps.
    """
    n_tasks = as_count("n_tasks", n_tasks, minimum=2)
    n_query = as_count("n_query", n_query, minimum=1)
    lr = as_rate("lr", lr)
    steps = tuple(as_count("steps", s) for s in steps)
    checked = {}
    for name, params in inits.items():
        params, shape = mlp.check_params(params, name)
        if shape.layers[0] != 1 or shape.layers[-1] != 1 or shape.n_tasks is not None:
            raise UserError(f"{name} must be one network with 1 input and 1 output, got {shape}")
        checked[name] = params
    rng = np.random.default_rng(as_count("seed", seed))
    rows = []
    for k in shots:
        tasks = SinusoidTasks(k_support=k, k_query=n_query).sample(rng, n_tasks)
        for name, params in checked.items():
            losses = _query_losses(params, tasks, steps, lr)
            for s in steps:
                finite = losses[s][np.isfinite(losses[s])]
                mean, half = interval(finite) if finite.size else (math.inf, math.inf)
                median = float(np.median(finite)) if finite.size else math.inf
                diverged = int(n_tasks - finite.size)
                rows.append(SinusoidRow(name, k, s, mean, half, median, diverged))
    return rows


def _pixels(x: np.ndarray) -> np.ndarray:
    return x


def digits_study(
    embedding_params,
    *,
    episodes: int = 1000,
    shots: tuple[int, ...] = (1, 5),
    n_way: int = 5,
    n_query: int = 15,
    seed: int = 2016,
) -> list[DigitsRow]:
    """Few-shot accuracy on the meta-test digits for pixels and embedding, both read-outs.

    Parameters
    ----------
    embedding_params : list of (W, b)
        The embedding network (64 inputs), see :mod:`metafab.reference.embedding`.
    episodes : int
        Episodes per shot count.
    shots : tuple of int
        Support images per class K.
    n_way : int
        Classes per episode.
    n_query : int
        Query images per class.
    seed : int
        Seed of the episode generator (draws the episodes of each K in turn).

    Returns
    -------
    list of DigitsRow
        Ordered by K, then features (pixels, embedding), then read-out.
    """
    episodes = as_count("episodes", episodes, minimum=2)
    params, shape = mlp.check_params(embedding_params, "embedding_params")
    if shape.layers[0] != digits.PIXELS:
        raise UserError(f"embedding_params must take {digits.PIXELS} inputs, got {shape.layers}")
    features = {"pixels": _pixels, "embedding": lambda x: embedding.embed(params, x)}
    rng = np.random.default_rng(as_count("seed", seed))
    rows = []
    for k in shots:
        sampler = digits.EpisodeSampler(
            classes=digits.META_TEST_CLASSES, n_way=n_way, k_shot=k, n_query=n_query
        )
        acc = {(f, r): np.empty(episodes) for f in features for r in ("matching", "prototypical")}
        for e in range(episodes):
            ep = sampler(rng)
            for fname, f in features.items():
                s, q = f(ep.support), f(ep.query)
                _, pred_m = matching.readout(q, s, ep.support_labels, n_way)
                _, pred_p = proto.readout(q, proto.prototypes(s, ep.support_labels, n_way))
                acc[fname, "matching"][e] = np.mean(pred_m == ep.query_labels)
                acc[fname, "prototypical"][e] = np.mean(pred_p == ep.query_labels)
        for (fname, rname), values in acc.items():
            mean, half = interval(values)
            rows.append(DigitsRow(fname, rname, k, mean, half))
    return rows


def _cell(mean: float, half: float, scale: float = 1.0, digits_after: int = 3) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean * scale:.{digits_after}f} ± {half * scale:.{digits_after}f}"


def sinusoid_markdown(rows: list[SinusoidRow]) -> str:
    """A markdown table: one line per (K, init), one column per step count."""
    steps = sorted({r.steps for r in rows})
    head = "| K | init | " + " | ".join(f"{s} step{'s' * (s != 1)}" for s in steps) + " |"
    lines = [head, "|" + "---|" * (len(steps) + 2)]
    keys = list(dict.fromkeys((r.k, r.init) for r in rows))
    for k, init in keys:
        cells = []
        for s in steps:
            row = next(r for r in rows if (r.k, r.init, r.steps) == (k, init, s))
            cell = _cell(row.mse, row.ci95)
            if row.diverged:
                cell += f" ({row.diverged} diverged)"
            cells.append(cell)
        lines.append(f"| {k} | {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def digits_markdown(rows: list[DigitsRow]) -> str:
    """A markdown table of accuracy (%): one line per (features, read-out), one column per K."""
    shots = sorted({r.k for r in rows})
    head = "| features | read-out | " + " | ".join(f"{k}-shot (%)" for k in shots) + " |"
    lines = [head, "|" + "---|" * (len(shots) + 2)]
    for f, r in dict.fromkeys((row.features, row.readout) for row in rows):
        cells = [
            _cell(row.accuracy, row.ci95, 100.0, 1)
            for k in shots
            for row in rows
            if (row.features, row.readout, row.k) == (f, r, k)
        ]
        lines.append(f"| {f} | {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def as_dicts(rows) -> list[dict]:
    """Rows as plain dicts (for JSON); infinite values become ``None``."""
    out = []
    for row in rows:
        d = asdict(row)
        out.append(
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()
            }
        )
    return out
