"""Result files: atomic, typed round trip through pandas, and defensive reading."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppbench.config import RunConfig
from ppbench.measure.results import SCHEMA_VERSION, ResultFileError, config_key, load_runs, read_run, write_run


def events():
    return pd.DataFrame({"step": [1, 1], "rank": [0, 1], "op": ["F", "RECV_F"], "stage": [0, 1], "mb": [0, 0],
                         "start": [0.0, 0.25], "end": [1.5, 2.0], "peer": [-1, 0], "tag": [-1, 0],
                         "nbytes": [0, 4096]})


ENV = {"host": "h", "cores": 2, "device": "cpu", "mpi_library": "MPICH", "oversubscribed": False, "torch": "2",
       "mpi4py": "4"}
STEPS = [{"step": 1, "step_time": 2.0, "throughput": 4.0, "bubble_mean": 0.25, "bubble_max": 0.5,
          "utilization": 0.75, "overlap": 0.5, "exposed_comm": 0.1}]
SUMMARY = {"step_time_median": 2.0, "bubble_mean_median": 0.25, "overlap_median": 0.5, "peak_in_flight": [2, 1],
           "peak_saved_bytes": [64, 32]}


def write(tmp_path, **changes):
    cfg = RunConfig(**changes).to_dict()
    return write_run(tmp_path, cfg, ENV, STEPS, SUMMARY, events())


def test_round_trip_keeps_types_and_metadata(tmp_path):
    path = write(tmp_path, schedule="gpipe")
    run = read_run(path)
    assert run.meta["schema"] == SCHEMA_VERSION and run.config["schedule"] == "gpipe"
    assert run.meta["config_key"] == config_key(run.config)
    assert run.meta["steps"] == STEPS
    pd.testing.assert_frame_equal(run.events, events())
    assert pd.read_parquet(path)["nbytes"].dtype == "int64"          # plain pandas reads it too
    assert not list(tmp_path.glob(".*.partial"))


def test_runs_never_overwrite_each_other(tmp_path):
    paths = {write(tmp_path) for _ in range(5)}
    assert len(paths) == 5 and len(load_runs(tmp_path)[0]) == 5


def test_config_key_ignores_fault_but_every_real_setting_changes_it():
    """A sweep resumes by these keys: a setting left out of the key would skip work never done."""
    from dataclasses import fields

    base = RunConfig().to_dict()
    assert config_key(base) == config_key({**base, "fault": "1:F0"})
    assert config_key(base) == config_key({**base, "stall_timeout": 5.0})
    other = {"str": "x", "int": 7, "float": 0.5}
    for f in fields(RunConfig):
        if f.name not in ("fault", "stall_timeout"):
            changed = {**base, f.name: other[type(f.default).__name__]}
            assert config_key(changed) != config_key(base), f.name
    # threads came later: at its default (0, chosen per host) a key is what it was before the field existed
    older = {k: v for k, v in base.items() if k != "threads"}
    assert config_key(older) == config_key(base) != config_key({**base, "threads": 2})


def test_foreign_truncated_and_newer_files_are_named_and_skipped(tmp_path):
    good = write(tmp_path)
    (tmp_path / "notes.parquet").write_text("not parquet at all")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:200])
    newer = tmp_path / "newer.parquet"
    table = pq.read_table(good)
    meta = json.loads(table.schema.metadata[b"ppbench"])
    meta["schema"] = SCHEMA_VERSION + 1
    pq.write_table(table.replace_schema_metadata({b"ppbench": json.dumps(meta).encode()}), newer)
    runs, skipped = load_runs(tmp_path)
    assert [r.path for r in runs] == [good]
    text = "\n".join(skipped)
    assert "notes.parquet: not a readable Parquet file" in text
    assert "foreign.parquet: not a ppbench result" in text
    assert "truncated.parquet: not a readable Parquet file" in text
    assert f"newer.parquet: schema version {SCHEMA_VERSION + 1} is newer" in text
    with pytest.raises(ResultFileError):
        read_run(newer)


def test_an_interrupted_write_leaves_no_result_file(tmp_path, monkeypatch):
    """The file appears under its name only once complete: a writer killed half-way leaves a hidden
    .partial file, which no reader picks up."""
    from ppbench.measure import results

    def half_written(table, path):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 truncated")
        raise KeyboardInterrupt          # the writer dies here

    monkeypatch.setattr(results.pq, "write_table", half_written)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path)
    assert list(tmp_path.glob("*.parquet")) == [] and len(list(tmp_path.glob(".*.partial"))) == 1
    assert load_runs(tmp_path) == ([], [])


def schema_1_file(tmp_path, schedule: str, pp: int, rows: list[tuple]) -> str:
    """A result file as ppbench 0.1 wrote it: rank-local chunk, and B for ZB-H1's input gradient."""
    frame = pd.DataFrame(rows, columns=["step", "rank", "op", "mb", "chunk", "start", "end", "peer", "tag", "nbytes"])
    config = RunConfig(schedule=schedule, pp=pp).to_dict()
    meta = {"schema": 1, "run_id": "old", "config_key": config_key(config), "config": config, "environment": ENV,
            "steps": STEPS, "summary": SUMMARY}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"ppbench": json.dumps(meta).encode()}), tmp_path / "old.parquet")
    return tmp_path / "old.parquet"


def test_schema_1_files_are_read_in_schema_2_terms(tmp_path):
    # interleaved, pp = 2: world rank 3 is stage 1 of replica 1; its chunk 1 is virtual stage 1 x 2 + 1 = 3
    path = schema_1_file(tmp_path, "interleaved", 2, [(1, 3, "F", 0, 1, 0.0, 1.0, -1, -1, 0),
                                                     (1, 2, "SEND_F", 0, 0, 0.0, 1.0, 3, 0, 8),
                                                     (1, 2, "WAIT", -1, 0, 0.0, 1.0, -1, -1, 0)])
    events = read_run(path).events
    assert "chunk" not in events and list(events["stage"]) == [3, 0, -1]
    zb = schema_1_file(tmp_path, "zb-h1", 2, [(1, 0, "F", 0, 0, 0.0, 1.0, -1, -1, 0),
                                               (1, 0, "B", 0, 0, 1.0, 2.0, -1, -1, 0),
                                               (1, 0, "W", 0, 0, 2.0, 3.0, -1, -1, 0)])
    assert list(read_run(zb).events["op"]) == ["F", "I", "W"]
    fused = schema_1_file(tmp_path, "1f1b", 2, [(1, 0, "F", 0, 0, 0.0, 1.0, -1, -1, 0),
                                                 (1, 0, "B", 0, 0, 1.0, 2.0, -1, -1, 0)])
    assert list(read_run(fused).events["op"]) == ["F", "B"]
