"""``ppbench profile`` and ``ppbench advise``: the profile file's contract, the partitioner, the
memory cap, predictions against closed forms, and the commands end to end."""

import itertools
import json
import math
import random

import pytest
import torch

from ppbench.advise.candidates import enumerate_candidates, partition
from ppbench.advise.predict import advise, predict
from ppbench.advise.profile_file import FORMAT, VERSION, ProfileError, read_profile, write_profile
from ppbench.plan.theory import bubble_fraction
from tests.test_cli import ppbench

OPS = ("F", "I", "W", "B")


def machine(**overrides) -> dict:
    base = {"overhead": 0.0, "overhead_per_byte": 0.0, "latency": 0.0, "seconds_per_byte": 0.0,
            "allreduce_latency": 0.0, "allreduce_seconds_per_byte": 0.0, "optimizer_scale": 1.0, "replica_skew": 0.0,
            "compute_offset": dict.fromkeys(OPS, 0.0), "compute_scale": dict.fromkeys(OPS, 1.0),
            "compute_offset_per": "layer"}
    return {**base, **overrides}


def profile_record(layers: int = 4, sizes=(1, 2, 4), fwd: float = 1.0, bwd: float = 2.0, param_bytes: int = 100,
                   saved_per_sample: int = 10, optimizer: str = "sgd", opt_seconds: float = 0.0, **machine_fields):
    """A hand-built profile: every layer alike, times linear in the microbatch size."""
    return {"model": {"model": "mlp", "size": "tiny"}, "model_name": "hand-built", "workload": "model",
            "dtype": "float32", "optimizer": optimizer, "microbatch_sizes": list(sizes), "message_bytes_per_sample": 4,
            "layers": [{"fwd": [fwd * s for s in sizes], "bwd": [bwd * s for s in sizes],
                        "inp": [bwd / 2 * s for s in sizes], "wgrad": [bwd / 2 * s for s in sizes],
                        "saved_bytes": [saved_per_sample * s for s in sizes], "wgrad_bytes": [0] * len(sizes),
                        "params": param_bytes // 4, "param_bytes": param_bytes, "optimizer": opt_seconds}
                       for _ in range(layers)],
            "machine": machine(**machine_fields), "environment": {"threads_per_rank": 1}}


@pytest.fixture
def write(tmp_path):
    def make(record: dict, name: str = "profile.json"):
        path = tmp_path / name
        write_profile(path, record)
        return read_profile(path)
    return make


# ------------------------------------------------------------------------------------ the profile file

@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(version=VERSION + 1), f"profile version {VERSION + 1} is not supported"),
    (lambda r: r.update(format="something-else"), "not a ppbench profile"),
    (lambda r: r.pop("machine"), "missing field 'machine'"),
    (lambda r: r["layers"][2].pop("wgrad"), "layers[2] is missing field 'wgrad'"),
    (lambda r: r["layers"][0].update(fwd=[1.0]), "layers[0].fwd must be 3 finite numbers"),
    (lambda r: r["machine"].pop("latency"), "machine is missing field 'latency'"),
    (lambda r: r["machine"]["compute_scale"].pop("W"), "machine.compute_scale must map each of F, I, W, B"),
    (lambda r: r["layers"][1].update(wgrad=[9.0, 9.0, 9.0]), "layers[1]: W takes longer than the whole backward B"),
    (lambda r: r.update(microbatch_sizes=[4, 2, 1]), "microbatch_sizes must be"),
])
def test_a_bad_profile_is_refused_with_one_line_naming_the_problem(tmp_path, change, message):
    record = {"format": FORMAT, "version": VERSION, **profile_record()}
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ProfileError) as info:
        read_profile(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_advise_prints_a_bad_profile_as_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"format": FORMAT, "version": 0}))
    proc, _ = ppbench("advise", "--profile", str(bad), "--world-size", "2", "-o", str(tmp_path / "a"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"ppbench: error: invalid profile: {bad}: profile version 0 is not supported; "
                                   f"this ppbench reads version {VERSION} (run `ppbench profile` again)")
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    proc, _ = ppbench("advise", "--profile", str(not_json), "--world-size", "2")
    assert proc.returncode == 2 and "not JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("a.*")), "nothing is written for bad input"


def test_interpolation_between_profiled_sizes_and_refusal_outside(write):
    prof = write(profile_record(sizes=(2, 8)))
    assert prof.at(5)["fwd"][0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="outside the profiled sizes 2..8"):
        prof.at(1)


# ------------------------------------------------------------------------------------ the partitioner

def test_partition_by_profiled_time_minimises_the_slowest_stage_against_brute_force():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 8)
        costs = [rng.uniform(0.1, 10.0) for _ in range(n)]
        stages = rng.randint(1, n)
        split = partition(costs, stages)
        assert [i for r in split for i in r] == list(range(n)) and all(len(r) for r in split)
        best = min(max(sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, n)))
                   for cuts in itertools.combinations(range(1, n), stages - 1))
        assert max(sum(costs[i] for i in r) for r in split) == pytest.approx(best, rel=1e-12)


def test_layers_are_split_by_their_time_not_their_parameters(write):
    record = profile_record(layers=4)
    for i, layer in enumerate(record["layers"]):      # the first layer is as slow as the three others together
        scale = 3.0 if i == 0 else 1.0
        layer["fwd"] = [x * scale for x in layer["fwd"]]
        layer["bwd"] = [x * scale for x in layer["bwd"]]
        layer["inp"], layer["wgrad"] = [x / 2 for x in layer["bwd"]], [x / 2 for x in layer["bwd"]]
    ranked, _ = advise(write(record), 2, 4, ["1f1b"])
    assert {r.candidate.p: [len(s) for s in r.candidate.split] for r in ranked}[2] == [1, 3]


# ------------------------------------------------------------------------------------ memory

def test_the_memory_cap_excludes_exactly_the_candidates_that_exceed_it(write):
    """4 layers of 100 parameter bytes (SGD: parameters, gradients, momentum = 300 bytes each), 10
    saved bytes per sample per layer; N = 2, B = 4. Peak per busiest rank, by hand:
    p = 1 (4 layers, 1200 bytes of state): GPipe m=1 (b=2): 80 -> 1280; GPipe m=2 (b=1): 2 x 40 -> 1280;
    1F1B m=1: 80 -> 1280; 1F1B m=2: one microbatch at a time, 40 -> 1240.
    p = 2 (2 layers each, 600): GPipe keeps m x 20 b = 80 -> 680 for every m; 1F1B rank 0 keeps
    min(2, m) microbatches: m=1: 80, m=2: 2 x 40, m=4: 2 x 20 -> 680, 680, 640."""
    prof = write(profile_record())
    expected = {("gpipe", 1, 1): 1280, ("gpipe", 1, 2): 1280, ("1f1b", 1, 1): 1280, ("1f1b", 1, 2): 1240,
                ("gpipe", 2, 1): 680, ("gpipe", 2, 2): 680, ("gpipe", 2, 4): 680,
                ("1f1b", 2, 1): 680, ("1f1b", 2, 2): 680, ("1f1b", 2, 4): 640}
    ranked, excluded = advise(prof, 2, 4, ["gpipe", "1f1b"])
    assert not excluded
    assert {(r.candidate.schedule, r.candidate.p, r.candidate.m): r.peak_memory for r in ranked} == expected
    for cap in (1280, 1250, 1240, 680, 650, 640):
        ranked, excluded = advise(prof, 2, 4, ["gpipe", "1f1b"], memory_cap=cap)
        kept = {(r.candidate.schedule, r.candidate.p, r.candidate.m) for r in ranked}
        assert kept == {k for k, v in expected.items() if v <= cap}
        assert {(c.schedule, c.p, c.m) for c in excluded} == {k for k, v in expected.items() if v > cap}
        assert all("above the cap" in c.excluded for c in excluded)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "zb-h1", "zb-h2", "interleaved", "zb-v", "dualpipev",
                                      "1f1b-recompute"])
def test_memory_follows_each_ranks_order_action_by_action(write, schedule):
    """The vectorised peak against a plain walk over each rank's actions: F keeps the stage's saved
    bytes, I frees them but keeps what W needs, W frees that, B frees what F kept (with
    recomputation F keeps only the stage input)."""
    from ppbench.plan.schedules import SCHEDULES, compute_order, placement_for

    record = profile_record(layers=8, sizes=(1, 8))
    for i, layer in enumerate(record["layers"]):
        layer["saved_bytes"] = [(10 + i) * s for s in (1, 8)]
        layer["wgrad_bytes"] = [(3 + i) * s for s in (1, 8)]
        layer["param_bytes"] = 100 * (i + 1)
    prof = write(record)
    p, m = 2, 4
    (c,) = [c for c in enumerate_candidates(p, 8, 8, [schedule])
            if (c.p, c.m, c.v) == (p, m, SCHEDULES[schedule].default_chunks)]
    pred = predict(prof, c)
    placement = placement_for(schedule, p, c.v)
    recompute = SCHEDULES[schedule].recompute
    for r in range(p):
        live = peak = 0
        for a in compute_order(schedule, p, m, r, c.v):
            layers = c.split[a.stage]
            saved = 4 * 2 if recompute else sum((10 + i) * 2 for i in layers)     # b = 2
            held = sum((3 + i) * 2 for i in layers)
            live += {"F": saved, "I": held - saved, "W": -held, "B": -saved}[a.op.value]
            peak = max(peak, live)
        state = 3 * sum(100 * (i + 1) for s in placement.stages_of(r) for i in c.split[s])
        assert pred.memory_per_rank[r] == state + peak, (schedule, r)


def test_adam_keeps_two_states_and_a_split_backward_keeps_what_w_needs(write):
    record = profile_record(optimizer="adam")
    ranked, _ = advise(write(record, "adam.json"), 1, 4, ["1f1b"])
    assert {r.candidate.m: r.peak_memory for r in ranked}[4] == 400 * 4 + 40     # 4 states x 400 bytes + 1 microbatch
    record = profile_record()
    for layer in record["layers"]:
        layer["wgrad_bytes"] = [7 * s for s in record["microbatch_sizes"]]
    ranked, _ = advise(write(record, "zb.json"), 2, 4, ["zb-h1"])
    # ZB-H1 p=2 m=1 b=4, rank 0: F0 (+80), I0 (-80 + 56 kept for W), W0 (-56): peak 80 + 600 of state
    assert {r.candidate.m: r.peak_memory for r in ranked if r.candidate.p == 2}[1] == 680


# ------------------------------------------------------------------------------------ predictions

@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_prediction_with_free_communication_equals_the_closed_form(write, schedule):
    prof = write(profile_record(layers=8, sizes=(1, 8)))
    (c,) = [c for c in enumerate_candidates(4, 32, 8, [schedule]) if (c.p, c.m) == (4, 8)]
    pred = predict(prof, c)
    # b = 4: each stage (2 layers) F = 8, B = 16 per microbatch; (m + p - 1)(F + B)
    assert pred.step_time == pytest.approx((8 + 4 - 1) * 24)
    assert pred.bubble == pytest.approx(bubble_fraction(schedule, 4, 8))
    assert pred.iteration_time == pytest.approx(pred.step_time)


def test_calibration_lines_overhead_latency_allreduce_and_optimizer_enter_the_prediction(write):
    plain = write(profile_record(layers=2, sizes=(1, 4), opt_seconds=3.0), "plain.json")
    tuned = write(profile_record(layers=2, sizes=(1, 4), opt_seconds=3.0, overhead=0.5, latency=0.25,
                                 allreduce_latency=1.0, allreduce_seconds_per_byte=0.01, optimizer_scale=2.0,
                                 replica_skew=0.1,
                                 compute_scale={"F": 2.0, "I": 1.0, "W": 1.0, "B": 3.0},
                                 compute_offset={"F": 1.0, "I": 0.0, "W": 0.0, "B": 0.0},
                                 compute_offset_per="action"), "tuned.json")

    def one(prof, p, d, m):
        (c,) = [c for c in enumerate_candidates(p * d, 8, 2, ["naive"]) if (c.p, c.d, c.m) == (p, d, m)]
        return predict(prof, c)

    # p = 1, d = 2, m = 1, b = 4: F = 2 x 4, B = 2 x 8 for two layers; optimizer 2 layers x 3 s
    base = one(plain, 1, 2, 1)
    assert base.step_time == pytest.approx(8 + 16) and base.iteration_time == pytest.approx(8 + 16 + 6)
    pred = one(tuned, 1, 2, 1)
    step = 0.5 + (1 + 2 * 8) + 0.5 + 3 * 16                  # overhead, F through its line, overhead, B
    allreduce = 2 * (2 - 1) * (1.0 + 200 / 2 * 0.01) + 0.1 * step   # ring over d = 2 of 200 bytes, after the skew
    assert pred.step_time == pytest.approx(step)
    assert pred.allreduce_time == pytest.approx(allreduce)
    assert pred.iteration_time == pytest.approx(step + allreduce + 2 * 6)
    # the offset counted per layer instead: the 2-layer stage's F pays it twice
    per_layer = write({**tuned.record, "machine": {**tuned.record["machine"], "compute_offset_per": "layer"}},
                      "per-layer.json")
    assert one(per_layer, 1, 2, 1).step_time == pytest.approx(step + 1.0)
    # p = 2, naive (blocking), b = 4, one layer per stage: F = 1 + 2 x 4 = 9, B = 3 x 8 = 24. Rank 0's F
    # ends at 0.5 + 9; rank 1's F waits for the message (+0.25) and ends at 18.75; its B runs
    # 19.25..43.25; rank 0's B starts when the gradient arrives (43.5) and ends at 67.5. Rank 1 holds
    # the last stage, so it steps its optimizer (2 x 3) without waiting for rank 0.
    (c,) = [c for c in enumerate_candidates(2, 4, 2, ["naive"]) if (c.p, c.d, c.m) == (2, 1, 1)]
    two = predict(tuned, c)
    assert two.step_time == pytest.approx(67.5) and two.iteration_time == pytest.approx(67.5 + 6)
    # a slow optimizer on the last stage's rank starts when that rank's own schedule ends (43.25)
    record = profile_record(layers=2, sizes=(1, 4), **{k: v for k, v in tuned.record["machine"].items()})
    record["layers"][1]["optimizer"] = 30.0
    late = predict(write(record, "late.json"), c)
    assert late.iteration_time == pytest.approx(43.25 + 2 * 30)


def test_a_candidate_outside_the_profiled_sizes_is_excluded_with_the_reason(write):
    ranked, excluded = advise(write(profile_record(sizes=(1, 2))), 1, 8, ["gpipe"])
    assert sorted(c.m for c in excluded) == [1, 2]                   # b = 8, 4
    assert all("outside the profiled sizes 1..2" in c.excluded for c in excluded)
    assert sorted(r.candidate.m for r in ranked) == [4, 8]


# ------------------------------------------------------------------------------------ the profiler

def test_profiled_layers_record_exact_saved_and_w_held_bytes():
    from ppbench.advise.profiler import profile_layers
    from ppbench.config import RunConfig

    cfg = RunConfig(model="mlp", size="tiny", dtype="float32", pp=1)
    rows = profile_layers(cfg, [1, 3], repeats=1, device=torch.device("cpu"))
    width = cfg.model_config().width
    assert len(rows) == cfg.model_config().num_layers
    for row in rows:
        # W keeps each linear layer's input and output gradient: 2 x b x width float32 values
        assert row["wgrad_bytes"] == [2 * b * width * 4 for b in (1, 3)]
        assert row["params"] == width * width + width and row["param_bytes"] == 4 * row["params"]
        assert all(w <= b for w, b in zip(row["wgrad"], row["bwd"]))
        assert all(math.isfinite(t) for k in ("fwd", "bwd", "inp", "wgrad") for t in row[k])


def test_profile_then_advise_then_verify_end_to_end(tmp_path):
    out = tmp_path / "syn.json"
    proc, _ = ppbench("profile", "--workload", "synthetic", "--layers", "4", "--fwd-per-sample", "0.0002",
                      "--bwd-per-sample", "0.0004", "--microbatch-sizes", "1,2,4", "--repeats", "2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["format"] == FORMAT and record["version"] == VERSION and record["workload"] == "synthetic"
    assert len(record["layers"]) == 4 and record["machine"]["calibration"]["ranks"] == 2
    again, _ = ppbench("profile", "--workload", "synthetic", "-o", str(out))
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    stem = tmp_path / "advice"
    proc, _ = ppbench("advise", "--profile", str(out), "-n", "2", "--global-batch", "8", "--schedules", "1f1b,gpipe",
                      "--verify", "1", "--repeats", "2", "--rounds", "1", "-o", str(stem))
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(stem.with_suffix(".json").read_text())
    assert advice["ranked"] and advice["verified"][0]["predicted_rank"] == 1
    top = advice["ranked"][0]
    row = advice["verified"][0]
    assert (row["schedule"], row["p"], row["d"], row["m"]) == (top["schedule"], top["p"], top["d"], top["m"])
    assert math.isfinite(row["measured_iteration_time"]) and row["run"]
    assert math.isfinite(row["compute_ratio"]) and math.isfinite(row["error_with_measured_compute"])
    assert "predicted ms" in proc.stdout and "measured ms" in proc.stdout and "error, measured compute" in proc.stdout
    assert stem.with_suffix(".csv").read_text().splitlines()[0].startswith("schedule,p,d,m,v,microbatch_size")


# ------------------------------------------------------------------------------------ --split

def test_split_sets_the_layers_of_each_stage_and_keeps_gradients_equivalent():
    from ppbench.config import ConfigError, RunConfig
    from ppbench.run.check import check_in_process

    cfg = RunConfig(schedule="zb-h1", pp=2, microbatches=4, split="6,2")
    assert cfg.validate().stage_split(2) == [range(0, 6), range(6, 8)]
    result = check_in_process(cfg)
    assert result["passed"] and result["stage_layers"] == [(0, 5), (6, 7)]
    for bad in ("4,3", "8,0", "2,2,4", "a,b", "4,4,"):
        with pytest.raises(ConfigError, match="layer counts .* adding up to the model's 8 layers, e.g. 4,4"):
            RunConfig(pp=2, split=bad).validate()


def test_measured_compute_replaces_the_profiled_one_stage_by_stage(write):
    prof = write(profile_record(layers=8, sizes=(1, 8)))
    (c,) = [c for c in enumerate_candidates(4, 32, 8, ["1f1b"]) if (c.p, c.m) == (4, 8)]
    planned = predict(prof, c)
    assert planned.stage_compute["F"] == [8.0] * 4 and planned.stage_compute["B"] == [16.0] * 4
    same = predict(prof, c, stage_compute=planned.stage_compute)
    assert same.iteration_time == planned.iteration_time
    # every F measured twice as long, B unknown (NaN keeps the profiled value): (m + p - 1)(2F + B)
    slower = predict(prof, c, stage_compute={"F": [16.0] * 4, "B": [float("nan")] * 4})
    assert slower.step_time == pytest.approx((8 + 4 - 1) * (16 + 16))


def test_a_users_schedule_file_is_predicted_like_the_builtin_it_equals(write, tmp_path):
    from ppbench.plan.files import read_schedule, to_json
    from ppbench.plan.schedules import build_schedule, placement_for

    path = tmp_path / "mine.json"
    path.write_text(to_json(build_schedule("1f1b", 2, 4), placement_for("1f1b", 2), 4, "mine"))
    prof = write(profile_record(layers=4, sizes=(1, 2), latency=0.5, overhead=0.1))
    ranked, excluded = advise(prof, 2, 8, ["1f1b"], files={str(path): read_schedule(path)})
    by_label = {(r.candidate.label, r.candidate.p, r.candidate.m): r for r in ranked}
    mine, builtin = by_label[(str(path), 2, 4)], by_label[("1f1b", 2, 4)]
    assert mine.iteration_time == builtin.iteration_time and mine.peak_memory == builtin.peak_memory
    assert mine.candidate.split == builtin.candidate.split
    assert sum(r.candidate.schedule_file == str(path) for r in ranked) == 1      # it fixes p = 2 and m = 4
