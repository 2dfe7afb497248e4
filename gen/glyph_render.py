"""Render the glyphs few-shot set from the fonts that ship inside matplotlib (no download).

The set is Omniglot-like: a *class* is one letter of a Unicode script, a
*script* plays the part of an Omniglot alphabet, and each class has
:data:`SAMPLES` grey renders, each with its own font face, affine distortion
and stroke noise. The numpy side (loading the shipped arrays, drawing
episodes) is :mod:`metafab.reference.glyphs`; this module makes the arrays
(``metafab data glyphs``) and needs Pillow and fontTools (both come with
matplotlib).

Choosing the classes (:func:`choose_classes`), deterministic and without
randomness:

1. every code point of the script's block ranges (:data:`SCRIPTS`) whose
   general category is ``Lu``, ``Ll`` or ``Lo`` (modifier letters ``Lm`` and
   title-case digraphs ``Lt`` are left out), nor Latin small capitals (the
   capital's shape at letter height: the case form of a kept letter);
2. no decomposition at all (``NFKD(ch) == ch``): accented variants (NFD with
   combining marks), ligatures, compatibility and presentation forms go;
3. one class per case pair: an upper-case letter whose one-letter case fold
   is also a candidate (of any script: Latin ``Ɓ`` folds to ``ɓ`` of the IPA
   block) is dropped, the lower-case form stays (after the
   size normalisation below, ``O`` and ``o`` would be the same picture);
4. covered by at least two of the :data:`FACES` (the font's cmap has the code
   point and the glyph has ink), so that the samples of a class vary;
5. not a look-alike: the class's *mean image* (the upright, noise-free 16x16
   render averaged over its faces, ink in ``[0, 1]``) must be more than
   :data:`LOOKALIKE_RMS` (root mean square over the pixels) from the mean
   image of every class kept before it, in the order of :data:`SCRIPTS` and
   then of code points; so Latin ``o`` stays and Cyrillic ``о`` and Greek
   ``ο`` go.

A sample (:func:`render_sample`) of a class: a face drawn at random among the
faces that cover it; the letter drawn at 128 px with a random stroke change
(thinner by an erosion or thicker by an outline, in the font's own pixels);
the ink bounding box centred and its longer side scaled to
:data:`BASE_EXTENT` of the picture times a random scale, with a random aspect
change, shear, rotation and shift (one affine map, bilinear, onto a canvas
four times the output size); stroke noise (ink intensity modulated by a
smooth random field); a random blur; box-filter reduction to the output size
(area averaging); additive Gaussian pixel noise; rounded to uint8 (ink 255,
background 0). Every class has its own random stream,
``numpy.random.default_rng([seed, code point])``, so a class's samples do
not depend on which other classes are made.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metafab.reference.errors import UserError

__all__ = [
    "FACES",
    "SCRIPTS",
    "SAMPLES",
    "SIZES",
    "LOOKALIKE_RMS",
    "BASE_EXTENT",
    "font_folder",
    "candidates",
    "choose_classes",
    "render_sample",
    "render_class",
    "make_set",
]

#: Font faces (files of matplotlib's ``mpl-data/fonts/ttf``): DejaVu Sans,
#: Sans Mono and Serif in four weights/slants each, and the four STIX General faces.
FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
)

#: The scripts (Omniglot "alphabets"), in the order classes are chosen, with
#: their Unicode block ranges (inclusive code point pairs).
SCRIPTS = (
    ("Latin", ((0x0041, 0x024F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF))),
    ("IPA", ((0x0250, 0x02AF), (0x1D00, 0x1DBF))),
    ("Greek", ((0x0370, 0x03FF),)),
    ("Cyrillic", ((0x0400, 0x04FF),)),
    ("Old Cyrillic", ((0x0500, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F))),
    ("Armenian", ((0x0530, 0x058F),)),
    ("Hebrew", ((0x0590, 0x05FF),)),
    ("Arabic", ((0x0600, 0x06FF), (0x0750, 0x077F))),
    ("N'Ko", ((0x07C0, 0x07FF),)),
    ("Lao", ((0x0E80, 0x0EFF),)),
    ("Georgian", ((0x10A0, 0x10FF), (0x2D00, 0x2D2F))),
    ("Canadian syllabics", ((0x1400, 0x167F), (0x18B0, 0x18FF))),
    ("Ogham", ((0x1680, 0x169F),)),
    ("Tifinagh", ((0x2D30, 0x2D7F),)),
    ("Lisu", ((0xA4D0, 0xA4FF),)),
)

SAMPLES = 20
SIZES = (16, 28)
#: Two classes whose 16x16 mean images differ by at most this RMS (ink in [0, 1]) are look-alikes.
LOOKALIKE_RMS = 0.06
#: The longer side of a glyph's ink box, as a fraction of the picture, before the random scale.
BASE_EXTENT = 0.72
_FONT_PX = 128  # the size the letters are drawn at before the affine map
_OVERSAMPLE = 4  # canvas = 4 x output size; box-filter reduction by 4


def font_folder() -> Path:
    """matplotlib's folder of TrueType fonts (UserError if a face of :data:`FACES` is missing)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [f for f in FACES if not (folder / f).is_file()]
    if missing:
        raise UserError(f"matplotlib's font folder {str(folder)!r} lacks {', '.join(missing)}; "
                        "reinstall matplotlib (pip install --force-reinstall matplotlib)")
    return folder


@functools.cache
def _font(face: str):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_folder() / face), size=_FONT_PX)


@functools.cache
def _cmap(face: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(font_folder() / face), lazy=True) as font:
        return frozenset(font.getBestCmap())


def _draw(face: str, ch: str, stroke: int = 0) -> np.ndarray:
    """The letter drawn in ``face`` at 128 px, cropped to its ink: float64 ink in [0, 1] (empty if no ink).

    ``stroke`` > 0 thickens by an outline of that many pixels, < 0 thins by
    an erosion of ``2*|stroke| + 1`` pixels (kept only if ink is left).
    """
    from PIL import Image, ImageDraw, ImageFilter

    font = _font(face)
    pad = 8 + max(stroke, 0)
    left, top, right, bottom = font.getbbox(ch)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    if right <= left or bottom <= top:
        return np.zeros((0, 0))
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), ch, font=font, fill=255,
                             stroke_width=max(stroke, 0), stroke_fill=255)
    if stroke < 0:
        thinned = img.filter(ImageFilter.MinFilter(2 * -stroke + 1))
        if thinned.getbbox() is not None:
            img = thinned
    box = img.getbbox()
    if box is None:
        return np.zeros((0, 0))
    return np.asarray(img.crop(box), dtype=np.float64) / 255.0


def _place(ink: np.ndarray, size: int, *, scale=1.0, aspect=1.0, shear=0.0, angle=0.0, shift=(0.0, 0.0)):
    """Map the cropped ink onto a ``size x size`` picture: centred, longer side BASE_EXTENT*scale, then distorted.

    One affine map (source pixel -> picture), applied with bilinear
    interpolation onto a canvas ``4 * size`` wide and reduced by a 4x4 box
    filter by :func:`_reduce`. Returns the canvas (a Pillow ``L`` image).
    """
    from PIL import Image

    canvas = size * _OVERSAMPLE
    h, w = ink.shape
    k = BASE_EXTENT * scale * canvas / max(h, w)
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([k * aspect, k / aspect])
    centre_out = np.array([canvas / 2 + shift[0] * canvas, canvas / 2 + shift[1] * canvas])
    centre_in = np.array([w / 2, h / 2])
    inv = np.linalg.inv(lin)  # picture -> source: x_in = inv @ (x_out - centre_out) + centre_in
    off = centre_in - inv @ centre_out
    src = Image.fromarray(np.round(ink * 255).astype(np.uint8), mode="L")
    out = src.transform((canvas, canvas), Image.Transform.AFFINE,
                        (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
                        resample=Image.Resampling.BILINEAR, fillcolor=0)
    return out


def _reduce(img, size: int) -> np.ndarray:
    from PIL import Image

    small = img.resize((size, size), resample=Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _faces_of(ch: str) -> tuple[str, ...]:
    """The faces whose cmap has ``ch`` and whose glyph for it has ink."""
    cp = ord(ch)
    return tuple(f for f in FACES if cp in _cmap(f) and _draw(f, ch).size)


def candidates() -> list[tuple[int, int, tuple[str, ...]]]:
    """Steps 1-4 of the module docstring: ``(code point, script index, faces)`` in choosing order."""
    def letter(ch: str) -> bool:
        return (unicodedata.category(ch) in ("Lu", "Ll", "Lo") and unicodedata.normalize("NFKD", ch) == ch
                and "SMALL CAPITAL" not in unicodedata.name(ch, ""))

    by_script = [[chr(cp) for lo, hi in ranges for cp in range(lo, hi + 1) if letter(chr(cp))]
                 for _, ranges in SCRIPTS]
    pool = {ch for letters in by_script for ch in letters}  # case pairs may straddle two blocks
    out = []
    for s, letters in enumerate(by_script):
        for ch in letters:
            folded = ch.casefold()
            if folded != ch and len(folded) == 1 and folded in pool:
                continue  # the upper-case form of a kept lower-case letter
            faces = _faces_of(ch)
            if len(faces) >= 2:
                out.append((ord(ch), s, faces))
    return out


def _mean_image(ch: str, faces) -> np.ndarray:
    return np.mean([_reduce(_place(_draw(f, ch), 16), 16) for f in faces], axis=0)


def choose_classes(progress: Callable[[str], None] | None = None,
                   limit: int | None = None) -> list[tuple[int, int, tuple[str, ...]]]:
    """The classes: :func:`candidates` without look-alikes (step 5), ``(code point, script, faces)``.

    ``limit`` stops after that many classes (the choice is greedy in order, so
    they are the first ``limit`` classes of the whole set).
    """
    cands = candidates()
    if progress:
        progress(f"{len(cands)} candidate letters in {len(SCRIPTS)} scripts; removing look-alikes")
    kept, means = [], np.zeros((0, 256))
    for cp, s, faces in cands:
        if limit is not None and len(kept) >= limit:
            break
        m = _mean_image(chr(cp), faces).ravel()
        if len(means):
            rms = np.sqrt(np.mean((means - m) ** 2, axis=1))
            if rms.min() <= LOOKALIKE_RMS:
                continue
        kept.append((cp, s, faces))
        means = np.vstack([means, m])
    return kept


def render_sample(ch: str, faces, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random render of ``ch`` (module docstring): uint8 ``(size, size)``, ink 255."""
    from PIL import Image, ImageFilter

    face = faces[int(rng.integers(len(faces)))]
    stroke = int(rng.integers(-2, 5))
    scale = rng.uniform(0.85, 1.1)
    aspect = np.exp(rng.uniform(-0.08, 0.08))
    shear = rng.uniform(-0.25, 0.25)
    angle = rng.uniform(-15.0, 15.0)
    shift = rng.uniform(-0.06, 0.06, size=2)
    img = _place(_draw(face, ch, stroke), size, scale=scale, aspect=aspect, shear=shear, angle=angle,
                 shift=tuple(shift))
    canvas = size * _OVERSAMPLE
    # stroke noise: ink intensity times a smooth field in [1 - depth, 1]
    field = rng.uniform(0.0, 1.0, size=(6, 6))
    depth = rng.uniform(0.0, 0.5)
    smooth = Image.fromarray(np.round(field * 255).astype(np.uint8), mode="L").resize(
        (canvas, canvas), resample=Image.Resampling.BILINEAR)
    ink = np.asarray(img, dtype=np.float64) * (1.0 - depth * np.asarray(smooth, dtype=np.float64) / 255.0)
    img = Image.fromarray(np.round(ink).astype(np.uint8), mode="L")
    radius = rng.uniform(0.0, 1.5) * _OVERSAMPLE / 2
    if radius > 0.25:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    pixels = _reduce(img, size)
    pixels = pixels / max(pixels.max(), 1e-9) * rng.uniform(0.85, 1.0)  # peak ink 0.85 .. 1
    pixels += rng.normal(0.0, rng.uniform(0.0, 0.04), size=pixels.shape)
    return np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)


def render_class(cp: int, faces, *, seed: int, size: int) -> np.ndarray:
    """The :data:`SAMPLES` renders of class ``cp``: uint8 ``(20, size, size)`` from ``default_rng([seed, cp])``."""
    rng = np.random.default_rng([seed, cp])
    return np.stack([render_sample(chr(cp), faces, rng, size) for _ in range(SAMPLES)])


def make_set(*, seed: int = 0, size: int = 16, classes: int | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The whole set as the arrays of the shipped ``.npz`` (see :mod:`metafab.reference.glyphs`).

    ``classes`` keeps only the first that many chosen classes (for a quick run).
    """
    from metafab.reference import glyphs

    if size not in SIZES:
        raise UserError(f"size must be one of {', '.join(map(str, SIZES))}, got {size!r}")
    chosen = choose_classes(progress, limit=classes)
    images = np.zeros((len(chosen), SAMPLES, size, size), dtype=np.uint8)
    for i, (cp, _, faces) in enumerate(chosen):
        images[i] = render_class(cp, faces, seed=seed, size=size)
        if progress and (i + 1) % 200 == 0:
            progress(f"rendered {i + 1}/{len(chosen)} classes")
    scripts = np.array([s for _, s, _ in chosen], dtype=np.int64)
    split_of = {name: glyphs.SPLITS.index(split) for name, split in glyphs.SCRIPT_SPLIT.items()}
    return {
        "images": images,
        "codepoints": np.array([cp for cp, _, _ in chosen], dtype=np.int64),
        "scripts": scripts,
        "splits": np.array([split_of[SCRIPTS[s][0]] for s in scripts], dtype=np.int64),
        "script_names": np.array([name for name, _ in SCRIPTS]),
        "seed": np.array(seed, dtype=np.int64),
    }
