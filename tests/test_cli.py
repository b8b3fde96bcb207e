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

from ppbench.launch import _LAUNCHER_VARS

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
    (["--microbatches", "0"], "invalid microbatches: must be an integer >= 1, got 0"),
    (["--schedule", "zb"], "invalid schedule: 'zb' is not one of: naive, gpipe, 1f1b"),
    (["--pp", "3", "--global-batch", "8", "-m", "3"], "invalid global_batch: 8 does not split"),
])
def test_bad_configuration_exits_2_before_launching(args, message):
    proc, elapsed = ppbench("check", *args)
    assert proc.returncode == 2
    assert f"ppbench: error: {message}" in proc.stderr


def test_wrong_world_size_inside_mpiexec_exits_2_on_every_rank():
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    proc = subprocess.run([sys.executable, "-m", "ppbench.launch", "-n", "2", "--timeout", "60", "--",
                           sys.executable, "-m", "ppbench", "check", "--pp", "4"],
                          capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("invalid pp x dp: pp=4 x dp=1 = 4 must equal the MPI world size 2") == 1


@pytest.mark.parametrize("fault,stage,action", [
    ("0:F1", 0, "F1 [F (forward) of microbatch 1"),
    ("1:B0", 1, "B0 [B (backward) of microbatch 0"),
    ("1:SEND_B2", 1, "SEND_B2 [SEND_B (send gradient) of microbatch 2"),
    ("2:RECV_F1", 2, "RECV_F1 [RECV_F (receive activation) of microbatch 1"),
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
    proc = subprocess.run([sys.executable, "-m", "ppbench.launch", "-n", "2", "--timeout", "60", "--",
                           sys.executable, "-m", "pytest", "--with-mpi", "-p", "no:cacheprovider", "-q",
                           "tests/probes/one_rank_fails.py"],
                          capture_output=True, text=True, timeout=LIMIT, env=env, cwd=ROOT)
    elapsed = time.monotonic() - start
    assert proc.returncode not in (0, 124), proc.stdout + proc.stderr
    assert "MPI test failed on rank 1 of 2" in proc.stderr and "deliberate failure on rank 1" in proc.stderr
    assert elapsed < 30
