"""``metafab import MODEL``: a model made outside metafab into a weight file the MAML engines take.

Reads an ONNX graph, a safetensors file or an ``.npz`` archive
(:mod:`metafab.gen.model_import`), checks it against a design of the engine it
fits (``maml`` for a plain MLP, ``maml-cls`` when the graph ends in a Softmax),
reports how its weights fare in the design's number formats (saturated, rounded
to zero, the float64 vs fixed-point agreement on a sample batch) and writes
``DIR/weights.npz`` (metafab's weight file: ``--weights DIR/weights.npz`` on
``generate``, ``sim``, ``verify``, ``build`` and ``run``) and ``DIR/import.json``.
``--fit-formats`` proposes formats that hold the model's range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metafab.gen.cli import progress
from metafab.reference.errors import UserError

__all__ = ["register", "run", "import_model"]

HELP = "import an ONNX / safetensors / npz MLP: check it in the design's formats, write a metafab weight file"


def register(sub) -> None:
    p = sub.add_parser("import", help=HELP, description=HELP + ". " + (__doc__.split("\n\n")[1].replace("\n", " ")))
    p.add_argument("model", metavar="MODEL", help="the model file: .onnx, .safetensors or .npz")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="output folder (default: build/import/<model name>)")
    p.add_argument("--engine", choices=("maml", "maml-cls"),
                   help="the engine the model is for (default: maml-cls if the graph ends in a Softmax, else maml)")
    p.add_argument("--map", metavar="W0=NAME,b0=NAME,...",
                   help="which tensors are which layer's weights and biases, when the names do not follow "
                   "nn.Sequential's ('0.weight', '0.bias', '2.weight', ...)")
    p.add_argument("--config", metavar="FILE", help="TOML file with the design's config fields (formats, lanes, ...)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config field (repeatable), e.g. --set master_fmt=Q4.12")
    p.add_argument("--fit-formats", action="store_true",
                   help="propose weight and activation formats of the same widths that hold the model's range")
    p.add_argument("--samples", type=int, default=256, help="sample inputs of the agreement check (default 256)")
    p.add_argument("--input-range", metavar="LO,HI", type=_range,
                   help="the range of the sample inputs, uniform (default: -4,4 or the activation format's range "
                   "if smaller); e.g. 0,1 for pixels")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def _range(text: str):
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LO,HI (two numbers), got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"LO must be below HI, got {text!r}")
    return lo, hi


def import_model(path, *, out=None, engine: str | None = None, tensor_map: str | None = None,
                 config: str | None = None, sets=(), fit_formats: bool = False, samples: int = 256,
                 input_range=None, progress=None) -> dict:
    """Import the model file ``path``; the report (the ``--json`` document of ``metafab import``).

    The report holds the model (``layers``, ``softmax``, ``source``, ``notes``), the design it was checked
    against (``engine``, ``design``, ``config``), the quantisation figures
    (:func:`metafab.gen.model_import.quantisation_report`), with ``fit_formats`` the proposal, and the
    files written (``weights``, ``report``).
    """
    from metafab.gen import model_import as mi
    from metafab.gen.engines import get_engine

    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    model = mi.read_model(path, tensor_map=tensor_map)
    name = engine or ("maml-cls" if model.softmax else "maml")
    spec = get_engine(name)
    if name == "maml" and model.softmax:
        raise UserError(f"the model in {str(path)!r} ends in a Softmax (a classifier): import it for maml-cls")
    ns = argparse.Namespace(engine=name, config=config, set=list(sets), weights=str(path), map=tensor_map)
    for f in spec.design_flags:
        setattr(ns, f.dest, None)
    cfg = spec.config(ns)
    if tuple(cfg.layers) != tuple(model.layers):
        raise UserError(f"the model has layers {'-'.join(map(str, model.layers))}, the config "
                        f"{'-'.join(map(str, cfg.layers))}; leave layers out of --config / --set")
    if progress:
        progress(f"checking {len(model.params)} layer(s), {sum(w.size + b.size for w, b in model.params)} "
                 f"parameters in {cfg.name}'s formats on {samples} sample inputs")
    report = {
        "model": str(path), "source": model.source, "layers": list(model.layers), "softmax": model.softmax,
        "notes": list(model.notes), "names": [list(n) for n in model.names], "engine": name, "design": cfg.name,
        "config": cfg.to_dict(),
        "quantisation": mi.quantisation_report(model, cfg, samples=samples, input_range=input_range),
    }
    if fit_formats:
        report["fit_formats"] = mi.fit_formats(model, cfg, samples=samples, input_range=input_range)
    if out is None:
        from metafab.sim.runner import build_root

        out = build_root() / "import" / Path(path).stem
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = mi.write_imported(model, out / "weights.npz")
    report["weights"] = str(weights)
    report["report"] = str(out / "import.json")
    (out / "import.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def format_report(r: dict) -> str:
    q = r["quantisation"]
    lines = [f"{r['model']}: {r['source']}", f"  layers {'-'.join(map(str, r['layers']))}"
             + (", softmax output (classifier)" if r["softmax"] else ", linear output"),
             f"  checked as engine {r['engine']}, design {r['design']}"]
    lines += [f"  note: {n}" for n in r["notes"]]
    fm = q.get("formats", {})
    lines.append(f"  formats: master {fm.get('master_fmt')}, weight operand {fm.get('weight_fmt')}, "
                 f"activations {fm.get('act_fmt')}")
    for n, layer in enumerate(q.get("layers", [])):
        lines.append(f"  layer {n}: {layer['count']} values, {layer['saturated']} saturate, "
                     f"{layer['to_zero']} round to zero, max rounding error {layer['max_abs_error']:.3g}")
    t = q.get("total", {})
    if t:
        operand = f", {t['saturated_weight_fmt']} in the operand format" if "saturated_weight_fmt" in t else ""
        lines.append(f"  total: {t['count']} values, {t['saturated']} saturate in the master format{operand}, "
                     f"{t['to_zero']} round to zero")
    a = q.get("agreement", {})
    if a:
        lo, hi = a.get("input_range", (None, None))
        text = (f"  float64 vs fixed point on {a.get('samples')} sample inputs in [{lo:g}, {hi:g}]: max |error| "
                f"{a['max_abs_error']:.4g}, rms {a['rms_error']:.4g}")
        if a.get("argmax_agreement") is not None:
            text += f", same class on {100 * a['argmax_agreement']:.1f} %"
        lines.append(text)
    if "fit_formats" in r:
        f = {k: v for k, v in r["fit_formats"].items() if k != "why"}
        lines.append("  formats that hold the range: " + ", ".join(f"{k} {v}" for k, v in f.items()))
        lines.append("    use them: " + " ".join(f"--set {k}={v}" for k, v in f.items()))
    lines.append(f"wrote {r['weights']} and {r['report']}")
    lines.append(f"use it: metafab verify {r['engine']} --weights {r['weights']}")
    return "\n".join(lines)


def run(args) -> int:
    r = import_model(args.model, out=args.out, engine=args.engine, tensor_map=args.map, config=args.config,
                     sets=args.set, fit_formats=args.fit_formats, samples=args.samples,
                     input_range=args.input_range, progress=progress)
    print(json.dumps(r, indent=2, sort_keys=True) if args.json else format_report(r))
    return 0
