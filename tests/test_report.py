"""``ppbench report``: pictures, tables and the numbers in them, from fixtures and a real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ppbench.config import RunConfig
from ppbench.measure.metrics import step_metrics
from ppbench.measure.results import write_run
from ppbench.plan import theory
from ppbench.plan.placement import Placement
from ppbench.plan.schedules import build_schedule
from ppbench.report.summary import run_report
from ppbench.run.launch import _LAUNCHER_VARS
from ppbench.sim.costs import Costs
from ppbench.sim.simulator import simulate, simulated_events

PNG = b"\x89PNG\r\n\x1a\n"
ENV = {"host": "fixture-host", "cores": 2, "device": "cpu", "mpi_library": "MPICH Version: test", "torch": "x",
       "mpi4py": "y", "oversubscribed": False}


def fixture_run(directory, schedule="1f1b", pp=2, m=4, step_times=(1.0, 1.2, 1.1), workload="synthetic",
                efficiency=None):
    """A result file whose events come from the simulator, scaled so each step takes the given time."""
    cfg = RunConfig(schedule=schedule, pp=pp, microbatches=m, workload=workload)
    result = simulate(build_schedule(schedule, pp, m), Costs(1, 2, 0, 0.1), "nonblocking")
    base = simulated_events(result, Placement.looped(pp), m)
    frames, steps = [], []
    for step, target in enumerate(step_times, start=1):
        metrics = step_metrics(base, start=0.0)
        scale = target / metrics["step_time"]
        ev = base.assign(start=base["start"] * scale, end=base["end"] * scale, step=step)
        metrics = step_metrics(ev, start=0.0)
        metrics.update(step=step, throughput=cfg.batch / metrics["iteration_time"], loss=0.5, events=len(ev))
        frames.append(ev)
        steps.append(metrics)
    summary = {"peak_in_flight": [theory.peak_in_flight(schedule, pp, m, r) for r in range(pp)],
               "peak_in_flight_theory": [theory.peak_in_flight(schedule, pp, m, r) for r in range(pp)],
               "peak_saved_bytes": [1024 * (pp - r) for r in range(pp)],
               **{f"{k}_median": float(pd.Series([s[k] for s in steps]).median())
                  for k in ("step_time", "bubble_mean", "overlap")},
               **({} if efficiency is None else {"efficiency": efficiency})}
    return write_run(directory, cfg.to_dict(), ENV, steps, summary, pd.concat(frames, ignore_index=True))


@pytest.fixture
def results(tmp_path):
    for schedule in ("gpipe", "1f1b"):
        for pp, m in ((1, 4), (2, 1), (2, 4), (4, 8)):
            fixture_run(tmp_path, schedule, pp, m, efficiency=0.6 if (schedule, pp, m) == ("1f1b", 2, 4) else None)
    fixture_run(tmp_path, "1f1b", 2, 4, step_times=(2.0, 3.0), efficiency=0.9)   # a second run of one configuration
    return tmp_path


def test_report_writes_every_picture_and_page(results):
    code, text, warnings = run_report(str(results), "table", None, None, None, None, None)
    assert code == 0 and warnings == [f"9 result files read, 0 skipped in {results}/"]
    out = results / "report"
    expected = ["timeline-gpipe-p4-m8-synthetic.png", "timeline-1f1b-p4-m8-synthetic.png", "bubble.png",
                "scaling.png", "overlap.png", "heatmap-synthetic.png", "efficiency.png"]
    page = (out / "index.html").read_text()
    for name in expected:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f'src="{name}"' in page
    assert "fixture-host: 2 cores, cpu" in page
    assert (out / "summary.md").read_text().startswith("# ppbench report")
    assert "report: " in text and "index.html" in text


def test_summary_numbers_are_medians_of_the_files(results):
    code, text, _ = run_report(str(results), "csv", None, ["1f1b"], None, None, None, write=False)
    table = pd.read_csv(pd.io.common.StringIO(text))
    row = table[(table["pp"] == 2) & (table["microbatches"] == 4)].iloc[0]
    assert row["runs"] == 2 and row["steps"] == 5
    assert row["step_time_ms"] == pytest.approx(1e3 * 1.2)                 # median of 1.0 1.2 1.1 2.0 3.0
    assert row["step_time_ms_min"] == pytest.approx(1e3) and row["step_time_ms_max"] == pytest.approx(3e3)
    assert row["bubble_theory"] == pytest.approx(1 / 5)
    assert row["efficiency"] == pytest.approx(0.75)                         # one per run: median of 0.6 and 0.9
    assert table[(table["pp"] != 2) | (table["microbatches"] != 4)]["efficiency"].isna().all()   # no serial baseline
    assert table["bubble_simulated"].between(0, 1).all()       # exactness: tests/test_calibrate.py
    assert set(table["schedule"]) == {"1f1b"}


def test_bad_files_are_named_and_skipped(results):
    (results / "broken.parquet").write_bytes(b"PAR1 garbage")
    code, _, warnings = run_report(str(results), "table", None, None, None, None, None, write=False)
    assert code == 0
    assert any("broken.parquet: not a readable Parquet file" in w for w in warnings)


def test_empty_directory_is_an_error(tmp_path):
    code, text, warnings = run_report(str(tmp_path), "table", None, None, None, None, None)
    assert code == 1 and text == "" and "no ppbench results in" in warnings[-1]


def test_baseline_comparison_gives_ratios(tmp_path):
    fixture_run(tmp_path / "new", step_times=(1.0,))
    fixture_run(tmp_path / "old", step_times=(2.0,))
    code, text, _ = run_report(str(tmp_path / "new"), "json", None, None, None, None, str(tmp_path / "old"),
                               write=False)
    rows = pd.read_json(pd.io.common.StringIO(text))
    assert code == 0 and rows["step_time_ratio"].iloc[0] == pytest.approx(0.5)


def test_report_of_a_real_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    root = Path(__file__).resolve().parent.parent
    run = [sys.executable, "-m", "ppbench", "run", "--pp", "2", "--microbatches", "3", "--repeats", "2",
           "--results", str(tmp_path)]
    for extra in ([], ["--workload", "synthetic", "--t-fwd", "0.001", "--t-bwd", "0.002"]):
        proc = subprocess.run(run + extra, capture_output=True, text=True, timeout=120, env=env, cwd=root)
        assert proc.returncode == 0, proc.stderr
        assert "saved to" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ppbench", "report", str(tmp_path), "--format", "markdown"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("| schedule |") and "| 1f1b |" in proc.stdout
    assert (tmp_path / "report" / "timeline-1f1b-p2-m3-synthetic.png").read_bytes().startswith(PNG)
    assert (tmp_path / "report" / "memory.png").read_bytes().startswith(PNG)
    proc = subprocess.run([sys.executable, "-m", "ppbench", "simulate", "--from-run", str(tmp_path), "--samples", "3",
                           "--json"], capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert sorted(r["workload"] for r in rows) == ["model", "synthetic"] and all(r["samples"] == 3 for r in rows)
    for row in rows:
        assert 0 < row["simulated"]["step_time"] and 0 <= row["simulated"]["bubble_mean"] <= 1
        assert row["bubble_difference"] == row["measured"]["bubble_mean"] - row["simulated"]["bubble_mean"]
        assert row["costs"]["fwd"] > 0 and row["costs"]["bwd"] > 0


def test_report_rejects_a_missing_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ppbench", "report", str(tmp_path / "nope")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_a_hostile_results_directory_still_gives_a_complete_report(tmp_path):
    import os

    import pyarrow.parquet as pq

    results = tmp_path / "results"
    good = fixture_run(results, "1f1b", 2, 4)
    fixture_run(results / "sub", "gpipe", 2, 4)
    odd = results / "odd <b>&\nname.parquet"                        # markup and a newline in a good file's name
    odd.write_bytes(good.read_bytes())
    raw = os.fsencode(results) + b"/bad-\xff-bytes.parquet"         # not UTF-8
    with open(raw, "wb") as fh:
        fh.write(b"junk")
    (results / "loop.parquet").symlink_to(results)                   # a link into a loop
    (results / "outside").symlink_to(tmp_path)                       # a link out of the directory
    (results / "linked.parquet").symlink_to(good)                    # a link to a good file: still not followed
    dataset = results / "dataset.parquet"                             # a Parquet dataset directory
    dataset.mkdir()
    (dataset / "part-0.parquet").write_bytes(good.read_bytes())
    (results / "foreign.parquet").write_bytes(b"PAR1 but not really")
    (results / "<script>x.parquet").write_bytes(b"junk")              # markup in a skipped file's name
    table = pq.read_table(good)
    meta = json.loads(table.schema.metadata[b"ppbench"])
    keyless = {**meta, "config": {k: v for k, v in meta["config"].items() if k != "pp"}}
    typed = {**meta, "environment": {**meta["environment"], "cores": "2"}}
    stepless = {**meta, "steps": [{"step_time": 1.0}]}
    for name, doc in (("keyless", keyless), ("typed", typed), ("stepless", stepless)):
        damaged = table.replace_schema_metadata({b"ppbench": json.dumps(doc).encode()})
        pq.write_table(damaged, results / f"{name}.parquet")
    out = tmp_path / "report"
    code, text, warnings = run_report(str(results), "table", str(out), None, None, None, None)
    assert code == 0
    said = "\n".join(warnings)
    for expected in ("loop.parquet: symbolic link to a directory, not followed",
                     "outside: symbolic link to a directory, not followed",
                     "linked.parquet: symbolic link, not followed",
                     "dataset.parquet: a directory (a Parquet dataset?), not a result file",
                     "foreign.parquet: not a readable Parquet file",
                     "bad-\\xff-bytes.parquet: not a readable Parquet file",
                     "keyless.parquet: metadata lacks config.pp",
                     "typed.parquet: metadata field environment.cores is str '2', expected int",
                     "stepless.parquet: metadata steps[0].throughput is missing or not a number",
                     "<script>x.parquet: not a readable Parquet file",
                     f"3 result files read, 10 skipped in {results}/"):
        assert expected in said, expected
    page = (out / "index.html").read_text()
    assert page.rstrip().endswith("</html>") and "bad-\\xff-bytes" in page
    assert "&lt;script&gt;x.parquet" in page and "<script>x" not in page
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


# ------------------------------------------------------------------------------------ findings and the page

def config_row(schedule, pp, m, throughput, key, workload="synthetic", impl="ppbench", bubble=0.2, theory_=0.2,
               efficiency=float("nan"), step_time_ms=10.0, chunks=1):
    return {"config_key": key, "schedule": schedule, "transport": "nonblocking", "pp": pp, "dp": 1,
            "microbatches": m, "chunks": chunks, "workload": workload, "model": "mlp", "size": "tiny",
            "dtype": "float64", "impl": impl, "split": "", "throughput": throughput, "bubble": bubble,
            "bubble_theory": theory_, "efficiency": efficiency, "step_time_ms": step_time_ms}


def test_winners_name_the_fastest_schedule_and_its_margin():
    from ppbench.report.findings import winners

    table = pd.DataFrame([config_row("1f1b", 2, 4, 125.0, "a"), config_row("gpipe", 2, 4, 100.0, "b"),
                          config_row("zb-h1", 2, 4, 50.0, "c"), config_row("gpipe", 4, 8, 90.0, "d"),
                          config_row("1f1b", 4, 8, 60.0, "e"), config_row("1f1b", 8, 8, 70.0, "f")])
    head, *details = winners(table)
    assert head.headline
    assert head.text == ("synthetic: across 2 (p, m) configurations with two or more schedules, "
                         "the fastest is 1f1b in 1, gpipe in 1; median margin over the runner-up 38%.")
    assert [d.text for d in details] == [
        "synthetic, p=2, m=4: 1f1b is fastest (125 samples/s), 25% ahead of gpipe (100).",
        "synthetic, p=4, m=8: gpipe is fastest (90 samples/s), 50% ahead of 1f1b (60)."]
    assert details[0].rows == ["a", "b"] and details[0].figure == "heatmap-synthetic"


def test_departures_from_theory_are_attributed_by_the_simulation():
    from ppbench.report.findings import theory_departures

    table = pd.DataFrame([config_row("1f1b", 4, 8, 1.0, "near", bubble=0.30, theory_=0.27),
                          config_row("1f1b", 4, 4, 1.0, "far", bubble=0.60, theory_=0.43),
                          config_row("gpipe", 4, 4, 1.0, "odd", bubble=0.70, theory_=0.43)])
    attribution = {"far": {"simulated": 0.58, "no_latency": 0.46, "no_overhead": 0.55, "free": 0.44,
                           "latency": 2e-4, "overhead": 5e-5},
                   "odd": {"simulated": 0.45, "no_latency": 0.44, "no_overhead": 0.45, "free": 0.43,
                           "latency": 1e-5, "overhead": 1e-5}}
    head, far, odd = theory_departures(table, attribution)
    assert head.text == ("The measured bubble is within 0.05 of its closed form in 1 of 3 configurations with p > 1; "
                         "where it is not, the largest share comes from message latency (1), not explained by the "
                         "simulation (noise or contention) (1).")
    assert far.text == ("1f1b p=4 m=4 synthetic: measured bubble 0.60 against theory 0.43; the run's own costs, "
                        "simulated, give 0.58: message latency (200 us) adds +0.12, per-action overhead (50 us) +0.03, "
                        "unequal stage costs +0.01; +0.02 is left unexplained.")
    assert odd.rows == ["odd"] and "+0.25 is left unexplained" in odd.text


def test_efficiency_and_pytorch_findings():
    from ppbench.report.findings import efficiency, pytorch

    table = pd.DataFrame([config_row("1f1b", 2, 4, 1.0, "a", workload="model", efficiency=0.9, step_time_ms=9.0),
                          config_row("gpipe", 2, 4, 1.0, "b", workload="model", efficiency=0.6, step_time_ms=12.0),
                          config_row("1f1b", 2, 8, 1.0, "c", workload="model", efficiency=0.8),
                          config_row("1f1b", 2, 4, 1.0, "t1", workload="model", impl="torch", step_time_ms=10.0),
                          config_row("gpipe", 2, 4, 1.0, "t2", workload="model", impl="torch", step_time_ms=10.0)])
    (eff,) = efficiency(table)
    assert eff.text == ("mlp/tiny float64: efficiency against the serial limit is 0.80 (median of 3), from 0.60 "
                        "(gpipe p=2 m=4) to 0.90 (1f1b p=2 m=4).")
    head, *pairs = pytorch(table)
    assert head.text == ("ppbench's executor against torch.distributed.pipelining on the same 2 configurations: "
                         "step-time ratio ppbench / PyTorch median 1.05 (from 0.90 to 1.20); ppbench faster in 1. "
                         "Runs of the two may come from different times; benchmarks/side_by_side.py alternates them.")
    assert sorted(p.rows[1] for p in pairs) == ["t1", "t2"]


def test_timeline_option_selects_runs_and_explains_a_miss(results):
    code, _, _ = run_report(str(results), "table", None, None, None, None, None,
                            timelines=["schedule=gpipe,p=2,m=1", "schedule=1f1b,p=4"])
    out = results / "report"
    assert code == 0
    assert sorted(p.name for p in out.glob("timeline-*")) == ["timeline-1f1b-p4-m8-synthetic.png",
                                                               "timeline-gpipe-p2-m1-synthetic.png"]
    code, _, warnings = run_report(str(results), "table", None, None, None, None, None,
                                   timelines=["schedule=zb-h1,p=2"])
    assert code == 2 and warnings[-1].startswith("error: --timeline 'schedule=zb-h1,p=2' matches no run; present: "
                                                 "schedule=1f1b,p=1,m=4; ")
    code, _, warnings = run_report(str(results), "table", None, None, None, None, None, timelines=["p4"])
    assert code == 2 and "expected KEY=VALUE pairs" in warnings[-1]


def test_the_page_puts_findings_first_and_the_table_last_with_units(results):
    run_report(str(results), "table", None, None, None, None, None)
    page = (results / "report" / "index.html").read_text()
    assert page.index('id="findings"') < page.index('id="pictures"') < page.index('id="table"')
    assert "<th>step (ms)</th>" in page and "<th>samples/s</th>" in page and "<th>bubble (share)</th>" in page
    assert page.count('<table class="results">') == 1 and "function sortTable" in page
    assert "http://" not in page and "https://" not in page          # nothing to fetch: the page works offline
    keys = {r.meta["config_key"] for r in __import__("ppbench.measure.results", fromlist=["x"]).load_runs(results)[0]}
    for key in keys:
        assert f'id="row-{key}"' in page
    assert "Which schedule is fastest" in page and "1f1b is fastest" in page


def test_baseline_ratios_are_drawn(tmp_path):
    for name, times in (("new", (1.0, 1.1)), ("old", (2.0, 2.2))):
        fixture_run(tmp_path / name, step_times=times)
    code, _, _ = run_report(str(tmp_path / "new"), "table", str(tmp_path / "out"), None, None, None,
                            str(tmp_path / "old"))
    assert code == 0 and (tmp_path / "out" / "baseline.png").read_bytes().startswith(PNG)
    assert 'src="baseline.png"' in (tmp_path / "out" / "index.html").read_text()


def test_advice_records_join_the_report(results):
    record = {"format": "ppbench-advice", "version": 1, "model": "mlp/tiny", "world_size": 2, "global_batch": 8,
              "considered": 40, "ranked": [{"schedule": "1f1b", "p": 2, "d": 1, "m": 4, "v": 1,
                                            "iteration_time": 0.010}],
              "verified": [{"schedule": "1f1b", "p": 2, "d": 1, "m": 4, "v": 1, "predicted_rank": 1,
                            "predicted_iteration_time": 0.010, "measured_iteration_time": 0.0125, "error": -0.2},
                           {"schedule": "gpipe", "p": 2, "d": 1, "m": 4, "v": 1, "predicted_rank": 2,
                            "predicted_iteration_time": 0.011, "measured_iteration_time": 0.0112,
                            "error": 0.011 / 0.0112 - 1}]}
    (results / "advice").mkdir()
    (results / "advice" / "advice-x.json").write_text(json.dumps(record))
    run_report(str(results), "table", None, None, None, None, None)
    page = (results / "report" / "index.html").read_text()
    assert ("mlp/tiny on 2 ranks, global batch 8: ppbench advise predicts 1f1b p=2 d=1 m=4 fastest (10 ms per "
            "iteration) of 40 candidates; of 2 verified, 1 within 10% of measured (largest error -20%, 1f1b p=2 m=4), "
            "and the measured fastest is predicted rank 2.") in page
    assert (results / "report" / "advice.png").read_bytes().startswith(PNG)
