"""ppbench: reference pipeline-parallel schedules over MPI, proven against single-device training.

The names a script needs are importable from here (docs/api.md lists them); each is loaded on
first use, so ``import ppbench`` loads neither torch nor MPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0"

_PUBLIC = {
    # building and reading schedules (no torch, no MPI)
    "Op": "ppbench.plan.actions", "Action": "ppbench.plan.actions", "parse_action": "ppbench.plan.actions",
    "Placement": "ppbench.plan.placement",
    "SCHEDULES": "ppbench.plan.schedules", "compute_order": "ppbench.plan.schedules",
    "build_schedule": "ppbench.plan.schedules", "schedule_problem": "ppbench.plan.schedules",
    "placement_for": "ppbench.plan.schedules", "add_communication": "ppbench.plan.comm",
    "bubble_fraction": "ppbench.plan.theory",
    # simulating
    "Costs": "ppbench.sim.costs", "simulate": "ppbench.sim.simulator", "DeadlockError": "ppbench.sim.simulator",
    "schedule_arrays": "ppbench.plan.arrays", "simulate_arrays": "ppbench.sim.array_simulator",
    "array_metrics": "ppbench.sim.array_simulator",
    # configuring, checking and measuring (torch and MPI)
    "RunConfig": "ppbench.config", "ConfigError": "ppbench.config",
    "run_check": "ppbench.run.check", "check_in_process": "ppbench.run.check",
    "run_benchmark": "ppbench.run.runner",
    # result files and reports
    "Run": "ppbench.measure.results", "read_run": "ppbench.measure.results", "load_runs": "ppbench.measure.results",
    "ResultFileError": "ppbench.measure.results", "step_metrics": "ppbench.measure.metrics",
    "tidy_table": "ppbench.report.summary",
    # schedules from files
    "read_schedule": "ppbench.plan.files", "parse_schedule": "ppbench.plan.files", "to_csv": "ppbench.plan.files",
    "to_json": "ppbench.plan.files", "validate_schedule": "ppbench.sim.validate",
    # advice from a profile
    "read_profile": "ppbench.advise.profile_file", "ProfileError": "ppbench.advise.profile_file",
    "advise": "ppbench.advise.predict", "predict": "ppbench.advise.predict",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ppbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
