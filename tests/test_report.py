"""``metafab report``: the page builder on the checked-in sample reports (tests/data/report_build), the CLI,
and every page in headless Chromium (skipped when it is not installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metafab.gen.cli import main
from metafab.gen.report_browser import check_page, find_chromium
from metafab.gen.report_page import find_designs, write_report

SAMPLES = Path(__file__).parent / "data" / "report_build"
MAML = "maml-1-40-40-1-k10-q10-s1-p16"
MATCH = "match-matching-5w5s-d64-p64"


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, str]:
    """The pages of the sample reports, by file name, written once for the module."""
    out = tmp_path_factory.mktemp("report")
    return {p.name: p.read_text() for p in write_report(SAMPLES, out)}


def _page(pages, design: str) -> str:
    return next(text for name, text in pages.items() if name.startswith(design))


def test_sample_reports_are_found_per_design():
    designs, skipped = find_designs(SAMPLES)
    assert skipped == []
    assert [d.name for d in designs] == [MAML, MATCH]  # registry order
    maml, match = designs
    assert maml.manifest and maml.verify and len(maml.builds) == 1 and maml.board_build["clock_mhz"] == 80.0
    assert match.manifest is None and match.verify["engine"] == "match"
    assert sorted(maml.studies) == ["digits", "maml-precision", "match-precision", "sinusoid"]


def test_the_index_links_every_design_page(pages):
    index = pages["index.html"]
    assert len(pages) == 3
    for name in pages:
        if name != "index.html":
            assert f'href="{name}"' in index
    assert "PASS, 0 mismatches" in index and "Fmax 87.33 MHz, PASS" in index


@pytest.mark.parametrize("design, figures", [
    (MAML, ["utilisation-utilisation", "latency-latency", "schedule-gantt", "numerics-precision", "numerics-steps"]),
    (MATCH, ["utilisation-utilisation", "latency-latency", "pipeline-gantt", "numerics-precision"]),
])
def test_every_section_and_figure_is_on_the_page(pages, design, figures):
    page = _page(pages, design)
    for section in ("design", "verification", "utilisation", "timing", "latency", "numerics", "config"):
        assert f'<section id="{section}">' in page
    for fig in figures:
        start = page.index(f'<figure id="fig-{fig}"')
        assert "<path" in page[start: page.index("</figure>", start)]  # a drawn chart, not an empty figure
    for fetch in ("src=", 'href="http', "<link", "@import", "url(http", "<script"):
        assert fetch not in page  # nothing to fetch: the page works from file:// with no network


def test_the_maml_page_has_its_figures_and_numbers(pages):
    page = _page(pages, MAML)
    assert "87.33 MHz" in page and "PASS" in page and "54.712 us per task at 80 MHz" in page
    assert "act Q5.11" in page and "acc Q16.28" in page  # every number format
    assert "H100, PyTorch CUDA graph (anchor)" in page and "plain C float32" in page
    assert "4377 measured, 4377 modelled" in page
    assert "clk-to-q: engine.core.aux_1_7_code_TRELLIS_FF_Q.Q" in page  # critical path, step by step
    assert "backward L1 (support)" in page  # a Gantt lane per job
    assert "0.3750 +- 0.0950" in page  # the sinusoid study with its interval
    assert "not built" not in page


def test_the_match_page_says_what_is_not_built_and_how_to_make_it(pages):
    page = _page(pages, MATCH)
    assert "not built: generated Verilog and manifest" in page and "<code>metafab generate match</code>" in page
    assert "query 2" in page and "dot products (64 lanes)" in page  # the pipeline chart
    assert "+- " in page and "few-shot accuracy, float64" in page


def test_missing_reports_show_as_not_built(tmp_path):
    root = tmp_path / "build"
    shutil.copytree(SAMPLES, root)
    shutil.rmtree(root / "synth")
    shutil.rmtree(root / "study")
    paths = write_report(root, tmp_path / "out")
    page = next(p for p in paths if p.name.startswith(MAML)).read_text()
    assert "<code>metafab build maml --board ulx3s-85f</code>" in page
    assert "<code>metafab study maml-precision</code>" in page and "<code>metafab study sinusoid</code>" in page
    assert "fig-schedule-gantt" in page  # the cycle model needs no report


def test_the_same_reports_give_byte_identical_pages(tmp_path, pages):
    again = {p.name: p.read_text() for p in write_report(SAMPLES, tmp_path / "again")}
    assert again == pages


def test_the_generic_sections_serve_an_engine_without_its_own(tmp_path, echo):
    root = tmp_path / "build" / "verify" / "echo-w4-o1-0"
    root.mkdir(parents=True)
    (root / "report.json").write_text(json.dumps({
        "engine": "echo", "design": "echo-w4-o1", "config": {"words": 4, "offset": 1}, "requests": 5,
        "output_words": 20, "mismatches": 0, "simulator": "icarus"}))
    (page,) = [p for p in write_report(tmp_path / "build", tmp_path / "out") if p.name != "index.html"]
    text = page.read_text()
    assert '<section id="verification">' in text and "<code>metafab build echo --board ulx3s-85f</code>" in text


def test_cli_report_writes_the_pages(tmp_path, capsys):
    assert main(["report", str(SAMPLES), "-o", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "index.html") in out and "2 design page(s)" in err


def test_cli_report_on_an_empty_build_folder_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "no reports under" in err and "metafab demo" in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_cli_report_on_a_bad_path_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "nothing"
    if kind == "file":
        path.write_text("x")
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metafab report: error: build folder") and str(path) in err


def test_verify_reports_go_under_the_build_folder(tmp_path, monkeypatch):
    from metafab.gen import flow
    from metafab.gen.engines import get_engine

    monkeypatch.setenv("METAFAB_BUILD_DIR", str(tmp_path))
    engine = get_engine("maml")
    doc = json.loads(next((SAMPLES / "verify").glob(f"{MAML}-*/report.json")).read_text())
    path = flow.write_verify_report(engine, engine.config_from_dict(doc["config"]), doc)
    assert path.parent.parent == tmp_path / "verify" and json.loads(path.read_text()) == doc
    (d,), _ = find_designs(tmp_path)
    assert d.verify == doc


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)")
def test_every_page_in_headless_chromium(tmp_path):
    checks = {p.name: check_page(p) for p in write_report(SAMPLES, tmp_path)}
    for c in checks.values():
        assert c["console"] == [], c["console"]
        assert c["title"].startswith("metafab report")
        assert c["colours"] > 1  # not a blank screenshot
        assert all(n > 0 for n in c["figures"].values()), c["figures"]
        assert c["ok"]
    assert len(next(c for name, c in checks.items() if name.startswith(MAML))["figures"]) == 5
