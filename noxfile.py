"""Test and benchmark sessions.

Every session runs in the environment nox is started from (``venv_backend="none"``): ppbench
must already be installed there (see README). This is deliberate: the torch you chose, CPU or
CUDA, is the one tested, and no session ever downloads a multi-GB torch build of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "mpi_tests"]
nox.options.default_venv_backend = "none"

PYTEST = ["python", "-m", "pytest", "-p", "no:cacheprovider", "--timeout=300", "--timeout_method=thread"]


def _require_ppbench(session: nox.Session) -> None:
    try:
        session.run("python", "-c", "import ppbench, torch, mpi4py", silent=True)
    except nox.command.CommandFailed:
        session.error("ppbench is not installed in this environment; run the README's install command first "
                      "(pip install torch==2.13.0 -e \".[mpich,test,bench]\")")


@nox.session
def mpi_tests(session: nox.Session) -> None:
    """All tests: the plain ones once, then the MPI ones under mpiexec at each world size.

    World sizes come from PPBENCH_TEST_WORLD_SIZES (default "1 2 4"); extra arguments are passed
    to pytest, e.g. ``nox -s mpi_tests -- -k 1f1b -x``. Every MPI job is killed after 600 s.
    """
    _require_ppbench(session)
    session.run(*PYTEST, "-m", "not mpi and not browser", *session.posargs)
    for size in os.environ.get("PPBENCH_TEST_WORLD_SIZES", "1 2 4").split():
        session.log(f"MPI tests at world size {size}")
        session.run("python", "-m", "ppbench.run.launch", "-n", size, "--timeout", "600", "--",
                    *PYTEST, "--with-mpi", "-m", "mpi", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree, mypy over the plan layer (the pure, torch-free core)."""
    _require_ppbench(session)
    session.run("ruff", "check", ".", *session.posargs, external=True)
    session.run("mypy", external=True)      # files and settings: [tool.mypy] in pyproject.toml


@nox.session(default=False)
def tests(session: nox.Session) -> None:
    """The tests that need no MPI launcher (fast feedback while editing)."""
    _require_ppbench(session)
    session.run(*PYTEST, "-m", "not mpi and not browser", *session.posargs)


@nox.session(default=False)
def browser_check(session: nox.Session) -> None:
    """The report of the committed results/ opened in headless Chromium, as a new user opens it:
    the findings come first, every image loads, clicking a header sorts the rows, the filter
    works, and the console has no errors. Needs Debian's ``chromium`` and ``chromium-driver``
    (``apt install chromium chromium-driver``; CI installs them). The page and two screenshots
    (first screen, whole page) are kept in .nox/browser_check/."""
    _require_ppbench(session)
    out = (Path(".nox") / "browser_check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    session.run(*PYTEST, "-m", "browser", "-s", "tests/test_browser.py", *session.posargs,
                env={"PPBENCH_BROWSER_REQUIRED": "1", "PPBENCH_BROWSER_OUT": str(out)})
    session.log(f"page: {out / 'report' / 'index.html'}; screenshots: {out / 'report-first-screen.png'}, "
                f"{out / 'report-whole-page.png'}")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The asv suite on a small grid (a few minutes on 2 cores) in this environment, saved under
    .asv/results for the current commit and published.

    ``nox -s bench -- --full`` runs the whole grid. Other arguments go to ``asv run``. Result files
    also land in results/asv-<time>/ for ``ppbench report results/``. (Plain ``asv run`` builds its
    own environment instead and benchmarks commits: docs/results.md.)
    """
    _require_ppbench(session)
    full = "--full" in session.posargs
    args = [a for a in session.posargs if a != "--full"]
    commit = session.run("git", "rev-parse", "HEAD", silent=True, external=True).strip()
    session.run("asv", "machine", "--yes", external=True)
    session.run("asv", "run", "--python=same", "--set-commit-hash", commit, "--show-stderr", *args, external=True,
                env={"PPBENCH_BENCH_QUICK": "0" if full else "1"})
    session.run("asv", "publish", external=True)
    session.log("view with: asv preview (then open the address it prints)")


@nox.session(default=False)
def asv_check(session: nox.Session) -> None:
    """What CI runs of asv: the benchmarks import and are well formed (in this environment), and
    ``asv.conf.json`` works: asv builds its own environment from the matrix, installs this commit
    into it and runs one small benchmark quickly (a broken configuration or matrix fails here)."""
    _require_ppbench(session)
    session.run("asv", "machine", "--yes", external=True)
    session.run("asv", "check", "--python=same", external=True)
    commit = session.run("git", "rev-parse", "HEAD", silent=True, external=True).strip()
    hashes = Path(".asv") / "ci-commit.txt"     # a hash file: works in a shallow clone too (no parent needed)
    hashes.parent.mkdir(exist_ok=True)
    hashes.write_text(commit + "\n")
    session.run("asv", "run", "--quick", "--show-stderr", "-b", "ExecutorStep.time_step", f"HASHFILE:{hashes}",
                external=True)
