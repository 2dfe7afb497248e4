"""``metafab train {sinusoid,digits,glyphs,glyph-encoder}``: meta-train the shipped default weights, reproducibly.

The written file is byte-identical for the same options, the same numpy build
and the same CPU family; its metadata records the exact command that
reproduces it (without ``--out``, which does not change the contents).

Training runs with the BLAS library limited to one thread: OpenBLAS splits
large matrix products differently for different thread counts, which changes
the last bits of the result (and, for these small matrices, one thread is
also the fastest).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from metafab.reference import classify, digits, embedding, glyphs, inner_loop, maml, meta_train, weights
from metafab.reference.arrays import as_count, as_rate
from metafab.reference.errors import UserError
from metafab.reference.sinusoid import SinusoidTasks

__all__ = ["register", "run"]

SINUSOID_DEFAULTS = {
    "method": "maml",
    "layers": "1-40-40-1",
    "seed": 0,
    "iterations": 70000,
    "meta_batch": 25,
    "k_shot": 10,
    "k_query": 10,
    "inner_steps": 1,
    "inner_lr": 0.01,
    "meta_lr": 0.001,
}

DIGITS_DEFAULTS = {
    "layers": "64-128-64",
    "seed": 0,
    "iterations": 2000,
    "n_way": 5,
    "k_shot": 5,
    "n_query": 15,
    "lr": 0.001,
}


GLYPHS_DEFAULTS = {
    "method": "fomaml",
    "layers": "256-128-64-64-5",
    "seed": 0,
    "iterations": 3000,
    "meta_batch": 16,
    "k_shot": 1,
    "n_query": 15,
    "inner_steps": 5,
    "inner_lr": 0.4,
    "meta_lr": 0.001,
}

#: Classification methods of ``metafab train glyphs``; ``pretrain`` is the baseline: one classifier over
#: every meta-train class, its head swapped for a zero N-way head (fine-tuned per episode).
GLYPH_METHODS = ("maml", "fomaml", "reptile", "pretrain")


def register(subparsers) -> None:
    """Add ``train`` and its two targets to the ``metafab`` parser."""
    parser = subparsers.add_parser(
        "train",
        help="meta-train the shipped default weights (sinusoid MAML init, digits embedding, glyph classifier)",
        description="Meta-train a network in float64 numpy and write a reproducible weights "
        "file (.npz with the parameters and the command that made them).",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    sin = targets.add_parser(
        "sinusoid",
        help="MAML (or first-order MAML, Reptile, joint baseline) on sinusoid regression",
        description="Meta-train the initial weights of an MLP regressor on sinusoid tasks "
        "(Finn et al. 2017): Adam outer steps over meta-batches of tasks, plain SGD inside.",
    )
    d = SINUSOID_DEFAULTS
    sin.add_argument(
        "--method",
        choices=meta_train.METHODS,
        default=d["method"],
        help="outer gradient: second-order MAML, first-order MAML, Reptile, or "
        "'joint' (the pretrained baseline: one net regressed on all tasks) "
        "(default: %(default)s)",
    )
    sin.add_argument(
        "--layers",
        default=d["layers"],
        help="layer widths, input first, 1 in and 1 out (default: %(default)s)",
    )
    sin.add_argument("--seed", type=int, default=d["seed"], help="seed (default: %(default)s)")
    sin.add_argument(
        "--iterations",
        type=int,
        default=d["iterations"],
        help="outer Adam steps (default: %(default)s)",
    )
    sin.add_argument(
        "--meta-batch",
        type=int,
        default=d["meta_batch"],
        help="tasks per outer step (default: %(default)s)",
    )
    sin.add_argument(
        "--k-shot",
        type=int,
        default=d["k_shot"],
        help="support points per task, K (default: %(default)s)",
    )
    sin.add_argument(
        "--k-query",
        type=int,
        default=d["k_query"],
        help="query points per task (default: %(default)s)",
    )
    sin.add_argument(
        "--inner-steps",
        type=int,
        default=d["inner_steps"],
        help="inner SGD steps (default: %(default)s)",
    )
    sin.add_argument(
        "--inner-lr",
        type=float,
        default=d["inner_lr"],
        help="inner SGD step size (default: %(default)s)",
    )
    sin.add_argument(
        "--meta-lr", type=float, default=d["meta_lr"], help="Adam step size (default: %(default)s)"
    )
    sin.add_argument(
        "--out",
        default=None,
        help="output file (default: $METAFAB_BUILD_DIR/weights/sinusoid_<method>_<layers>.npz, with a "
        "_k<K> suffix when K is not 10)",
    )
    sin.set_defaults(func=run)

    dig = targets.add_parser(
        "digits",
        help="prototypical-loss embedding network on the meta-train digits 0-4",
        description="Train the embedding MLP (ReLU on every layer) episodically with the "
        "prototypical loss (Snell et al. 2017) on N-way K-shot episodes of the digits 0-4 "
        "of scikit-learn's bundled 8x8 digits; the digits 5-9 are kept for meta-testing.",
    )
    d = DIGITS_DEFAULTS
    dig.add_argument(
        "--layers",
        default=d["layers"],
        help="layer widths, 64 pixels first, embedding dimension D last (default: %(default)s)",
    )
    dig.add_argument("--seed", type=int, default=d["seed"], help="seed (default: %(default)s)")
    dig.add_argument(
        "--iterations",
        type=int,
        default=d["iterations"],
        help="Adam steps, one episode each (default: %(default)s)",
    )
    dig.add_argument(
        "--n-way",
        type=int,
        default=d["n_way"],
        help="classes per training episode, at most 5 (default: %(default)s)",
    )
    dig.add_argument(
        "--k-shot",
        type=int,
        default=d["k_shot"],
        help="support images per class (default: %(default)s)",
    )
    dig.add_argument(
        "--n-query",
        type=int,
        default=d["n_query"],
        help="query images per class (default: %(default)s)",
    )
    dig.add_argument(
        "--lr", type=float, default=d["lr"], help="Adam step size (default: %(default)s)"
    )
    dig.add_argument(
        "--out", default=None, help="output file (default: build/weights/digits_proto_<layers>.npz)"
    )
    dig.set_defaults(func=run)
    _add_glyphs(targets)
    _add_glyph_encoder(targets)


def _add_glyphs(targets) -> None:
    gly = targets.add_parser(
        "glyphs",
        help="MAML / first-order MAML / Reptile (optionally ANIL) classifier on glyph episodes",
        description="Meta-train the initial weights of an MLP classifier (softmax cross-entropy) on N-way "
        "K-shot episodes of the glyph set's meta-train scripts (docs/datasets.md): Adam outer steps over "
        "meta-batches of episodes, plain SGD inside (Finn et al. 2017). The validation split's accuracy "
        "after adaptation goes into the file's metadata.",
    )
    d = GLYPHS_DEFAULTS
    gly.add_argument("--method", choices=GLYPH_METHODS, default=d["method"],
                     help="outer gradient: second-order MAML, first-order MAML or Reptile; or 'pretrain' (the "
                     "baseline: a classifier over all meta-train classes, Adam on minibatches of --meta-batch "
                     "images, saved with a zero N-way head to fine-tune per episode) (default: %(default)s)")
    gly.add_argument("--anil", action="store_true",
                     help="ANIL: the inner loop adapts only the last layer (Raghu et al. 2020)")
    gly.add_argument("--layers", default=d["layers"],
                     help="layer widths, 256 pixels first, N classes last (default: %(default)s)")
    gly.add_argument("--seed", type=int, default=d["seed"], help="seed (default: %(default)s)")
    gly.add_argument("--iterations", type=int, default=d["iterations"],
                     help="outer Adam steps (default: %(default)s)")
    gly.add_argument("--meta-batch", type=int, default=d["meta_batch"],
                     help="episodes per outer step (default: %(default)s)")
    gly.add_argument("--k-shot", type=int, default=d["k_shot"],
                     help="support images per class, K (default: %(default)s)")
    gly.add_argument("--n-query", type=int, default=d["n_query"],
                     help="query images per class (default: %(default)s)")
    gly.add_argument("--inner-steps", type=int, default=d["inner_steps"],
                     help="inner SGD steps (default: %(default)s)")
    gly.add_argument("--inner-lr", type=float, default=d["inner_lr"],
                     help="inner SGD step size (default: %(default)s)")
    gly.add_argument("--meta-lr", type=float, default=d["meta_lr"], help="Adam step size (default: %(default)s)")
    gly.add_argument("--out", default=None,
                     help="output file (default: build/weights/glyphs_<method>[_anil]_<layers>_<N>w<K>s.npz; "
                     "glyphs_pretrain_<layers>.npz)")
    gly.set_defaults(func=run)


GLYPH_ENCODER_DEFAULTS = {
    "encoder": "c8-p-c16-p-d64",
    "loss": "proto",
    "ways": 20,
    "shots": 1,
    "queries": 5,
    "iterations": 20000,
    "lr": 0.001,
    "max_minutes": 15.0,
    "seed": 0,
    "validate_every": 1000,
}


def _add_glyph_encoder(targets) -> None:
    enc = targets.add_parser(
        "glyph-encoder",
        help="few-shot encoder (conv or dense) for the Prototypical / Matching read-out, on glyph episodes",
        description="Train a few-shot encoder (metafab.reference.encoder: 3x3 convolutions, 2x2 max-pools and "
        "dense layers, e.g. c8-p-c16-p-d64 or d128-d64) episodically on the glyph set's meta-train scripts with "
        "the prototypical loss (Snell et al. 2017) or the matching loss (Vinyals et al. 2016, cosine attention), "
        "Adam, one episode per step. Every --validate-every steps it is evaluated on 200 5-way validation "
        "episodes; the best check's weights are written, with its validation accuracy in the metadata.",
    )
    d = GLYPH_ENCODER_DEFAULTS
    enc.add_argument("--encoder", default=d["encoder"],
                     help="encoder spec: c<N> conv3x3+ReLU, p 2x2 max-pool, d<N> dense (ReLU unless last; "
                     "the last is the D-wide linear embedding), joined by '-' (default: %(default)s)")
    enc.add_argument("--loss", choices=("proto", "matching"), default=d["loss"],
                     help="episodic loss and validation read-out (default: %(default)s)")
    enc.add_argument("--ways", type=int, default=d["ways"], help="classes per training episode (default: %(default)s)")
    enc.add_argument("--shots", type=int, default=d["shots"],
                     help="support images per class in training and validation (default: %(default)s)")
    enc.add_argument("--queries", type=int, default=d["queries"],
                     help="query images per class in training (default: %(default)s)")
    enc.add_argument("--iterations", type=int, default=d["iterations"],
                     help="Adam steps, one episode each (default: %(default)s)")
    enc.add_argument("--lr", type=float, default=d["lr"], help="Adam step size (default: %(default)s)")
    enc.add_argument("--max-minutes", type=float, default=d["max_minutes"],
                     help="stop after this much wall-clock time (default: %(default)s)")
    enc.add_argument("--seed", type=int, default=d["seed"], help="seed (default: %(default)s)")
    enc.add_argument("--validate-every", type=int, default=d["validate_every"],
                     help="steps between validation checks (default: %(default)s)")
    enc.add_argument("-o", "--out", default=None,
                     help="output file (default: build/weights/glyph_encoder_<conv|dense>_<spec>[_matching].npz)")
    enc.set_defaults(func=_run_glyph_encoder)


def _train_glyph_encoder(args) -> tuple:
    from metafab.reference import encoder, encoder_train

    spec = encoder.EncoderSpec.parse(args.encoder, (1, glyphs.load_shipped().size, glyphs.load_shipped().size))
    options = {
        "encoder": str(spec),
        "loss": args.loss,
        "ways": as_count("--ways", args.ways, minimum=2),
        "shots": as_count("--shots", args.shots, minimum=1),
        "queries": as_count("--queries", args.queries, minimum=1),
        "iterations": as_count("--iterations", args.iterations),
        "lr": as_rate("--lr", args.lr, positive=True),
        "max_minutes": as_rate("--max-minutes", args.max_minutes, positive=True),
        "seed": as_count("--seed", args.seed),
        "validate_every": as_count("--validate-every", args.validate_every, minimum=1),
    }
    init_seed, episode_seed = _seeds(options["seed"])
    print(f"metafab train glyph-encoder: {spec} ({spec.n_params} weights), {options['loss']} loss, "
          f"{options['iterations']} {options['ways']}-way {options['shots']}-shot episodes "
          f"({options['queries']} queries per class), at most {options['max_minutes']:g} min", file=sys.stderr)
    result = encoder_train.train(
        encoder.init_params(spec, init_seed), spec, loss=options["loss"], n_way=options["ways"],
        k_shot=options["shots"], n_query=options["queries"], iterations=options["iterations"], lr=options["lr"],
        seed=episode_seed, max_seconds=60.0 * options["max_minutes"],
        progress=_reporter(options["iterations"], "loss,validation"), progress_every=options["validate_every"],
    )
    print(f"  validation accuracy {result.validation_accuracy:.2f} +- {result.validation_ci95:.2f} % "
          f"(iteration {result.best_iteration} of {result.iterations})", file=sys.stderr)
    kind = "conv" if any(v.kind == "conv3x3" for v in spec.layers) else "dense"
    metadata = {
        "kind": "glyph-encoder",
        **options,
        "n_params": spec.n_params,
        "macs_per_encoding": spec.total_macs,
        "init_seed": init_seed,
        "episode_seed": episode_seed,
        "iterations_run": result.iterations,
        "stopped_by_time": result.stopped_by_time,
        "best_iteration": result.best_iteration,
        "validation_accuracy": result.validation_accuracy,
        "validation_ci95": result.validation_ci95,
        "validation_is": f"percent, 200 5-way {options['shots']}-shot validation episodes of 15 queries per class "
                         f"(seed 7), {options['loss']} read-out, float64; the best of the checks every "
                         f"validate_every iterations",
        "history": [[i, round(loss, 6), round(acc, 4)] for i, loss, acc in result.history],
        "seconds": round(result.seconds, 1),
        "command": _command("glyph-encoder", options),
        "numpy": np.__version__,
        "blas_threads": 1,
    }
    name = f"glyph_encoder_{kind}_{spec}{'' if options['loss'] == 'proto' else '_matching'}.npz"
    return spec, result.params, metadata, name, result.seconds


def _run_glyph_encoder(args: argparse.Namespace) -> int:
    """Train the encoder, write its weights file, print where it went."""
    from metafab.reference import encoder

    with threadpool_limits(limits=1, user_api="blas"):
        spec, params, metadata, name, seconds = _train_glyph_encoder(args)
    from metafab.sim.runner import build_root

    out = args.out if args.out is not None else build_root() / "weights" / name
    path = encoder.save_encoder(out, spec, params, metadata)
    print(f"wrote {path} ({seconds:.1f} s of training)", file=sys.stderr)
    print(f"reproduce with: {metadata['command']}", file=sys.stderr)
    return 0


def _layers(text: str, *, first: int | None = None, last: int | None = None) -> tuple[int, ...]:
    """Parse ``"1-40-40-1"`` into widths, checking the fixed input/output widths."""
    try:
        widths = tuple(int(w) for w in text.split("-"))
    except ValueError:
        widths = ()
    if len(widths) < 2 or min(widths) < 1:
        raise UserError(f"--layers must be widths joined by '-', e.g. 1-40-40-1, got {text!r}")
    if first is not None and widths[0] != first:
        raise UserError(f"--layers must start with {first} inputs, got {text!r}")
    if last is not None and widths[-1] != last:
        raise UserError(f"--layers must end with {last} output, got {text!r}")
    return widths


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the initial weights and for the task/episode stream."""
    init_seed, data_seed = np.random.SeedSequence(seed).generate_state(2)
    return int(init_seed), int(data_seed)


def _command(target: str, options: dict) -> str:
    flags = " ".join(f"--{k.replace('_', '-')}" + (f" {v}" if v != "" else "") for k, v in options.items())
    return f"metafab train {target} {flags}"


def _reporter(total: int, label: str):
    start = time.perf_counter()

    def report(iteration: int, *values: float) -> None:
        shown = "  ".join(f"{n} {v:.4f}" for n, v in zip(label.split(","), values, strict=True))
        elapsed = time.perf_counter() - start
        print(f"  {iteration:>7}/{total}  {shown}  ({elapsed:.1f} s)", file=sys.stderr, flush=True)

    return report


def _meta_options(args, layers, query: str) -> dict:
    """The checked meta-training options, in the order of the reproducing command; ``query`` names the
    target's query-count option (``k_query`` for sinusoids, ``n_query`` for glyphs)."""
    flag = "--" + query.replace("_", "-")
    return {
        "method": args.method,
        "layers": "-".join(map(str, layers)),
        "seed": as_count("--seed", args.seed),
        "iterations": as_count("--iterations", args.iterations),
        "meta_batch": as_count("--meta-batch", args.meta_batch, minimum=1),
        "k_shot": as_count("--k-shot", args.k_shot, minimum=1),
        query: as_count(flag, getattr(args, query), minimum=1),
        "inner_steps": as_count("--inner-steps", args.inner_steps, minimum=1 if args.method == "reptile" else 0),
        "inner_lr": as_rate("--inner-lr", args.inner_lr, positive=args.method == "reptile"),
        "meta_lr": as_rate("--meta-lr", args.meta_lr, positive=True),
    }


def _train_sinusoid(args) -> tuple[list, dict, str, float]:
    layers = _layers(args.layers, first=1, last=1)
    options = _meta_options(args, layers, "k_query")
    init_seed, task_seed = _seeds(options["seed"])
    print(
        f"metafab train sinusoid: {options['method']} on a {options['layers']} net, "
        f"{options['iterations']} iterations of {options['meta_batch']} tasks, "
        f"K={options['k_shot']}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    result = meta_train.meta_train(
        maml.init_params(layers, init_seed),
        SinusoidTasks(k_support=options["k_shot"], k_query=options["k_query"]),
        method=options["method"],
        iterations=options["iterations"],
        meta_batch=options["meta_batch"],
        inner_steps=options["inner_steps"],
        inner_lr=options["inner_lr"],
        meta_lr=options["meta_lr"],
        seed=task_seed,
        progress=_reporter(options["iterations"], "loss"),
        progress_every=2500,
    )
    seconds = time.perf_counter() - start
    tail = result.loss[-1000:]
    metadata = {
        "kind": "sinusoid-init",
        **options,
        "layers": list(layers),
        "init_seed": init_seed,
        "task_seed": task_seed,
        "final_loss": float(tail.mean()) if tail.size else None,
        "final_loss_is": "mean query MSE after adaptation over the last 1000 meta-batches"
        if options["method"] != "joint"
        else "mean MSE of the joint regression over the last 1000 meta-batches",
        "command": _command("sinusoid", options),
        "numpy": np.__version__,
        "blas_threads": 1,
    }
    k_suffix = "" if options["k_shot"] == 10 else f"_k{options['k_shot']}"
    name = f"sinusoid_{options['method']}_{options['layers']}{k_suffix}.npz"
    return result.params, metadata, name, seconds


def _train_digits(args) -> tuple[list, dict, str, float]:
    layers = _layers(args.layers, first=digits.PIXELS)
    options = {
        "layers": "-".join(map(str, layers)),
        "seed": as_count("--seed", args.seed),
        "iterations": as_count("--iterations", args.iterations),
        "n_way": as_count("--n-way", args.n_way, minimum=1),
        "k_shot": as_count("--k-shot", args.k_shot, minimum=1),
        "n_query": as_count("--n-query", args.n_query, minimum=1),
        "lr": as_rate("--lr", args.lr, positive=True),
    }
    init_seed, episode_seed = _seeds(options["seed"])
    sampler = digits.EpisodeSampler(
        classes=digits.META_TRAIN_CLASSES,
        n_way=options["n_way"],
        k_shot=options["k_shot"],
        n_query=options["n_query"],
    )
    print(
        f"metafab train digits: {options['layers']} embedding, {options['iterations']} "
        f"{options['n_way']}-way {options['k_shot']}-shot episodes of the digits "
        f"{digits.META_TRAIN_CLASSES}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    result = embedding.train(
        embedding.init_params(layers, init_seed),
        sampler,
        iterations=options["iterations"],
        lr=options["lr"],
        seed=episode_seed,
        progress=_reporter(options["iterations"], "loss,accuracy"),
        progress_every=250,
    )
    seconds = time.perf_counter() - start
    x, _ = digits.images()
    e = embedding.embed(result.params, x)
    tail = result.loss[-250:]
    metadata = {
        "kind": "digits-embedding",
        **options,
        "layers": list(layers),
        "init_seed": init_seed,
        "episode_seed": episode_seed,
        "meta_train_classes": list(digits.META_TRAIN_CLASSES),
        "final_loss": float(tail.mean()) if tail.size else None,
        "embedding_max": float(e.max()),
        "command": _command("digits", options),
        "numpy": np.__version__,
        "blas_threads": 1,
    }
    name = f"digits_proto_{options['layers']}.npz"
    return result.params, metadata, name, seconds


def _glyph_accuracy(params, sampler, steps: int, lr: float, layers, n: int, seed: int) -> tuple[float, float]:
    """Mean query accuracy (percent) after adaptation over ``n`` episodes, and its 95 % half-width."""
    acc = np.array([classify.accuracy(classify.adapt(params, ep.support, ep.support_labels, steps, lr,
                                                     layers=layers), ep.query, ep.query_labels)
                    for ep in glyphs.episodes(sampler, n, seed)]) * 100
    return float(acc.mean()), float(1.96 * acc.std(ddof=1) / np.sqrt(n))


def _pretrain_glyphs(data, layers, init_seed: int, seed: int, options: dict) -> list:
    """The pretrained baseline: every meta-train image, one classifier over all the meta-train classes."""
    classes = data.classes_of("train")
    x = data.images[classes].reshape(-1, data.size ** 2).astype(np.float64) / 255.0
    labels = np.repeat(np.arange(len(classes)), data.images.shape[1])
    net = (*layers[:-1], len(classes))
    print(f"  pretraining a {'-'.join(map(str, net))} classifier on {len(x)} images of the {len(classes)} meta-train "
          f"classes", file=sys.stderr)
    params, _ = classify.pretrain(maml.init_params(net, init_seed), x, labels, iterations=options["iterations"],
                                  batch=options["meta_batch"], lr=options["meta_lr"], seed=seed,
                                  progress=_reporter(options["iterations"], "loss"))
    return classify.with_new_head(params, layers[-1])


def _train_glyphs(args) -> tuple[list, dict, str, float]:
    layers = _layers(args.layers, first=glyphs.load_shipped().size ** 2)
    if layers[-1] < 2:
        raise UserError(f"--layers must end with the class count N >= 2, got {args.layers!r}")
    options = _meta_options(args, layers, "n_query")
    if args.anil:
        options["anil"] = ""
    adapt = classify.anil_layers(len(layers) - 1) if args.anil else None
    n_way = layers[-1]
    init_seed, episode_seed = _seeds(options["seed"])
    data = glyphs.load_shipped()
    train = glyphs.EpisodeSampler(split="train", n_way=n_way, k_shot=options["k_shot"],
                                  n_query=options["n_query"], data=data)
    val = glyphs.EpisodeSampler(split="validation", n_way=n_way, k_shot=options["k_shot"],
                                n_query=options["n_query"], data=data)
    print(f"metafab train glyphs: {options['method']}{' (ANIL)' if args.anil else ''} on a {options['layers']} "
          f"net, {options['iterations']} iterations of {options['meta_batch']} {n_way}-way {options['k_shot']}-shot "
          f"episodes, {options['inner_steps']} inner steps of {options['inner_lr']}", file=sys.stderr)
    start = time.perf_counter()
    if options["method"] == "pretrain":
        if args.anil:
            raise UserError("--anil applies to the meta-learning methods, not to --method pretrain")
        params = _pretrain_glyphs(data, layers, init_seed, episode_seed, options)
        result = meta_train.MetaTrainResult(params=params, loss=np.empty(0))
    else:
        result = meta_train.meta_train(
        maml.init_params(layers, init_seed),
        lambda rng, n: glyphs.episode_batch(train, rng, n),
        method=options["method"], iterations=options["iterations"], meta_batch=options["meta_batch"],
        inner_steps=options["inner_steps"], inner_lr=options["inner_lr"], meta_lr=options["meta_lr"],
        seed=episode_seed, progress=_reporter(options["iterations"], "loss"), progress_every=250,
        loss=inner_loop.SOFTMAX_CE, layers=adapt,
        )
    seconds = time.perf_counter() - start
    print("  validation accuracy after adaptation (200 episodes) ...", file=sys.stderr, flush=True)
    val_acc, val_ci = _glyph_accuracy(result.params, val, options["inner_steps"], options["inner_lr"], adapt,
                                      200, 7)
    print(f"  validation accuracy {val_acc:.2f} +- {val_ci:.2f} %", file=sys.stderr)
    tail = result.loss[-250:]
    metadata = {
        "kind": "glyphs-classifier",
        **{k: v for k, v in options.items() if k != "anil"},
        "anil": bool(args.anil),
        "adapted_layers": list(adapt) if adapt else list(range(len(layers) - 1)),
        "n_way": n_way,
        "layers": list(layers),
        "init_seed": init_seed,
        "episode_seed": episode_seed,
        "final_loss": float(tail.mean()) if tail.size else None,
        "final_loss_is": "mean query cross-entropy after adaptation over the last 250 meta-batches"
        if options["method"] != "pretrain" else "none recorded (pretraining minibatch losses are printed)",
        "validation_accuracy": val_acc,
        "validation_ci95": val_ci,
        "validation_is": "percent, 200 validation episodes of n_query queries per class (seed 7), after "
                         "inner_steps steps of inner_lr",
        "command": _command("glyphs", options),
        "numpy": np.__version__,
        "blas_threads": 1,
    }
    tag = f"{options['method']}{'_anil' if args.anil else ''}"
    episodes = "" if options["method"] == "pretrain" else f"_{n_way}w{options['k_shot']}s"  # pretraining has none
    name = f"glyphs_{tag}_{options['layers']}{episodes}.npz"
    return result.params, metadata, name, seconds


def run(args: argparse.Namespace) -> int:
    """Train, write the weights file, print where it went."""
    train = {"sinusoid": _train_sinusoid, "digits": _train_digits, "glyphs": _train_glyphs}[args.target]
    with threadpool_limits(limits=1, user_api="blas"):
        params, metadata, name, seconds = train(args)
    from metafab.sim.runner import build_root

    out = args.out if args.out is not None else build_root() / "weights" / name
    path = weights.save(out, params, metadata)
    print(f"wrote {path} ({seconds:.1f} s of training)", file=sys.stderr)
    print(f"reproduce with: {metadata['command']}", file=sys.stderr)
    return 0
