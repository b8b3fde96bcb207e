"""Result files: atomic, typed round trip through pandas, and defensive reading."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppbench.config import RunConfig
from ppbench.measure.results import SCHEMA_VERSION, ResultFileError, config_key, load_runs, read_run, write_run


def events():
    return pd.DataFrame({"step": [1, 1], "rank": [0, 1], "op": ["F", "RECV_F"], "mb": [0, 0], "chunk": [0, 0],
                         "start": [0.0, 0.25], "end": [1.5, 2.0], "peer": [-1, 0], "tag": [-1, 0],
                         "nbytes": [0, 4096]})


def write(tmp_path, **changes):
    cfg = RunConfig(**changes).to_dict()
    return write_run(tmp_path, cfg, {"host": "h", "cores": 2}, [{"step": 1, "step_time": 2.0}],
                     {"step_time_median": 2.0}, events())


def test_round_trip_keeps_types_and_metadata(tmp_path):
    path = write(tmp_path, schedule="gpipe")
    run = read_run(path)
    assert run.meta["schema"] == SCHEMA_VERSION and run.config["schedule"] == "gpipe"
    assert run.meta["config_key"] == config_key(run.config)
    assert run.meta["steps"] == [{"step": 1, "step_time": 2.0}]
    pd.testing.assert_frame_equal(run.events, events())
    assert pd.read_parquet(path)["nbytes"].dtype == "int64"          # plain pandas reads it too
    assert not list(tmp_path.glob(".*.partial"))


def test_runs_never_overwrite_each_other(tmp_path):
    paths = {write(tmp_path) for _ in range(5)}
    assert len(paths) == 5 and len(load_runs(tmp_path)[0]) == 5


def test_config_key_ignores_fault_but_not_real_settings():
    base = RunConfig().to_dict()
    assert config_key(base) == config_key({**base, "fault": "1:F0"})
    assert config_key(base) != config_key({**base, "microbatches": 8})


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
