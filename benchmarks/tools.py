"""The speed of the tools around the runs: ``ppbench report`` on the result files committed in
``results/`` (a few hundred), and building schedules."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


class Report:
    timeout = 600
    number = 1
    repeat = (1, 3, 120.0)

    def setup(self):
        if not any(RESULTS.glob("*.parquet")):
            raise NotImplementedError(f"no result files in {RESULTS}")

    def time_report(self):
        import tempfile

        from ppbench.report.summary import run_report

        with tempfile.TemporaryDirectory() as out:
            code, _, _ = run_report(str(RESULTS), "table", out, None, None, None, None, write=True)
        assert code == 0

    def track_result_files(self):
        return len(list(RESULTS.glob("*.parquet")))

    track_result_files.unit = "files"


class BuildSchedule:
    params = [["1f1b", "interleaved", "zb-h1", "zb-v", "dualpipev"]]
    param_names = ["schedule"]

    def time_build_p8_m64(self, schedule):
        from ppbench.plan.schedules import build_schedule

        build_schedule(schedule, 8, 64)
