"""Precision study of the fixed-point similarity read-out: accuracy against float64 on digits episodes.

The same 5-way K-shot episodes of the meta-test digits (5-9) go through the
float64 read-outs (:mod:`matching`, :mod:`proto`) and through the bit-exact
fixed-point model (:mod:`match_fixed`) for a family of formats, on two
feature sets: the shipped embedding and raw pixels. Episodes are drawn as in
:func:`metafab.reference.study.digits_study` (same seed, same order), so the
float64 column reproduces that study's numbers.

Variants (``VARIANTS``): the operand-width family ``W`` (embeddings
``Q4.W-4``, unit rows ``Q2.W-2``, prototypes ``Q4.W-4``, an accumulator
with every product's fraction bits) with the default softmax, and at
``W = 16`` the softmax options: exp table size, table-only reciprocals,
truncation at every rounding point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from metafab.reference import digits, embedding, match_fixed, matching, mlp, proto
from metafab.reference.arrays import as_count
from metafab.reference.config import MatchConfig
from metafab.reference.errors import UserError
from metafab.reference.fixed import QFormat

__all__ = ["format_family", "VARIANTS", "PrecisionRow", "match_precision", "precision_markdown", "as_dicts"]


def format_family(width: int, mode: str = "matching", **overrides) -> MatchConfig:
    """The config whose multiplier operands are ``width`` bits (see the module docstring)."""
    if not 8 <= width <= 24:
        raise UserError(f"format family width must be in 8..24, got {width}")
    emb, unit, pro = QFormat(4, width - 4), QFormat(2, width - 2), QFormat(4, width - 4)
    frac = max(emb.frac_bits + unit.frac_bits, 2 * emb.frac_bits, 14)
    fields = dict(mode=mode, emb_fmt=emb, unit_fmt=unit, proto_fmt=pro, acc_fmt=QFormat(20, frac))
    fields.update(overrides)
    return MatchConfig(**fields)


_TRUNC = {name: "truncate" for name in MatchConfig.ROUNDING_POINTS}

#: (label, width, overrides) of each studied variant; the first W=16 one is the default config.
VARIANTS = (
    ("W=8", 8, {}),
    ("W=10", 10, {}),
    ("W=12", 12, {}),
    ("W=16", 16, {}),
    ("exp 8 bits", 16, {"exp_table_bits": 8}),
    ("exp 10 bits", 16, {"exp_table_bits": 10}),
    ("table 1/x", 16, {"recip_method": "table", "rsqrt_method": "table", "recip_table_bits": 10,
                       "rsqrt_table_bits": 10}),
    ("truncate", 16, _TRUNC),
)


@dataclass(frozen=True)
class PrecisionRow:
    features: str
    readout: str
    k: int
    variant: str
    accuracy_float64: float
    accuracy_fixed: float
    difference: float  # fixed - float64, accuracy points (percent)
    difference_ci95: float  # paired over episodes
    agreement: float  # fraction of queries with the same prediction


def _features(params):
    return {"embedding": lambda x: embedding.embed(params, x), "pixels": lambda x: x}


def match_precision(
    embedding_params,
    *,
    episodes: int = 1000,
    shots=(1, 5),
    n_way: int = 5,
    n_query: int = 15,
    seed: int = 2016,
    features=("embedding", "pixels"),
    variants=VARIANTS,
    progress=None,
) -> list[PrecisionRow]:
    """Query accuracy of the fixed-point read-out next to float64 on the same episodes (module docstring)."""
    episodes = as_count("episodes", episodes, minimum=2)
    params, shape = mlp.check_params(embedding_params, "embedding_params")
    if shape.layers[0] != digits.PIXELS:
        raise UserError(f"embedding_params must take {digits.PIXELS} inputs, got {shape.layers}")
    feats = _features(params)
    unknown = [f for f in features if f not in feats]
    if unknown:
        raise UserError(f"unknown features {unknown}; valid: {', '.join(feats)}")
    rng = np.random.default_rng(as_count("seed", seed))
    rows = []
    modes = (("matching", "matching"), ("prototypical", "proto"))
    for k in shots:
        sampler = digits.EpisodeSampler(classes=digits.META_TEST_CLASSES, n_way=n_way, k_shot=k,
                                        n_query=n_query)
        cfgs = {(mode, label): format_family(w, mode, n_way=n_way, k_shot=k, **over)
                for _, mode in modes for label, w, over in variants}
        acc_float = {(f, r): np.empty(episodes) for f in features for r, _ in modes}
        acc_fixed = {(f, r, v[0]): np.empty(episodes) for f in features for r, _ in modes for v in variants}
        agree = {key: np.empty(episodes) for key in acc_fixed}
        for e in range(episodes):
            ep = sampler(rng)
            for fname in features:
                s, q = feats[fname](ep.support), feats[fname](ep.query)
                _, pred_m = matching.readout(q, s, ep.support_labels, n_way)
                _, pred_p = proto.readout(q, proto.prototypes(s, ep.support_labels, n_way))
                float_pred = {"matching": pred_m, "prototypical": pred_p}
                for rname, mode in modes:
                    acc_float[fname, rname][e] = np.mean(float_pred[rname] == ep.query_labels)
                    for label, _, _ in variants:
                        cfg = cfgs[mode, label]
                        prep = match_fixed.prepare(match_fixed.quantize(s, cfg), ep.support_labels, cfg)
                        pred = match_fixed.readout(match_fixed.quantize(q, cfg), prep, cfg).pred
                        acc_fixed[fname, rname, label][e] = np.mean(pred == ep.query_labels)
                        agree[fname, rname, label][e] = np.mean(pred == float_pred[rname])
            if progress and (e + 1) % 200 == 0:
                progress(f"{k}-shot: {e + 1}/{episodes} episodes")
        for (fname, rname, label), fixed in acc_fixed.items():
            flt = acc_float[fname, rname]
            diff = 100.0 * (fixed - flt)
            half = 1.96 * diff.std(ddof=1) / np.sqrt(episodes)
            rows.append(PrecisionRow(fname, rname, k, label, float(100 * flt.mean()),
                                     float(100 * fixed.mean()), float(diff.mean()), float(half),
                                     float(agree[fname, rname, label].mean())))
    return rows


def precision_markdown(rows: list[PrecisionRow]) -> str:
    """Two markdown tables: accuracy (%) per operand width; agreement with float64 (%) per softmax option."""
    widths = [v for v in dict.fromkeys(r.variant for r in rows) if v.startswith("W=")]
    others = [v for v in dict.fromkeys(r.variant for r in rows) if not v.startswith("W=")]
    keys = list(dict.fromkeys((r.features, r.readout, r.k) for r in rows))
    by = {(r.features, r.readout, r.k, r.variant): r for r in rows}
    out = ["| features | read-out | K | float64 | " + " | ".join(widths) + " |",
           "|---|---|---|---|" + "---|" * len(widths)]
    for f, ro, k in keys:
        cells = [f"{by[f, ro, k, w].accuracy_fixed:.2f} ({by[f, ro, k, w].difference:+.2f})" for w in widths]
        out.append(f"| {f} | {ro} | {k} | {by[f, ro, k, widths[0]].accuracy_float64:.2f} | "
                   + " | ".join(cells) + " |")
    if others:
        cols = ["W=16"] + others if "W=16" in widths else others
        out += ["", "| features | read-out | K | " + " | ".join(cols) + " |",
                "|---|---|---|" + "---|" * len(cols)]
        for f, ro, k in keys:
            cells = [f"{100 * by[f, ro, k, v].agreement:.2f}" for v in cols]
            out.append(f"| {f} | {ro} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def as_dicts(rows) -> list[dict]:
    return [asdict(r) for r in rows]

