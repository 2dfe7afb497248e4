"""A report page in a real browser: headless Chromium loads it from ``file://``, the page's DOM and console
are checked, and a screenshot is taken (and checked not to be blank).

Chromium is driven through its command line (``--dump-dom``, ``--screenshot``, ``--enable-logging=stderr``
for console messages); it is optional: :func:`find_chromium` returns None when it is not installed
(``apt-get install -y chromium`` on Debian).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from metafab.reference.errors import UserError

__all__ = ["find_chromium", "check_page", "screenshot"]

#: Names of the Chromium binary, in the order they are looked for.
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CONSOLE = re.compile(r":CONSOLE[:(]")


def find_chromium() -> str | None:
    """The path of a Chromium binary on PATH (or ``$METAFAB_CHROMIUM``), or None."""
    env = os.environ.get("METAFAB_CHROMIUM")
    if env:
        return shutil.which(env)
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise UserError("no Chromium found (install it: apt-get install -y chromium, or set METAFAB_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="metafab-chromium-") as profile:
        # a fresh profile per run: nothing cached, and runs in parallel never share one
        flags = ["--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                 "--hide-scrollbars", "--disable-extensions", f"--user-data-dir={profile}",
                 "--enable-logging=stderr", "--v=0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=timeout, check=False)


class _Figures(HTMLParser):
    """Counts each ``<figure>`` and the SVG drawing elements inside it."""

    DRAWING = {"path", "rect", "line", "polyline", "polygon", "text", "use", "circle"}

    def __init__(self):
        super().__init__()
        self.figures: dict[str, int] = {}
        self._current: str | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self._current = a.get("id") or f"figure-{len(self.figures)}"
            self.figures[self._current] = 0
        elif self._current is not None and tag in self.DRAWING:
            self.figures[self._current] += 1
        elif tag == "title" and not self.title:
            self._in_title = True

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "figure":
            self._current = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2200) -> Path:
    """A screenshot of ``page`` (loaded from ``file://``) at ``width`` x ``height`` CSS pixels into ``png``."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    r = _run([f"--window-size={width},{height}", f"--screenshot={png}", Path(page).resolve().as_uri()])
    if not png.exists():
        raise UserError(f"Chromium wrote no screenshot of {str(page)!r} (exit status {r.returncode})")
    return png


def _distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    return len(colours) if colours is not None else 1 << 16


def check_page(page: Path) -> dict:
    """Load ``page`` in headless Chromium from ``file://``: its title, the drawing elements of each
    ``<figure>``, the console messages it logged, and whether its screenshot has more than one colour.

    Returns ``{"page", "title", "figures": {id: elements}, "console": [lines], "colours", "ok"}``; ``ok``
    when the page has a title, every figure has drawing elements, the console is silent and the
    screenshot is not blank.
    """
    page = Path(page).resolve()
    r = _run(["--dump-dom", page.as_uri()])
    parser = _Figures()
    parser.feed(r.stdout)
    console = [line for line in r.stderr.splitlines() if _CONSOLE.search(line)]
    with tempfile.TemporaryDirectory(prefix="metafab-shot-") as tmp:
        colours = _distinct_colours(screenshot(page, Path(tmp) / "page.png", height=1400))
    ok = bool(parser.title) and all(parser.figures.values()) and not console and colours > 1
    return {"page": str(page), "title": parser.title.strip(), "figures": parser.figures, "console": console,
            "colours": colours, "ok": ok}
