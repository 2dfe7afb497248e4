"""Sharded verification and design-space sweeps on a real Dask LocalCluster (two worker processes)."""

from __future__ import annotations

import pytest

from metafab.gen import flow
from metafab.gen.cli import main
from metafab.gen.engines import get_engine
from metafab.gen.sweep import ResultsStore, best_seeds, pareto, parse_spec, run_point, run_sweep, sort_rows
from metafab.reference.errors import UserError

SMALL = {"layers": [1, 6, 1], "lanes": 4, "k_support": 3, "n_query": 3}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("seconds", "sharding")}


def test_sharded_verify_runs_every_task_once_and_equals_one_process(client):
    engine = get_engine("maml")
    cfg = engine.config_from_dict(SMALL)
    one = flow.verify(engine, cfg, count=40, seed=3)
    sharded = flow.verify_sharded(engine, cfg, client, count=40, seed=3, chunk=10)
    chunks = sharded["sharding"]["chunks"]
    assert len(chunks) == 4
    ids = [i for c in chunks for i in c["ids"]]
    assert sorted(ids) == list(range(40)) and len(set(ids)) == 40
    assert all(len(c["ids"]) == 10 for c in chunks)
    assert sharded["mismatches"] == 0 == one["mismatches"]
    assert sharded["output_words"] == 40 * 3 == one["output_words"]
    assert sharded["mse_fixed"] == one["mse_fixed"] and sharded["mse_float64"] == one["mse_float64"]
    assert _without_timing(sharded) == _without_timing(one)


def test_verify_chunk_needs_a_scheduler(capsys):
    assert main(["verify", "maml", "--layers", "1-6-1", "--tasks", "4", "--chunk", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--chunk 2 needs --scheduler" in err[0]


SPEC = {
    "engine": "maml",
    "stages": ["model", "verify"],
    "tasks": 8,
    "design": {"layers": [1, 6, 1], "k_support": 3, "n_query": 3},
    "grid": {"lanes": [1, 2, 4]},
    "points": [{"lanes": 3}],  # not a power of two: an invalid config, recorded as failed
}


def test_sweep_runs_resumes_and_records_failures(client, tmp_path):
    spec = parse_spec(SPEC, source="test")
    assert len(spec.points) == 4
    with ResultsStore(tmp_path / "results.sqlite") as store:
        doc = run_sweep(spec, client, store)
        assert doc["ran"] == 4 and doc["skipped"] == 0 and doc["failed"] == 1
        by_lanes = {r["fields"]["lanes"]: r for r in doc["points"]}
        bad = by_lanes[3]
        assert bad["status"] == "failed" and "power of two" in bad["reason"] and "\n" not in bad["reason"]
        for lanes in (1, 2, 4):
            r = by_lanes[lanes]
            assert r["status"] == "ok" and r["metrics"]["mismatches"] == 0
        # sorted by latency: more lanes, fewer cycles
        assert [r["fields"]["lanes"] for r in doc["points"]] == [4, 2, 1, 3]
        # the same as each point run alone, in this process
        engine = get_engine("maml")
        for p in spec.points:
            key, _ = p.key(engine)
            alone = run_point("maml", p.fields, p.options, spec.stages, tasks=spec.tasks, sim=spec.sim)
            stored = store.get(key)
            assert stored["status"] == alone["status"] and stored["reason"] == alone["reason"]
            if alone["status"] == "ok":
                assert stored["report"]["metrics"] == alone["report"]["metrics"]
                assert _without_timing(stored["report"]["verify"]) == _without_timing(alone["report"]["verify"])
        # resume: a deleted point runs again, nothing else
        keys = {r["fields"]["lanes"]: r["key"] for r in doc["points"]}
        before = {k: store.get(k) for k in keys.values()}
        store.delete(keys[2])
        again = run_sweep(spec, client, store)
        assert again["ran"] == 1 and again["skipped"] == 3
        for lanes, key in keys.items():
            rec = store.get(key)
            assert rec["runs"] == 1
            if lanes != 2:
                assert rec["finished"] == before[key]["finished"]
        assert store.get(keys[2])["finished"] > before[keys[2]]["finished"]
        assert store.get(keys[2])["report"]["metrics"] == before[keys[2]]["report"]["metrics"]
        # --force: every point again
        forced = run_sweep(spec, client, store, stages=("model",), force=True)
        assert forced["ran"] == 4 and store.get(keys[4])["runs"] == 2


def test_model_sweep_pareto_is_cycles_vs_lanes(client, tmp_path):
    spec = parse_spec({"engine": "maml", "grid": {"lanes": [1, 4, 16], "steps": [1, 5]},
                       "points": [{"lanes": 4, "board": "no-such-board"}]})
    with ResultsStore(tmp_path / "r.sqlite") as store:
        doc = run_sweep(spec, client, store)
    failed = [r for r in doc["points"] if r["status"] == "failed"]
    assert len(failed) == 1 and "unknown board 'no-such-board'" in failed[0]["reason"]
    front = {(r["fields"]["lanes"], r["fields"]["steps"]) for r in doc["points"] if r["key"] in doc["pareto"]["keys"]}
    # steps 5 take more cycles than steps 1 at the same lanes: only steps 1 is on the front
    assert doc["pareto"]["axes"] == ["cycles", "lanes"] and front == {(1, 1), (4, 1), (16, 1)}


def _built(key, lat, lut, dsp, *, design=None, seed=1, fmax=None):
    return {"key": key, "status": "ok", "design": design or key, "digest": (design or key) * 8,
            "options": {"board": "ulx3s-85f", "clock_mhz": None, "seed": seed},
            "metrics": {"latency_us": lat, "lut": lut, "dsp": dsp, "fmax_mhz": fmax}}


def test_pareto_and_order_of_built_points():
    rows = [_built("a", 10.0, 100, 4), _built("b", 5.0, 200, 4), _built("c", 12.0, 150, 8), _built("d", 5.0, 200, 2)]
    assert pareto(rows) == {"axes": ["latency_us", "lut", "dsp"], "keys": ["a", "d"]}
    assert [r["key"] for r in sort_rows(rows, "lut")] == ["a", "c", "b", "d"]


def test_pareto_lists_each_design_once_by_its_best_seed():
    # two designs, three seeds each: the seeds tie on latency and resources, so without collapsing them
    # every point would be on the front; the front is one point a design, the seed with the highest Fmax
    rows = [_built(f"{d}{s}", lat, lut, 4, design=d, seed=s, fmax=f)
            for d, lat, lut in (("p4", 9.0, 900), ("p16", 3.0, 2500))
            for s, f in ((1, 84.0), (2, 97.5), (3, 90.0))]
    rows.append(_built("slow", 9.5, 2600, 4))  # dominated by both
    assert pareto(rows) == {"axes": ["latency_us", "lut", "dsp"], "keys": ["p42", "p162"]}


def test_a_verify_that_raises_fails_the_point_with_its_first_line(monkeypatch):
    from metafab.sim.runner import SimulationFailed

    def broken(*args, **kwargs):
        raise SimulationFailed("verilator simulation of maml_engine ended abnormally (no results)\nmore detail")

    monkeypatch.setattr(flow, "verify", broken)
    r = run_point("maml", dict(SMALL), {"board": "ulx3s-85f", "clock_mhz": None, "seed": 1}, ("model", "verify"))
    assert r["status"] == "failed"
    assert r["reason"] == "SimulationFailed: verilator simulation of maml_engine ended abnormally (no results)"
    assert r["report"]["model"]["cycles"] == get_engine("maml").item_cycles(get_engine("maml").config_from_dict(SMALL))


def test_build_stage_gets_a_folder_per_point_and_its_figures(monkeypatch):
    import os

    from metafab.sim.runner import build_root

    before = os.environ.get("METAFAB_BUILD_DIR")
    seen = []

    def fake_build(engine, cfg, board, *, clock_mhz=None, seed=1, **kw):  # no place and route in the tests
        seen.append((build_root(), board, seed))
        return {"lut": 1000 + seed, "ff": 500, "dsp": 4, "bram": 2, "fmax_mhz": 90.0 + seed, "timing": "PASS",
                "clock_mhz": 80.0, "latency_us": 1.25}

    monkeypatch.setattr(flow, "build", fake_build)
    for seed in (1, 2):
        r = run_point("maml", dict(SMALL), {"board": "ulx3s-85f", "clock_mhz": None, "seed": seed}, ("model", "build"))
        assert r["status"] == "ok", r["reason"]
        assert r["report"]["metrics"]["lut"] == 1000 + seed and r["report"]["metrics"]["fmax_mhz"] == 90.0 + seed
    (f1, _, s1), (f2, _, s2) = seen
    assert (s1, s2) == (1, 2) and f1 != f2 and f1.name.endswith("-s1") and f2.name.endswith("-s2")
    assert os.environ.get("METAFAB_BUILD_DIR") == before


def test_best_seed_per_design_when_seeds_vary():
    def row(design, seed, fmax):
        return {"key": f"{design}{seed}", "status": "ok", "design": design, "digest": design * 8,
                "options": {"board": "ulx3s-85f", "clock_mhz": None, "seed": seed}, "metrics": {"fmax_mhz": fmax}}

    rows = [row("a", 1, 80.0), row("a", 2, 91.5), row("a", 3, 85.0), row("b", 1, 60.0), row("b", 2, 55.0)]
    best = best_seeds(rows, "fmax_mhz")  # higher is better
    assert sorted((v["seed"], v["fmax_mhz"]) for v in best.values()) == [(1, 60.0), (2, 91.5)]
    assert best_seeds([r for r in rows if r["options"]["seed"] == 1], "fmax_mhz") == {}
    # latency at one clock ties across seeds: the highest Fmax wins
    for r, fmax in zip(rows, (80.0, 91.5, 85.0, 60.0, 55.0), strict=True):
        r["metrics"] = {"latency_us": 54.71, "fmax_mhz": fmax}
    best = best_seeds(rows, "latency_us")
    assert sorted(v["seed"] for v in best.values()) == [1, 2]


def test_spec_expands_grid_times_points_and_drops_duplicates():
    spec = parse_spec({"engine": "maml", "design": {"layers": [1, 6, 1]},
                       "grid": {"lanes": [1, 2], "seed": [1, 2, 3]}, "points": [{"lanes": 2, "seed": 3}, {"lanes": 8}]})
    got = [(p.fields["lanes"], p.options["seed"]) for p in spec.points]
    assert got == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (8, 1)]
    assert all(p.fields["layers"] == [1, 6, 1] and "seed" not in p.fields for p in spec.points)
    aliased = parse_spec({"engine": "maml", "grid": {"config_seed": [7]}})
    assert aliased.points[0].fields == {"seed": 7} and aliased.points[0].options["seed"] == 1


@pytest.mark.parametrize("doc, words", [
    ({"engine": "mamll", "grid": {"lanes": [1]}}, ["unknown engine 'mamll'", "maml, maml-cls, match"]),
    ({"engine": "maml", "grid": {"lane": [1]}}, ["field 'lane'", "valid fields: layers", "lanes"]),
    ({"engine": "maml", "grid": {"lanes": []}}, ["[grid] lanes is an empty list"]),
    ({"engine": "maml"}, ["no points"]),
    ({"engine": "maml", "stages": ["verfy"], "grid": {"lanes": [1]}}, ["'verfy'", "model, verify, build"]),
    ({"engine": "maml", "objective": "speed", "grid": {"lanes": [1]}}, ["'speed'", "latency_us"]),
])
def test_bad_spec_is_one_line(doc, words):
    with pytest.raises(UserError) as exc:
        parse_spec(doc)
    for w in words:
        assert w in str(exc.value)


def test_sweep_cli_bad_spec_exits_2(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('engine = "maml"\n[grid]\nlane = [1, 2]\n')
    assert main(["sweep", str(spec), "--store", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metafab sweep: error:") and "'lane'" in err[0]


def test_sweep_page_in_the_report(client, tmp_path, monkeypatch):
    from metafab.gen.report_page import write_report
    from metafab.gen.sweep import sweep_document_path, write_sweep_document

    monkeypatch.setenv("METAFAB_BUILD_DIR", str(tmp_path / "build"))
    spec = parse_spec({"engine": "maml", "design": {"layers": [1, 6, 1]},
                       "grid": {"lanes": [1, 4, 16], "seed": [1, 2]}}, source="specs/lanes.toml")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        doc = run_sweep(spec, client, store)
    # seeds tie in the cycle model: the front is one point a lane count, not six
    assert len(doc["points"]) == 6 and len(doc["pareto"]["keys"]) == 3
    path = write_sweep_document(doc)
    assert path == sweep_document_path(doc) == tmp_path / "build" / "sweeps" / "lanes.json"
    (tmp_path / "build" / "sweeps" / "junk.json").write_text("[1, 2]")
    pages = write_report(tmp_path / "build", tmp_path / "out")
    assert [p.name for p in pages] == ["index.html", "sweeps.html"]
    index, page = (p.read_text() for p in pages)
    assert 'href="sweeps.html#sweep-lanes"' in index and "junk.json: not a sweep document" in index
    assert page.count("<svg") == 1 and 'id="sweep-lanes"' in page
    cells = [row for row in page.split("<tr>") if "<td>maml-" in row]
    assert len(cells) == 6 and sum(row.startswith("<td>*</td>") for row in cells) == 3
    cycles = {get_engine("maml").item_cycles(get_engine("maml").config_from_dict(
        {"layers": [1, 6, 1], "lanes": n})) for n in (1, 4, 16)}
    assert all(f"<td>{c}</td>" in page for c in cycles)
