"""The command line as users run it: self-launch under mpiexec, exit codes, messages, no hangs.

These tests start their own MPI jobs, so they run outside mpiexec (nox's plain pytest run).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppbench.run.launch import _LAUNCHER_VARS

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 120  # seconds; every job here must end long before


def ppbench(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ppbench", *args], capture_output=True, text=True, timeout=LIMIT,
                          env=env, cwd=ROOT)
    return proc, time.monotonic() - start


def test_check_launches_itself_under_mpiexec_and_prints_json():
    proc, _ = ppbench("check", "--schedule", "gpipe", "--pp", "2", "--microbatches", "3", "--model", "gpt", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "only rank 0 prints"
    result = json.loads(lines[0])
    for key in ("schedule", "pp", "dp", "microbatches", "dtype", "max_abs_err", "max_rel_err", "passed"):
        assert key in result
    assert result["passed"] is True and result["world_size"] == 2 and result["max_rel_err"] <= 1e-10


def test_check_prints_a_readable_verdict():
    proc, _ = ppbench("check", "--pp", "1", "--steps", "2", "--optimizer", "adam")
    assert proc.returncode == 0, proc.stderr
    assert "EQUIVALENT: max rel err" in proc.stdout and "parameters after 2 steps" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--microbatches", "0"], "invalid microbatches: must be an integer in 1..65536, got 0"),
    (["--schedule", "zb"], "invalid schedule: 'zb' is not one of: naive, gpipe, 1f1b"),
    (["--pp", "3", "--global-batch", "8", "-m", "3"], "invalid global_batch: 8 does not split"),
])
def test_bad_configuration_exits_2_before_launching(args, message):
    proc, elapsed = ppbench("check", *args)
    assert proc.returncode == 2
    assert f"ppbench: error: {message}" in proc.stderr


def test_wrong_world_size_inside_mpiexec_exits_2_on_every_rank():
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    proc = subprocess.run([sys.executable, "-m", "ppbench.run.launch", "-n", "2", "--timeout", "60", "--",
                           sys.executable, "-m", "ppbench", "check", "--pp", "4"],
                          capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("invalid pp x dp: pp=4 x dp=1 = 4 must equal the MPI world size 2") == 1


@pytest.mark.parametrize("fault,stage,action", [
    ("0:F1", 0, "0F1 [forward of microbatch 1 on stage 0]"),
    ("1:B0", 1, "1B0 [full backward of microbatch 0 on stage 1]"),
    ("1:SEND_B2", 1, "1SEND_B2 [send gradient of microbatch 2 on stage 1]"),
    ("2:2RECV_F1", 2, "2RECV_F1 [receive activation of microbatch 1 on stage 2]"),
])
def test_failure_on_one_rank_ends_the_whole_job(fault, stage, action):
    proc, elapsed = ppbench("check", "--pp", "3", "--microbatches", "3", "--fault", fault)
    rank = fault.split(":")[0]
    assert proc.returncode != 0
    assert f"rank {rank} (replica 0), stage {stage}, failed in action {action}" in proc.stderr
    assert elapsed < 30


def test_mpi_test_failing_on_one_rank_aborts_the_job_instead_of_hanging():
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ppbench.run.launch", "-n", "2", "--timeout", "60", "--",
                           sys.executable, "-m", "pytest", "--with-mpi", "-p", "no:cacheprovider", "-q",
                           "tests/probes/one_rank_fails.py"],
                          capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    elapsed = time.monotonic() - start
    assert proc.returncode not in (0, 124), proc.stdout + proc.stderr
    assert "MPI test failed on rank 1 of 2" in proc.stderr and "deliberate failure on rank 1" in proc.stderr
    assert elapsed < 30


@pytest.mark.parametrize("fault,expected", [
    ("2:F1:nan", "rank 2 (replica 0), stage 2, failed in action 2F1 [forward of microbatch 1 on stage 2] of step 0: "
                 "NonFiniteLoss: loss of microbatch 1 is nan"),
    ("0:F2:nan", "failed in action 2F2 [forward of microbatch 2 on stage 2] of step 0: NonFiniteLoss: loss of "
                 "microbatch 2"),
])
def test_nan_loss_ends_the_job_naming_where_it_appeared(fault, expected):
    proc, elapsed = ppbench("check", "--pp", "3", "--microbatches", "3", "--fault", fault)
    assert proc.returncode != 0 and expected in proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr      # one line, not buried
    assert elapsed < 30


def test_rank_killed_by_a_signal_ends_the_job():
    proc, elapsed = ppbench("check", "--pp", "3", "--microbatches", "3", "--fault", "1:B0:kill")
    assert proc.returncode != 0
    assert elapsed < 30


def test_step_time_limit_reports_who_waits_on_what():
    # rank 1 hangs inside B0: rank 0 waits for its gradient, rank 2 is left waiting for activation 2
    proc, elapsed = ppbench("run", "--pp", "3", "--microbatches", "3", "--no-save", "--step-timeout", "3",
                            "--fault", "1:B0:hang")
    assert proc.returncode != 0
    assert "step time limit of 3 s exceeded: rank 1 (replica 0), stage 1, in action 1B0" in proc.stderr
    assert ("step time limit of 3 s exceeded: rank 0 (replica 0), stage 0, in action 0B0 [full backward of "
            "microbatch 0 on stage 0], waiting for 0RECV_B0 (gradient from rank 1)") in proc.stderr
    assert "rank 2 (replica 0), stage 2, in action 2F2 [forward of microbatch 2 on stage 2], waiting for 2RECV_F2 " \
           "(activation from rank 1)" in proc.stderr
    assert elapsed < 30


def test_every_config_field_round_trips_through_run_options():
    from ppbench.cli import _config, _parser
    from ppbench.config import RunConfig
    from ppbench.run.sweep import config_args

    cfg = RunConfig(schedule="gpipe", pp=3, dp=2, microbatches=5, global_batch=20, model="gpt", size="small",
                    dtype="float32", seed=7, steps=2, optimizer="adam", lr=0.5, transport="blocking",
                    fault="1:F0:nan", step_timeout=9.0, device="cpu", workload="synthetic", t_fwd=0.25,
                    t_bwd=0.5, message_bytes=1024, warmup=3, repeats=4)
    assert _config(_parser().parse_args(["run", *config_args(cfg)])) == cfg


def test_check_in_process_needs_no_mpi_launcher():
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    env["PPBENCH_MPIEXEC"] = "/nonexistent/mpiexec"           # any launch attempt would fail
    proc = subprocess.run([sys.executable, "-m", "ppbench", "check", "--in-process", "--schedule", "interleaved",
                           "--pp", "2", "-m", "4", "--chunks", "2", "--model", "gpt", "--json"],
                          capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["in_process"] and result["passed"] and result["max_rel_err"] <= 1e-10
    bad = subprocess.run([sys.executable, "-m", "ppbench", "check", "--in-process", "--dp", "2"],
                         capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "invalid in-process: runs one replica (dp = 1)" in bad.stderr


def test_check_runs_a_users_schedule_file_under_mpi(tmp_path):
    from ppbench.plan.files import to_csv
    from ppbench.plan.schedules import compute_order

    path = tmp_path / "mine.csv"
    path.write_text(to_csv([compute_order("interleaved", 2, 4, r, 2) for r in range(2)]))
    proc, _ = ppbench("check", "--schedule-file", str(path), "--pp", "2", "-m", "4", "--model", "gpt", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["passed"] and result["schedule_file"] == str(path) and result["max_rel_err"] <= 1e-10
    blocking, _ = ppbench("check", "--schedule-file", str(path), "--pp", "2", "-m", "4", "--transport", "blocking")
    assert blocking.returncode == 2
    said = f"invalid schedule_file: {path} deadlocks with the blocking transport; allowed: nonblocking"
    assert said in blocking.stderr


def test_run_measures_a_users_schedule_file_and_the_report_names_it(tmp_path):
    from ppbench.measure.results import config_key, load_runs
    from ppbench.plan.files import to_json
    from ppbench.plan.schedules import compute_order, placement_for
    from ppbench.report.summary import run_report

    path = tmp_path / "mine.json"
    ranks = [compute_order("looped-bfs", 2, 4, r, 2) for r in range(2)]
    path.write_text(to_json(ranks, placement_for("looped-bfs", 2, 2), 4, "mine"))
    results = tmp_path / "results"
    proc, _ = ppbench("run", "--schedule-file", str(path), "--pp", "2", "-m", "4", "--workload", "synthetic",
                      "--repeats", "2", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert f"ppbench run: file {path} (nonblocking)" in proc.stdout and "(theory -, simulated" in proc.stdout
    (run,), skipped = load_runs(results)
    assert skipped == [] and run.label == "file:mine" and run.meta["schedule"]["name"] == "mine"
    assert run.meta["config_key"] != config_key(run.config)               # the file's digest is part of the key
    assert run.meta["summary"]["peak_in_flight_theory"] == [8, 8]         # from the file's own plan
    code, text, _ = run_report(str(results), "json", str(tmp_path / "report"), None, None, None, None)
    row = json.loads(text)[0]
    assert code == 0 and row["schedule"] == "file:mine" and row["bubble_theory"] is None
    assert 0 < row["bubble_simulated"] < 1 and (tmp_path / "report" / "timeline-file_mine-p2-m4-synthetic.png").exists()


def test_a_sweep_runs_schedule_files_and_resumes_them_by_their_digest(tmp_path):
    from ppbench.plan.files import to_csv
    from ppbench.plan.schedules import compute_order

    path = tmp_path / "mine.csv"
    path.write_text(to_csv([compute_order("1f1b", 2, 4, r) for r in range(2)]))
    args = ["sweep", "--schedules", "", "--schedule-files", str(path), "--world-sizes", "1,2", "--microbatches",
            "2,4", "--workloads", "synthetic", "--repeats", "1", "--results", str(tmp_path / "r")]
    first, _ = ppbench(*args)
    assert first.returncode == 0, first.stderr
    assert "ppbench sweep: 1 run, 0 failed, 0 already recorded" in first.stdout      # only p = 2, m = 4 fits
    assert f"left out {path} world=1 m=2" in first.stdout
    again, _ = ppbench(*args)
    assert "1 of 1 configurations already in" in again.stdout
    path.write_text(to_csv([compute_order("gpipe", 2, 4, r) for r in range(2)]))       # same name, new actions
    changed, _ = ppbench(*args)
    assert "ppbench sweep: 1 run, 0 failed, 0 already recorded" in changed.stdout


def test_torch_threads_per_rank_are_the_same_however_the_run_was_launched():
    cores = len(os.sched_getaffinity(0))
    common = ["run", "--workload", "synthetic", "--t-fwd", "0.0005", "--t-bwd", "0.001", "--warmup", "0",
              "--repeats", "1", "--no-save", "--json"]

    def environment(*args: str, launcher: bool = False) -> dict:
        if launcher:       # the same run, started by mpiexec instead of directly
            proc = subprocess.run([sys.executable, "-m", "ppbench.run.launch", "-n", "1", "--timeout", str(LIMIT),
                                   "--", sys.executable, "-m", "ppbench", *common, *args],
                                  capture_output=True, text=True, timeout=LIMIT, cwd=ROOT)
        else:
            proc = ppbench(*common, *args)[0]
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])["environment"]

    alone, launched = environment("--pp", "1"), environment("--pp", "1", launcher=True)
    assert alone["threads_per_rank"] == launched["threads_per_rank"] == cores
    two = environment("--pp", "2")
    assert (two["threads_per_rank"], two["oversubscribed"]) == (max(1, cores // 2), 2 > cores)
    forced = environment("--pp", "2", "--threads", str(cores))
    assert (forced["threads_per_rank"], forced["oversubscribed"]) == (cores, True)      # 2 x cores > cores
