"""Precision study of the fixed-point MAML model: how many bits adaptation needs.

For a family of formats indexed by one width ``W`` (every multiplier
operand ``W`` bits), the bit-exact fixed-point model (:mod:`maml_fixed`)
adapts the shipped meta-trained init on held-out sinusoid tasks; the
float64 model (:mod:`maml`) adapts the same init on the same tasks. The
figure of merit is the ratio of the mean post-adaptation query MSEs
(fixed / float64); the project's target is <= 1.05.

Integer bits come from the value ranges seen with the shipped init on
600 tasks and 5 steps (weights up to 7.1, activations up to 9.3, errors up
to 4.9, lr-scaled deltas up to 0.14): activations and targets ``Q5.W-5``,
weights ``Q4.W-4``, lr-scaled deltas ``Q0.W`` (range +-0.5), the learning
rate constant ``UQ0.W-1`` (its signed operand is ``W`` bits), and an
accumulator with every product's fraction bits and 16 integer bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference import maml, maml_fixed
from metafab.reference.config import MamlConfig
from metafab.reference.errors import UserError

__all__ = ["format_family", "PrecisionRow", "maml_precision", "precision_markdown"]


def format_family(width: int, rounding: str = "half_even", **overrides) -> MamlConfig:
    """The MAML config whose operands are all ``width`` bits (see the module docstring).

    ``rounding`` applies to every named rounding point except the weight
    read (truncation, an identity here since master = weight).
    """
    if not 8 <= width <= 24:
        raise UserError(f"format family width must be in 8..24 (the accumulator then needs 60 bits), "
                        f"got {width}")
    act = fx.QFormat(5, width - 5)
    weight = fx.QFormat(4, width - 4)
    grad = fx.QFormat(0, width)
    lr = fx.QFormat(0, width - 1, signed=False)
    frac = max(act.frac_bits + weight.frac_bits, weight.frac_bits + grad.frac_bits,
               grad.frac_bits + act.frac_bits, lr.frac_bits + act.frac_bits)
    fields = dict(
        act_fmt=act, weight_fmt=weight, grad_fmt=grad, lr_fmt=lr, acc_fmt=fx.QFormat(16, frac),
        forward_rounding=rounding, error_rounding=rounding, backward_rounding=rounding,
        update_rounding=rounding,
    )
    fields.update(overrides)
    return MamlConfig(**fields)


@dataclass(frozen=True)
class PrecisionRow:
    width: int
    rounding: str
    steps: int
    mse_float64: float
    mse_fixed: float
    ratio: float
    ratio_ci95: float
    saturated_weights: int


def _float_query_mse(params, batch, steps: int, lr: float) -> np.ndarray:
    out = np.empty(len(batch.x_support))
    for i in range(len(out)):
        adapted = maml.adapt(params, batch.x_support[i], batch.y_support[i], steps, lr)
        out[i] = ((maml.forward(adapted, batch.x_query[i]) - batch.y_query[i]) ** 2).mean()
    return out


def maml_precision(
    params,
    *,
    widths=(12, 14, 16, 18, 20, 24),
    roundings=("half_even", "stochastic"),
    steps=(1, 5),
    n_tasks: int = 600,
    k_support: int = 10,
    n_query: int = 10,
    lr: float = 0.01,
    seed: int = 2015,
    progress=None,
) -> list[PrecisionRow]:
    """Post-adaptation query MSE of the fixed-point model relative to float64 (same tasks, same init).

    The ratio's 95 % interval comes from a paired bootstrap over tasks
    (1000 resamples, fixed seed).
    """
    from metafab.reference.sinusoid import SinusoidTasks

    if n_tasks < 2:
        raise UserError(f"n_tasks must be at least 2, got {n_tasks}")
    batch = SinusoidTasks(k_support=k_support, k_query=n_query).sample(np.random.default_rng(seed), n_tasks)
    boot = np.random.default_rng(seed + 1).integers(0, n_tasks, size=(1000, n_tasks))
    rows = []
    float_mse = {s: _float_query_mse(params, batch, s, lr) for s in steps}
    for width in widths:
        for rnd in roundings:
            for s in steps:
                cfg = format_family(width, rnd, steps=s, k_support=k_support, n_query=n_query, lr=lr)
                wq = maml_fixed.quantize_params(params, cfg)
                sat = int(sum(np.isin(w, [cfg.master_fmt.min_code, cfg.master_fmt.max_code]).sum()
                              for w in wq))
                fixed_mse = np.empty(n_tasks)
                for i in range(n_tasks):
                    xs = maml_fixed.quantize_inputs(batch.x_support[i], cfg)
                    ys = maml_fixed.quantize_inputs(batch.y_support[i], cfg)
                    xq = maml_fixed.quantize_inputs(batch.x_query[i], cfg)
                    y = maml_fixed.run_task(wq, xs, ys, xq, cfg).y_query
                    fixed_mse[i] = ((fx.to_float(y, cfg.act_fmt) - batch.y_query[i]) ** 2).mean()
                fm = float_mse[s]
                ratio = fixed_mse.mean() / fm.mean()
                bs = fixed_mse[boot].mean(axis=1) / fm[boot].mean(axis=1)
                lo, hi = np.percentile(bs, [2.5, 97.5])
                rows.append(PrecisionRow(width, rnd, s, float(fm.mean()), float(fixed_mse.mean()),
                                         float(ratio), float((hi - lo) / 2), sat))
                if progress:
                    progress(f"width {width:2d} {rnd:10s} steps {s}: ratio {ratio:.4f}")
    return rows


def precision_markdown(rows: list[PrecisionRow]) -> str:
    """The study as a markdown table: one row per width and rounding, a ratio column per step count."""
    steps = sorted({r.steps for r in rows})
    head = "| W (bits) | rounding | " + " | ".join(f"fixed/float64 MSE, {s} step{'s' * (s > 1)}"
                                                  for s in steps) + " |"
    sep = "|---|---|" + "---|" * len(steps)
    lines = [head, sep]
    keys = []
    for r in rows:
        if (r.width, r.rounding) not in keys:
            keys.append((r.width, r.rounding))
    by = {(r.width, r.rounding, r.steps): r for r in rows}
    for w, rnd in keys:
        cells = []
        for s in steps:
            r = by[(w, rnd, s)]
            cells.append(f"{r.ratio:.4f} +- {r.ratio_ci95:.4f}")
        lines.append(f"| {w} | {rnd} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def as_dicts(rows) -> list[dict]:
    return [asdict(r) for r in rows]
