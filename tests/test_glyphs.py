"""The glyphs few-shot set: shipped arrays and checksum, regeneration, class choice, episodes, CLI."""

from __future__ import annotations

import importlib.resources
import json
import unicodedata

import numpy as np
import pytest

from metafab.gen import glyph_render
from metafab.gen.cli import main
from metafab.reference import glyphs
from metafab.reference.errors import UserError


def _arrays(data: glyphs.GlyphSet) -> dict:
    return {"images": data.images, "codepoints": data.codepoints, "scripts": data.scripts, "splits": data.splits,
            "script_names": np.array(data.script_names), "seed": np.array(data.seed, dtype=np.int64)}


@pytest.fixture(scope="module")
def shipped() -> glyphs.GlyphSet:
    return glyphs.load_shipped()


def test_shipped_arrays_match_their_checksum_and_file_is_small():
    resource = importlib.resources.files("metafab.reference") / "data" / glyphs.SHIPPED
    assert resource.is_file()
    assert len(resource.read_bytes()) <= 8_000_000
    data = glyphs.load_shipped(check=False)
    assert glyphs.array_digest(_arrays(data)) == glyphs.SHA256


def test_checksum_sees_one_changed_pixel(shipped):
    arrays = _arrays(shipped)
    images = arrays["images"].copy()
    images[7, 3, 8, 8] ^= 1
    assert glyphs.array_digest({**arrays, "images": images}) != glyphs.SHA256


def test_shipped_set_is_omniglot_like(shipped):
    c = len(shipped.codepoints)
    assert c >= 1000 and shipped.images.shape == (c, 20, 16, 16) and shipped.images.dtype == np.uint8
    assert len(set(shipped.codepoints.tolist())) == c
    assert len(shipped.script_names) >= 10 and len(np.unique(shipped.scripts)) >= 10
    assert shipped.script_names == tuple(name for name, _ in glyph_render.SCRIPTS)
    # a script lies in one split, the split of SCRIPT_SPLIT; the three splits are about 60 / 15 / 25 %
    for s, name in enumerate(shipped.script_names):
        assert set(shipped.splits[shipped.scripts == s].tolist()) == {glyphs.SPLITS.index(glyphs.SCRIPT_SPLIT[name])}
    share = np.bincount(shipped.splits, minlength=3) / c
    assert 0.5 <= share[0] <= 0.7 and 0.1 <= share[1] <= 0.25 and 0.15 <= share[2] <= 0.35
    # samples vary within a class: no two samples of a class are the same picture
    flat = shipped.images.reshape(c, 20, -1)
    assert all(len({r.tobytes() for r in flat[i]}) == 20 for i in range(0, c, 97))
    assert 0 < shipped.images.mean() < 128 and shipped.images.max() == 255


def test_classes_are_distinct_letters(shipped):
    letters = {chr(cp) for cp in shipped.codepoints.tolist()}
    for ch in letters:
        assert unicodedata.category(ch) in ("Lu", "Ll", "Lo")
        assert unicodedata.normalize("NFKD", ch) == ch  # no accented variant, no compatibility form
        folded = ch.casefold()
        assert folded == ch or folded not in letters  # one class per case pair
    assert "o" in letters and "\u043e" not in letters and "\u03bf" not in letters  # Cyrillic o, Greek omicron
    assert "\u00e9" not in letters and "O" not in letters


def test_regenerating_with_the_seed_gives_the_shipped_arrays(shipped):
    """The first classes as the generator chooses them, and renders of classes of every split."""
    first = glyph_render.choose_classes(limit=25)
    assert [cp for cp, _, _ in first] == shipped.codepoints[:25].tolist()
    assert [s for _, s, _ in first] == shipped.scripts[:25].tolist()
    picks = [int(shipped.classes_of(split)[j]) for split in glyphs.SPLITS for j in (0, 11)]
    for i in picks:
        cp = int(shipped.codepoints[i])
        faces = glyph_render._faces_of(chr(cp))
        again = glyph_render.render_class(cp, faces, seed=shipped.seed, size=16)
        np.testing.assert_array_equal(again, shipped.images[i], err_msg=f"class U+{cp:04X}")
    other = glyph_render.render_class(int(shipped.codepoints[0]), glyph_render._faces_of("a"), seed=1, size=16)
    assert not np.array_equal(other, shipped.images[0])


def test_render_28_and_bad_size():
    out = glyph_render.render_class(ord("a"), glyph_render._faces_of("a"), seed=0, size=28)
    assert out.shape == (20, 28, 28) and out.dtype == np.uint8 and out.max() > 200
    with pytest.raises(UserError, match="size must be one of 16, 28, got 20"):
        glyph_render.make_set(size=20, classes=1)


def test_episodes_come_from_one_split_with_their_shapes(shipped):
    for split in glyphs.SPLITS:
        pool = set(shipped.classes_of(split).tolist())
        sampler = glyphs.EpisodeSampler(split=split, n_way=5, k_shot=5, n_query=15)
        for ep in glyphs.episodes(sampler, 20, seed=3):
            assert set(ep.classes.tolist()) <= pool and len(set(ep.classes.tolist())) == 5
            assert ep.support.shape == (25, 256) and ep.query.shape == (75, 256)
            assert ep.support.dtype == np.float64 and 0.0 <= ep.support.min() and ep.query.max() <= 1.0
            np.testing.assert_array_equal(ep.support_labels, np.repeat(np.arange(5), 5))
            np.testing.assert_array_equal(ep.query_labels, np.repeat(np.arange(5), 15))
    # every row is a sample of its label's class, and support and query samples differ
    ep = glyphs.EpisodeSampler(n_way=3, k_shot=2, n_query=18).sample(np.random.default_rng(0))
    for rows, labels in ((ep.support, ep.support_labels), (ep.query, ep.query_labels)):
        for row, label in zip(rows, labels, strict=True):
            own = shipped.images[ep.classes[label]].reshape(20, -1) / 255.0
            assert np.any(np.all(own == row, axis=1))
    assert not {r.tobytes() for r in ep.support} & {r.tobytes() for r in ep.query}


def test_episodes_are_seeded_and_stable_whatever_the_count():
    sampler = glyphs.EpisodeSampler(n_way=5, k_shot=1, n_query=3)
    a = list(glyphs.episodes(sampler, 3, seed=7))
    b = list(glyphs.episodes(sampler, 6, seed=7))
    c = list(glyphs.episodes(sampler, 3, seed=8))
    for x, y in zip(a, b[:3], strict=True):
        assert np.array_equal(x.support, y.support) and np.array_equal(x.classes, y.classes)
    assert not np.array_equal(a[0].support, c[0].support)
    one = sampler.sample(np.random.default_rng(5))
    two = sampler.sample(np.random.default_rng(5))
    assert np.array_equal(one.query, two.query)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"k_shot": 5, "n_query": 16}, "k_shot + n_query must be at most 20 (samples per class), got 5 + 16"),
        ({"n_way": 5000}, "n_way must be at most the"),
        ({"split": "eval"}, "split must be one of train, validation, test, got 'eval'"),
        ({"k_shot": 0}, "k_shot must be an integer >= 1, got 0"),
    ],
)
def test_bad_episode_shapes_are_one_line_errors(kwargs, fragment):
    with pytest.raises(UserError) as exc:
        glyphs.EpisodeSampler(**kwargs)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_prototype_baseline_is_well_above_chance():
    mean, half = glyphs.prototype_baseline(n_way=5, k_shot=1, n_episodes=60, seed=0)
    assert 40.0 < mean < 95.0 and 0.0 < half < 10.0
    assert glyphs.prototype_baseline(n_way=5, k_shot=5, n_episodes=60, seed=0)[0] > mean


def test_cli_makes_a_few_classes_like_the_shipped_set(tmp_path, capsys, shipped):
    out = tmp_path / "g.npz"
    assert main(["data", "glyphs", "--classes", "4", "-o", str(out), "--json"]) == 0
    stdout, err = capsys.readouterr()
    doc = json.loads(stdout)
    assert doc["classes"] == 4 and doc["size"] == 16 and doc["file"] == str(out)
    assert "removing look-alikes" in err
    made = glyphs.load(out)
    np.testing.assert_array_equal(made.images, shipped.images[:4])
    np.testing.assert_array_equal(made.codepoints, shipped.codepoints[:4])
    first = out.read_bytes()
    assert main(["data", "glyphs", "--classes", "4", "-o", str(out)]) == 0
    assert out.read_bytes() == first  # same options, same bytes
    assert "4 classes x 20 samples, 16x16, seed 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--size", "20"], "argument --size: must be one of 16, 28, got '20'"),
        (["--classes", "0"], "argument --classes: must be at least 1, got 0"),
        (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["--shipped", "--seed", "3"], "--shipped uses the shipped set as it is"),
    ],
)
def test_cli_bad_values_are_one_line(capsys, argv, fragment):
    assert main(["data", "glyphs", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0]
