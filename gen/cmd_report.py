"""``metafab report [BUILD_DIR] [-o DIR]``: an HTML page per design from the JSON reports under the build folder.

The pages (:mod:`metafab.gen.report_page`) are self-contained (inline SVG), open from ``file://`` and are
byte-identical for the same reports. ``--check`` loads every page in headless Chromium
(:mod:`metafab.gen.report_browser`); ``--screenshot PNG`` saves a picture of the first design's page.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from metafab.reference.errors import UserError

HELP = "write an HTML report page per design (and an index) from the JSON reports under the build folder"


def register(sub):
    p = sub.add_parser("report", help=HELP, description=HELP + " (generate manifests, verify, build and study "
                       "reports). Missing reports show as 'not built' with the command that makes them.")
    p.add_argument("build_dir", nargs="?", metavar="BUILD_DIR", default=None,
                   help="the build folder to read (default: $METAFAB_BUILD_DIR or ./build)")
    p.add_argument("-o", "--out", metavar="DIR", default=None, help="output folder (default: BUILD_DIR/report)")
    p.add_argument("--check", action="store_true",
                   help="load every page in headless Chromium: no console messages, figures drawn, screenshot "
                   "not blank (exit 1 otherwise)")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="save a screenshot of the first design's page (width 1200 px, shrunk to 900 px)")
    p.set_defaults(func=run)


def report_folder(build_dir=None) -> Path:
    """The build folder to read: ``build_dir``, checked to be a folder, or the default build folder."""
    from metafab.sim.runner import build_root

    if build_dir is None:
        return build_root()
    path = Path(build_dir)
    if not path.exists():
        raise UserError(f"build folder {str(build_dir)!r} does not exist (give a folder that metafab "
                        "generate / verify / build / study wrote into, e.g. build)")
    if not path.is_dir():
        raise UserError(f"build folder {str(build_dir)!r} is not a folder")
    return path.resolve()


def write(build_dir=None, out=None) -> list[Path]:
    """Write the pages; returns their paths (none when the folder holds no report)."""
    from metafab.gen.report_page import write_report

    root = report_folder(build_dir)
    return write_report(root, Path(out).resolve() if out else root / "report")


def add_report_option(p) -> None:
    """``--report`` on a command that writes a report (``build``, ``verify``)."""
    p.add_argument("--report", action="store_true",
                   help="at the end, write the HTML report pages of the build folder (as metafab report does)")


def announce(cfg, write_pages: bool, progress) -> None:
    """Say where the design's report page is: write the pages first with ``write_pages`` (``--report``)."""
    from metafab.gen.report_page import page_file
    from metafab.sim.runner import build_root

    page = build_root() / "report" / page_file(cfg)
    if write_pages:
        write()
        progress(f"report page: {page}")
    else:
        progress(f"report page: {page} (metafab report writes it)")


def _shrink(png: Path, width: int = 900) -> None:
    """Scale the screenshot to ``width`` pixels and keep 128 colours, so that it stays small in the repository."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(png, optimize=True)


def run(args) -> int:
    from metafab.gen.report_browser import check_page, screenshot

    t0 = time.perf_counter()
    root = report_folder(args.build_dir)
    pages = write(root, args.out)
    if not pages:
        print(f"metafab report: no reports under {root} (none of generate/*/manifest.json, verify/*/report.json, "
              "synth/*/report.json, study/*.json, sweeps/*.json); make them with metafab demo, or metafab generate / "
              "verify / build / study / sweep", file=sys.stderr)
        return 0
    for path in pages:
        print(path)
    from metafab.gen.report_page import SWEEPS_PAGE

    n_sweeps = sum(q.name == SWEEPS_PAGE for q in pages)
    what = f"{len(pages) - 1 - n_sweeps} design page(s)" + (", the sweeps page" if n_sweeps else "")
    print(f"metafab report: {what} and the index in {pages[0].parent} "
          f"({time.perf_counter() - t0:.1f} s); open {pages[0].as_uri()}", file=sys.stderr)
    status = 0
    if args.check:
        for path in pages:
            c = check_page(path)
            empty = [k for k, n in c["figures"].items() if not n]
            print(f"chromium {path.name}: {'ok' if c['ok'] else 'FAILED'}: {len(c['figures'])} figures"
                  + (f" ({', '.join(empty)} empty)" if empty else "") + f", {len(c['console'])} console messages, "
                  f"screenshot {c['colours']} colours", file=sys.stderr)
            for line in c["console"]:
                print(f"  {line}", file=sys.stderr)
            status = status or (0 if c["ok"] else 1)
    if args.screenshot:
        png = screenshot(pages[1] if len(pages) > 1 else pages[0], Path(args.screenshot))
        _shrink(png)
        print(f"screenshot: {png} ({png.stat().st_size // 1024} KB)", file=sys.stderr)
    return status
