"""A hostile but realistic user: sizes that cannot eat the machine, a job that dies with its
launcher, errors without tracebacks, divergence called by its name, hangs that end.

These start ppbench as a user would (a subprocess; MPI jobs of their own), outside mpiexec.
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppbench.run.launch import _LAUNCHER_VARS

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 120


def env(**extra) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}, **extra}


def ppbench(*args: str, memory: int | None = None, **extra) -> tuple[subprocess.CompletedProcess, float]:
    """Run ppbench; ``memory`` caps its address space (bytes), as a small machine would."""
    def cap():
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ppbench", *args], capture_output=True, text=True, timeout=LIMIT,
                          env=env(**extra), cwd=ROOT, preexec_fn=cap)
    return proc, time.monotonic() - start


@pytest.mark.parametrize("args,message", [
    (["check", "--microbatches", "1000000000"], "invalid microbatches: must be an integer in 1..65536, got 1000000000"),
    (["schedule", "1f1b", "-p", "100000", "-m", "100000"], "invalid stages x microbatches: ppbench schedule prints "
                                                           "every action: p=100000 x m=100000 makes up to"),
    (["simulate", "--schedule", "1f1b", "-p", "100000", "-m", "100000"],
     "invalid stages x microbatches: simulating p=100000 x m=100000 needs about 3725.3 GiB"),
    (["run", "--workload", "synthetic", "--message-bytes", "10000000000"],
     "invalid message_bytes: must be an integer in 4..2147483647, got 10000000000"),
    (["run", "--workload", "synthetic", "--message-bytes", "1000000000", "-m", "16"],
     "invalid memory: this run needs about 62.1 GiB (2 ranks x 31.0 GiB"),
    (["run", "--global-batch", "400000000"], "invalid memory: this run needs about"),
    (["check", "--lr", "inf"], "invalid lr: must be a finite number in 1e-12..1e+06, got inf"),
    (["check", "--pp", "2", "--lr", "1e30", "--steps", "5"], "invalid lr: must be a finite number"),
])
def test_sizes_past_their_limit_are_refused_in_seconds_under_a_memory_cap(args, message):
    proc, elapsed = ppbench(*args, memory=2 * 2**30)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 15


def test_a_run_that_needs_more_than_the_host_is_refused_naming_the_parts():
    from ppbench.config import ConfigError, RunConfig
    from ppbench.resources import check_run_fits, run_memory

    cfg = RunConfig(workload="synthetic", message_bytes=2**20, microbatches=8).validate()
    parts = run_memory(cfg)
    assert parts == {"process": 300 * 2**20, "messages": 2**20 * (1 + 2 * 8)}
    need = 2 * sum(parts.values())
    check_run_fits(cfg, 2, available=int(need / 0.8) + 1)                 # just fits
    with pytest.raises(ConfigError, match=r"invalid memory: this run needs about 634 MiB \(2 ranks x 317 MiB: "
                                          r"process 300 MiB, messages 17 MiB\)"):
        check_run_fits(cfg, 2, available=int(need / 0.8) - 1)             # just does not


def test_a_simulation_built_from_action_lists_is_sized_at_their_cost():
    from ppbench.config import ConfigError
    from ppbench.resources import check_simulation_fits, simulation_memory

    actions = 3 * 1024 * 2 * 4096                       # zb-v (no array twin) at p = 1024, m = 4096
    extra = actions * 8 + 2 * 1024 * 4096 * 8
    assert simulation_memory(1024, 4096, 2) == actions * 120 + extra
    assert simulation_memory(1024, 4096, 2, listed=True) == actions * 300 + extra
    check_simulation_fits(1024, 4096, 2, available=8 * 2**30)                    # arrays: 3.1 GiB fits
    with pytest.raises(ConfigError, match=r"needs about 7\.3 GiB \(300 bytes per action\)"):
        check_simulation_fits(1024, 4096, 2, available=8 * 2**30, listed=True)


@pytest.mark.parametrize("args,message", [
    (["check", "--timeout", "0"], "argument --timeout: must be seconds in (0, 604800], got '0'"),
    (["check", "--timeout", "-1"], "argument --timeout: must be seconds in (0, 604800], got '-1'"),
    (["run", "--timeout", "nan"], "argument --timeout: must be seconds in (0, 604800], got 'nan'"),
])
def test_timeouts_must_be_positive_and_finite(args, message):
    proc, _ = ppbench(*args)
    assert proc.returncode == 2 and message in proc.stderr


def test_output_paths_are_checked_before_any_work(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for args in (["run", "--pp", "1", "--workload", "synthetic", "--results", str(afile)],
                 ["sweep", "--world-sizes", "1", "--workloads", "synthetic", "--results", str(afile)],
                 ["report", str(ROOT / "results"), "--out", str(afile)]):
        proc, elapsed = ppbench(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"{afile} exists and is not a directory" in proc.stderr and elapsed < 10
    assert afile.read_text() == "x"


@pytest.mark.parametrize("launcher,status,message", [
    ("/nonexistent/mpiexec", 2, "ppbench: error: PPBENCH_MPIEXEC='/nonexistent/mpiexec' is not an executable program"),
    ("/bin/false", 1, "ppbench: the MPI job exited with status 1: /bin/false -n 2"),
])
def test_launcher_problems_are_one_clear_line(launcher, status, message):
    proc, _ = ppbench("check", PPBENCH_MPIEXEC=launcher)
    assert proc.returncode == status and message in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback_of_a_user_error():
    proc, _ = ppbench("--debug", "check", PPBENCH_MPIEXEC="/nonexistent/mpiexec")
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "LauncherError" in proc.stderr


def test_an_exploding_loss_is_diverged_not_equivalent():
    proc, _ = ppbench("check", "--in-process", "--pp", "2", "--lr", "1e5", "--steps", "10", "--json")
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["diverged"] and not result["passed"]
    assert result["diverged_step"] == 1 and result["steps_run"] == 2
    text, _ = ppbench("check", "--in-process", "--pp", "2", "--lr", "1e5", "--steps", "10")
    assert "DIVERGED at step 1: the loss went from 1.0238 " in text.stdout and "EQUIVALENT" not in text.stdout


def running(marker: str) -> list[str]:
    """Command lines of this machine's processes that mention ``marker``."""
    out = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eww" not in line]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_ppbench_ends_its_whole_mpi_job(tmp_path, signum):
    results = tmp_path / f"signal-{int(signum)}"                     # also marks this job's processes
    proc = subprocess.Popen([sys.executable, "-m", "ppbench", "run", "--pp", "2", "--workload", "synthetic",
                             "--repeats", "2000", "--results", str(results)], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(running(str(results))) < 4 and time.monotonic() < deadline:   # ppbench, mpiexec, 2 ranks
        time.sleep(0.2)
    assert len(running(str(results))) >= 4
    time.sleep(2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum
    assert f"ppbench: stopped by {signal.Signals(signum).name}: ended the MPI job (2 ranks)" in stderr
    time.sleep(5)
    assert running(str(results)) == []
    assert list(results.glob("*.parquet")) == []


def test_a_sweep_killed_or_stopped_resumes_exactly_where_it_stopped(tmp_path):
    """SIGKILL to the sweep's whole process group (a crash), then SIGTERM to ppbench (a polite stop):
    each time the finished files stay whole, half-written ones stay invisible, no claim is left,
    and the next sweep runs only what is missing."""
    from ppbench.measure.results import load_runs

    args = [sys.executable, "-m", "ppbench", "sweep", "--schedules", "gpipe,1f1b", "--world-sizes", "1",
            "--microbatches", "1,2,3", "--workloads", "synthetic", "--t-fwd", "0.03", "--t-bwd", "0.06",
            "--repeats", "2", "--results", str(tmp_path)]

    def start_and_wait_for(files: int) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + LIMIT
        while len(list(tmp_path.glob("*.parquet"))) < files and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    crashed = start_and_wait_for(2)
    os.killpg(crashed.pid, signal.SIGKILL)                 # the sweep and the run it was in
    crashed.communicate(timeout=30)
    runs, skipped = load_runs(tmp_path)
    assert 2 <= len(runs) < 6 and skipped == []           # finished files intact, partial ones invisible
    stopped = start_and_wait_for(len(runs) + 1)           # (it removes any claim the killed sweep left)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=30)
    assert stopped.returncode == 143 and "stopped by SIGTERM" in stderr
    time.sleep(1)
    done = {r.meta["config_key"] for r in load_runs(tmp_path)[0]}
    assert len(runs) < len(done) < 6 and not list(tmp_path.glob(".*.claim"))
    again = subprocess.run(args, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=LIMIT)
    assert again.returncode == 0 and f"{len(done)} of 6 configurations already in" in again.stdout
    runs_after, skipped = load_runs(tmp_path)
    keys = [r.meta["config_key"] for r in runs_after]
    assert len(keys) == len(set(keys)) == 6 and done <= set(keys) and skipped == []


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".x.parquet.{host}-99999999.partial"           # no such process
    live = tmp_path / f".y.parquet.{host}-{os.getpid()}.partial"      # this test: alive
    elsewhere = tmp_path / ".z.parquet.other-host-1.partial"          # another host's writer: not ours to judge
    for path in (dead, live, elsewhere):
        path.write_bytes(b"half")
    proc, _ = ppbench("run", "--pp", "1", "--workload", "synthetic", "--repeats", "1", "--quiet",
                      "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not dead.exists() and live.exists() and elsewhere.exists()
    assert len(list(tmp_path.glob("*.parquet"))) == 1


def test_two_sweeps_never_run_the_same_configuration(tmp_path):
    from ppbench.run.sweep import claim

    mine = claim(tmp_path, "k1")
    assert mine is not None and mine.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert claim(tmp_path, "k1") is None                               # held by a live process
    (tmp_path / ".k2.claim").write_text(f"{socket.gethostname()} 99999999")
    assert claim(tmp_path, "k2") is not None                           # its sweep died: taken over
    (tmp_path / ".k3.claim").write_text("other-host 1")
    assert claim(tmp_path, "k3") is None                               # another host's sweep: left alone


def test_a_stalled_rank_ends_the_job_with_what_every_rank_waits_for():
    proc, elapsed = ppbench("run", "--pp", "3", "--microbatches", "3", "--no-save", "--stall-timeout", "2",
                            "--fault", "1:B0:hang")
    assert proc.returncode != 0
    for rank in range(3):
        assert f"no action started for 2 s (--stall-timeout): rank {rank} (replica 0)" in proc.stderr
    assert "waiting for 0RECV_B0 (gradient from rank 1)" in proc.stderr
    assert elapsed < 40


def test_a_run_notices_when_another_process_shares_its_cores(tmp_path):
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    try:
        proc, _ = ppbench("run", "--pp", "1", "--workload", "synthetic", "--t-fwd", "0.02", "--t-bwd", "0.04",
                          "--repeats", "20", "--json", "--no-save")
    finally:
        busy.kill()
    summary = json.loads(proc.stdout)
    # one spinning process on this host's cores, against a run that mostly sleeps
    assert summary["shared_cores"] and summary["foreign_cpu_share"] > 1 / (2 * os.cpu_count())


def test_stale_partials_are_found_on_hosts_with_dotted_names(tmp_path, monkeypatch):
    from ppbench.measure import results

    monkeypatch.setattr(results.socket, "gethostname", lambda: "node1.cluster.org")
    dead = tmp_path / ".x.parquet.node1.cluster.org-99999999.partial"
    live = tmp_path / f".y.parquet.node1.cluster.org-{os.getpid()}.partial"
    other = tmp_path / ".z.parquet.node2.cluster.org-99999999.partial"
    for path in (dead, live, other):
        path.write_bytes(b"half")
    assert results.remove_stale_partials(tmp_path) == [dead]
    assert live.exists() and other.exists()
