"""The CPU baseline computes the engines' computation: its C outputs against float64 on several designs,
and a wrong expectation is caught. Timing is a benchmark figure (metafab bench --cpu), not tested."""

from __future__ import annotations

import numpy as np
import pytest

from metafab.gen.cpu_baseline import compiler, measure
from metafab.gen.engines import get_engine
from metafab.reference.config import MamlClsConfig, MamlConfig, MatchConfig

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler (cc, gcc or clang) on this machine")


@pytest.mark.parametrize("cfg", [
    MamlConfig(),
    MamlConfig(steps=3, k_support=5, n_query=4),
    MamlConfig(layers=(3, 12, 7, 2), k_support=4, n_query=3, lr=0.05),
    MamlConfig(layers=(2, 5, 1), steps=0),
], ids=lambda c: c.name)
def test_maml_kernel_equals_float64(cfg):
    r = measure(get_engine("maml").cpu_kernel(cfg), reps=50, warm=2)
    assert r["matches_float64"], r
    assert r["per"] == "task" and 0 < r["min_us"] <= r["median_us"]


@pytest.mark.parametrize("cfg", [
    MamlClsConfig(steps=1),
    MamlClsConfig(adapt_layers="head", steps=2),
    MamlClsConfig(layers=(16, 8, 6, 3), k_support=6, n_query=4, steps=3),
], ids=lambda c: c.name)
def test_classifier_kernel_equals_float64(cfg):
    """Softmax cross-entropy MAML / ANIL in C against :mod:`metafab.reference.classify`, computed here again."""
    from metafab.reference import classify

    kernel = get_engine("maml-cls").cpu_kernel(cfg)
    r = measure(kernel, reps=3, warm=1)
    assert r["matches_float64"] and r["per"] == "episode", r
    n = cfg.n_params
    flat = kernel.inputs
    xs = flat[n: n + cfg.k_support * cfg.n_in].reshape(cfg.k_support, cfg.n_in)
    ls = flat[n + cfg.k_support * cfg.n_in: n + cfg.k_support * (cfg.n_in + 1)].astype(int)
    xq = flat[n + cfg.k_support * (cfg.n_in + 1):].reshape(cfg.n_query, cfg.n_in)
    params, at = [], 0
    for o, i1 in cfg.weight_shapes:
        W = flat[at: at + o * (i1 - 1)].reshape(o, i1 - 1)
        params.append((W, flat[at + o * (i1 - 1): at + o * i1]))
        at += o * i1
    layers = None if cfg.adapt_layers == "all" else classify.anil_layers(cfg.n_layers)
    probs, _ = classify.predict(classify.adapt(params, xs, ls, cfg.steps, cfg.lr, layers=layers), xq)
    assert np.allclose(kernel.want, probs.reshape(-1))


@pytest.mark.parametrize("cfg", [MatchConfig(), MatchConfig(mode="proto"), MatchConfig(n_way=3, k_shot=2, dim=10)],
                         ids=lambda c: c.name)
def test_match_kernel_equals_float64(cfg):
    from metafab.gen.engines.match import make_episodes
    from metafab.reference import matching, proto

    kernel = get_engine("match").cpu_kernel(cfg)
    r = measure(kernel, reps=50, warm=2)
    assert r["matches_float64"], r
    # the expectation is the float64 read-out of the episode's query, computed here independently
    (ep,), _ = make_episodes(cfg, 1, 0, "auto", n_query=1)
    s, y, q = ep["support"], ep["labels"], ep["queries"][:1]
    probs = (matching.readout(q, s, y, cfg.n_way)[0] if cfg.mode == "matching"
             else proto.readout(q, proto.prototypes(s, y, cfg.n_way))[0])[0]
    assert np.allclose(kernel.want[:-1], probs) and kernel.want[-1] == np.argmax(probs)


def test_a_kernel_that_computes_something_else_is_caught():
    kernel = get_engine("maml").cpu_kernel(MamlConfig(layers=(1, 8, 1), k_support=3, n_query=2))
    kernel.want = kernel.want + 0.01  # not what the C computes
    assert not measure(kernel, reps=5, warm=1)["matches_float64"]
