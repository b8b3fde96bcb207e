"""ppbench: reference pipeline-parallel schedules over MPI, proven against single-device training."""

__version__ = "0.1.0"
