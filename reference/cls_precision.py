"""Precision study of the fixed-point classifier: accuracy after adaptation, fixed point vs float64.

For a family of formats indexed by one width ``W`` (every multiplier
operand ``W`` bits: activations ``Q6.W-6``, weights ``Q2.W-2``, lr-scaled
deltas ``Q0.W``, the learning-rate constant ``UQ0.W-1``, probabilities
``UQ1.W-3``, an accumulator holding every product exactly), the bit-exact
model (:mod:`metafab.reference.maml_cls_fixed`) adapts a meta-trained
classifier on glyph test episodes and classifies their queries; the float64
model (:mod:`metafab.reference.classify`) does the same from the same float
weights on the same episodes. The figure of merit is the difference of the
mean query accuracies (fixed - float64, in points, with a paired 95 %
interval over episodes); the project's target is within 1 point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from metafab.reference import classify, glyphs
from metafab.reference import fixed as fx
from metafab.reference import maml_cls_fixed as cf
from metafab.reference import maml_fixed as mf
from metafab.reference.config import MamlClsConfig
from metafab.reference.errors import UserError

__all__ = ["cls_format_family", "ClsPrecisionRow", "cls_precision", "cls_precision_markdown", "as_dicts"]


def cls_format_family(width: int, **fields) -> MamlClsConfig:
    """The classifier config whose operands are all ``width`` bits (see the module docstring)."""
    if not 10 <= width <= 24:
        raise UserError(f"format family width must be in 10..24, got {width}")
    act, weight, grad = fx.QFormat(6, width - 6), fx.QFormat(2, width - 2), fx.QFormat(0, width)
    lr, prob = fx.QFormat(0, width - 1, signed=False), fx.QFormat(1, width - 3, signed=False)
    frac = max(act.frac_bits + weight.frac_bits, weight.frac_bits + grad.frac_bits,
               grad.frac_bits + act.frac_bits, prob.frac_bits + lr.frac_bits)
    # the exp table's step may not be finer than the logits' (exp_range 8: 3 index bits per unit)
    table = min(10, act.frac_bits + 3)
    return MamlClsConfig(**{"act_fmt": act, "weight_fmt": weight, "grad_fmt": grad, "lr_fmt": lr,
                            "prob_fmt": prob, "acc_fmt": fx.QFormat(16, frac), "exp_table_bits": table, **fields})


@dataclass(frozen=True)
class ClsPrecisionRow:
    width: int
    steps: int
    accuracy_float64: float
    accuracy_fixed: float
    difference: float  # points, fixed - float64
    difference_ci95: float
    agreement: float  # fraction of queries whose class is the same in both
    saturated_weights: int


def cls_precision(params, *, widths=(10, 12, 14, 16, 18), steps=(1, 5), n_way: int = 5, k_shot: int = 1,
                  n_query: int = 15, n_episodes: int = 200, lr: float = 0.4, adapt_layers: str = "all",
                  seed: int = 2020, lanes: int = 16, progress=None) -> list[ClsPrecisionRow]:
    """Query accuracy of the fixed-point classifier and of float64 on the same test episodes (see module)."""
    if n_episodes < 2:
        raise UserError(f"n_episodes must be at least 2, got {n_episodes}")
    sampler = glyphs.EpisodeSampler(split="test", n_way=n_way, k_shot=k_shot, n_query=n_query)
    eps = list(glyphs.episodes(sampler, n_episodes, seed))
    layers = None if adapt_layers == "all" else classify.anil_layers(len(params))
    rows = []
    for s in steps:
        float_acc, float_pred = [], []
        for ep in eps:
            adapted = classify.adapt(params, ep.support, ep.support_labels, s, lr, layers=layers)
            _, pred = classify.predict(adapted, ep.query)
            float_pred.append(pred)
            float_acc.append(np.mean(pred == ep.query_labels))
        float_acc = np.asarray(float_acc) * 100
        for width in widths:
            cfg = cls_format_family(width, layers=(ep.support.shape[1], *[w.shape[0] for w, _ in params]),
                                    k_support=n_way * k_shot, n_query=n_way * n_query, steps=s, lr=lr,
                                    adapt_layers=adapt_layers, lanes=lanes)
            wq = mf.quantize_params(params, cfg)
            sat = int(sum(np.isin(w, [cfg.master_fmt.min_code, cfg.master_fmt.max_code]).sum() for w in wq))
            acc, same = [], []
            for ep, fp in zip(eps, float_pred, strict=True):
                res = cf.run_task(wq, mf.quantize_inputs(ep.support, cfg), ep.support_labels,
                                  mf.quantize_inputs(ep.query, cfg), cfg)
                acc.append(np.mean(res.pred == ep.query_labels))
                same.append(np.mean(res.pred == fp))
            acc = np.asarray(acc) * 100
            diff = acc - float_acc
            rows.append(ClsPrecisionRow(width, s, float(float_acc.mean()), float(acc.mean()), float(diff.mean()),
                                        float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))),
                                        float(np.mean(same)), sat))
            if progress:
                progress(f"width {width:2d} steps {s}: fixed {acc.mean():.2f} % vs float64 {float_acc.mean():.2f} %")
    return rows


def cls_precision_markdown(rows: list[ClsPrecisionRow]) -> str:
    """The study as a markdown table, one row per width and step count."""
    lines = ["| W (bits) | steps | float64 accuracy % | fixed accuracy % | fixed - float64 (points) | same class |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.width} | {r.steps} | {r.accuracy_float64:.2f} | {r.accuracy_fixed:.2f} | "
                     f"{r.difference:+.2f} +- {r.difference_ci95:.2f} | {100 * r.agreement:.1f} % |")
    return "\n".join(lines)


def as_dicts(rows) -> list[dict]:
    return [asdict(r) for r in rows]
