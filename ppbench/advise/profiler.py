"""``ppbench profile`` on every rank of its MPI job: what one machine takes for one model.

Every rank measures the same things at the same time, so each measurement sees the machine as a
pipeline's ranks see it (on a CPU host they share cores and memory bandwidth); the profile keeps
the median over ranks. What is measured:

1. Each layer alone, per microbatch size: F (the layer's forward, with the loss on the last
   layer), B (its whole backward), then I and W of the split backward that zero-bubble
   schedules run (:mod:`ppbench.run.weight_grad`), the bytes its forward saves for backward and
   the bytes I keeps for W; the optimizer's step over its parameters. Medians of ``repeats``.
2. The machine, by running the workload as a pipeline with ppbench's own executor over all the
   job's ranks (:func:`calibrate`): per-action overhead and message latency as lines in the
   message bytes, and for each op a line from a stage's profiled time to its time in the
   pipeline, where ranks compute side by side (on a shared CPU host they slow each other down;
   the synthetic workload's sleeps overshoot). Gradient averaging over all ranks at several
   sizes gives its own line.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ppbench.config import RunConfig
from ppbench.run import models
from ppbench.run.stages import SavedBytes
from ppbench.run.training import make_optimizer
from ppbench.run.weight_grad import DeferWeightGrads, WeightGradStore

__all__ = ["profile_layers", "synthetic_layers", "calibrate", "run_profile"]

#: Allreduce sizes (bytes) measured, besides the model's gradient sizes
ALLREDUCE_BYTES = (4096, 1 << 20)


def _timed(fn, sync) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def profile_layers(cfg: RunConfig, sizes: list[int], repeats: int, device: torch.device) -> list[dict]:
    """Per layer: F, B, I, W seconds, saved and W-held bytes per microbatch size (medians of
    ``repeats`` rounds after one warm-up round), parameters and the optimizer's seconds per step.

    Each round times every layer at every size once, so a slow spell of the host (on a shared VM,
    tens of percent for a second) spreads over all of them instead of skewing one size."""
    model = cfg.model_config()
    dtype = cfg.torch_dtype
    layers = [layer.to(device) for layer in models.build_layers(model, cfg.seed, dtype)]
    last = len(layers) - 1
    x_all, y_all = (t.to(device) for t in models.make_batch(model, max(sizes), cfg.seed, 0, dtype))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = [{k: [] for k in ("fwd", "bwd", "inp", "wgrad", "saved_bytes", "wgrad_bytes")} for _ in layers]
    cells = []                                  # (layer index, forward of that layer at that size, its grad)
    for size in sizes:
        x, target = x_all[:size], y_all[:size]
        for i, layer in enumerate(layers):
            def run(inp=x, i=i, layer=layer, target=target):
                out = layer(inp.detach().requires_grad_(i > 0) if inp.is_floating_point() else inp)
                return models.loss_fn(model, out, target) if i == last else out

            with torch.no_grad():
                y = run()
            cells.append((i, run, None if i == last else torch.randn_like(y), WeightGradStore()))
            rows[i]["saved_bytes"].append(SavedBytes(layer).measure(run)[1])
            if i < last:
                x = y
    samples = [{k: [] for k in ("fwd", "bwd", "inp", "wgrad")} for _ in cells]
    held = [0] * len(cells)
    for rep in range(repeats + 1):
        for k, (_, run, grad, store) in enumerate(cells):
            times, held[k] = _time_layer_once(run, grad, store, rep, sync)
            if rep:                                   # the first round warms caches and allocators
                for key, t in times.items():
                    samples[k][key].append(t)
    for k, (i, *_) in enumerate(cells):
        for key, values in samples[k].items():
            rows[i][key].append(statistics.median(values))
        # W never exceeds B: a split backward does the same work in two parts
        rows[i]["wgrad"][-1] = min(rows[i]["wgrad"][-1], rows[i]["bwd"][-1])
        rows[i]["wgrad_bytes"].append(held[k])
    for i, layer in enumerate(layers):
        params = [p for p in layer.parameters() if p.requires_grad]
        rows[i]["params"] = sum(p.numel() for p in params)
        rows[i]["param_bytes"] = sum(p.numel() * p.element_size() for p in params)
        rows[i]["optimizer"] = _optimizer_seconds(cfg, params, repeats, sync)
    return rows


def _time_layer_once(run, grad, store: WeightGradStore, key: int, sync) -> tuple[dict[str, float], int]:
    """F, B, I, W seconds of one layer (``run`` does its forward), and the bytes I keeps for W."""
    box: list = []
    f = _timed(lambda: box.append(run()), sync)
    b = _timed(lambda: torch.autograd.backward(box[0], grad), sync)
    with DeferWeightGrads(store):
        out = run()
    store.collecting = key
    try:
        i = _timed(lambda: torch.autograd.backward(out, grad), sync)
    finally:
        store.collecting = None
    held = store.pending_bytes(key)
    w = _timed(lambda: store.compute(key), sync)
    return {"fwd": f, "bwd": b, "inp": i, "wgrad": w}, held


def _optimizer_seconds(cfg: RunConfig, params: list[nn.Parameter], repeats: int, sync) -> float:
    if not params:
        return 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer = make_optimizer(cfg, params)
    times = [_timed(optimizer.step, sync) for _ in range(repeats + 1)][1:]
    return statistics.median(times)


def synthetic_layers(layers: int, t_fwd: float, t_bwd: float, sizes: list[int]) -> list[dict]:
    """The synthetic workload as a profile: ``layers`` equal layers whose forward and backward take
    ``t_fwd`` and ``t_bwd`` seconds per sample for the whole model (I and W each half of B, as the
    synthetic stage sleeps them); no parameters, nothing saved."""
    def per(total: float) -> list[float]:
        return [total * s / layers for s in sizes]

    zeros = [0] * len(sizes)
    return [{"fwd": per(t_fwd), "bwd": per(t_bwd), "inp": per(t_bwd / 2), "wgrad": per(t_bwd / 2),
             "saved_bytes": zeros, "wgrad_bytes": zeros, "params": 0, "param_bytes": 0, "optimizer": 0.0}
            for _ in range(layers)]


def calibrate(cfg: RunConfig, comm, rows: list[dict] | None, sizes: list[int], repeats: int,
              synthetic: dict | None) -> dict | None:
    """Run the profiled workload as a pipeline over all of ``comm``'s ranks: 1F1B and ZB-H1 at the
    smallest, the middle and the largest profiled microbatch size, m = 2 p. Their events give lines in the
    message bytes for the per-action overhead and the message latency (the calibration of
    ``ppbench simulate --from-run``), and for each of F, I, W, B a line from the profiled time of
    a stage (the sum over its layers) to what it took in the pipeline, where ranks compute side by
    side; and the optimizer's scale. Rank 0 returns the machine record (``rows``: the profiled
    layers, there); the other ranks None."""
    from ppbench.measure.metrics import compute_times
    from ppbench.measure.results import read_run
    from ppbench.sim.calibrate import measured_samples

    n = comm.Get_size()
    # per op: (profiled stage time, its layers, time in the pipeline)
    points: dict[str, list[tuple[float, int, float]]] = {op: [] for op in ("F", "I", "W", "B")}
    messages, overheads, latencies, optimizer = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ppbench-profile-") as tmp:
        for schedule in ("1f1b", "zb-h1"):
            for size in sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]}):
                run_cfg = replace(cfg, schedule=schedule, pp=n, dp=1, microbatches=2 * n, global_batch=2 * n * size,
                                  warmup=1, repeats=repeats, serial_steps=0)
                split = None
                if synthetic is not None:
                    at = [sum(r[k][sizes.index(size)] for r in synthetic["rows"]) / n for k in ("fwd", "bwd")]
                    run_cfg = replace(run_cfg, workload="synthetic", t_fwd=at[0], t_bwd=at[1],
                                      message_bytes=max(4, synthetic["message_bytes"] * size))
                else:
                    split = run_cfg.stage_split(n)
                summary = run_benchmark_quiet(run_cfg, comm, tmp)
                if comm.Get_rank() != 0:
                    continue
                run = read_run(summary["path"])
                samples = measured_samples(run.events)
                nbytes = run_cfg.message_bytes if synthetic is not None else _message_bytes(run_cfg)
                messages.append(nbytes)
                overheads.append(float(np.median(samples["overhead"])) if samples["overhead"].size else 0.0)
                latencies.append(float(np.median(samples["comm"])) if samples["comm"].size else 0.0)
                measured = compute_times(run.events, n)
                k = sizes.index(size)
                for op, key in (("F", "fwd"), ("I", "inp"), ("W", "wgrad"), ("B", "bwd")):
                    for s in range(n):
                        if np.isfinite(measured[op][s]):
                            if synthetic is not None:           # one slept action, whatever its layers
                                asked, units = {"F": run_cfg.t_fwd, "B": run_cfg.t_bwd}.get(op, run_cfg.t_bwd / 2), 1
                            else:
                                asked, units = sum(rows[i][key][k] for i in split[s]), len(split[s])
                            points[op].append((asked, units, measured[op][s]))
                if synthetic is None:
                    planned = max(sum(rows[i]["optimizer"] for i in r) for r in split)
                    if planned > 0:
                        optimizer.append(summary["optimizer_time_median"] / planned)
        skew = _replica_skew(cfg, comm, sizes[-1], repeats, synthetic, tmp)
    if comm.Get_rank() != 0:
        return None
    overhead, overhead_per_byte = _line(messages, overheads)
    latency, per_byte = _line(messages, latencies)
    offsets, scales = {}, {}
    for op, pts in points.items():
        offsets[op], scales[op] = _compute_line(pts)
    return {"overhead": overhead, "overhead_per_byte": overhead_per_byte, "latency": latency,
            "seconds_per_byte": per_byte, "compute_offset": offsets, "compute_scale": scales,
            "compute_offset_per": "action" if synthetic is not None else "layer",
            "optimizer_scale": float(np.median(optimizer)) if optimizer else 1.0, "replica_skew": skew,
            "calibration": {"message_bytes": messages, "overhead": overheads, "latency": latencies,
                            "compute_points": points, "ranks": n, "runs": "1f1b and zb-h1, m = 2p, smallest, "
                            "middle and largest profiled microbatch size"}}


def _replica_skew(cfg: RunConfig, comm, size: int, repeats: int, synthetic: dict | None, tmp: str) -> float:
    """How long, as a share of the step time, the gradient average waits for the slowest of n
    replicas doing the same work side by side (1F1B, p = 1, d = n, m = 2): per step, the longest
    ALLREDUCE event minus the shortest (the fastest replica waits that long), over the step time."""
    from ppbench.measure.results import read_run

    n = comm.Get_size()
    run_cfg = replace(cfg, schedule="1f1b", pp=1, dp=n, microbatches=2, global_batch=2 * n * size, warmup=1,
                      repeats=repeats, serial_steps=0, split="")
    if synthetic is not None:
        per = [sum(r[k][-1] for r in synthetic["rows"]) for k in ("fwd", "bwd")]
        run_cfg = replace(run_cfg, workload="synthetic", t_fwd=per[0], t_bwd=per[1],
                          message_bytes=max(4, synthetic["message_bytes"] * size))
    summary = run_benchmark_quiet(run_cfg, comm, tmp)
    if comm.Get_rank() != 0:
        return 0.0
    events = read_run(summary["path"]).events
    shares = []
    for _, step in events.groupby("step"):
        waits = step[step["op"] == "ALLREDUCE"]
        compute = step[step["op"].isin(["F", "I", "W", "B"])]
        span = float(compute["end"].max() - compute["start"].min())
        if len(waits) == n and span > 0:
            durations = (waits["end"] - waits["start"]).to_numpy()
            shares.append(float(durations.max() - durations.min()) / span)
    return float(np.median(shares)) if shares else 0.0


def run_benchmark_quiet(cfg: RunConfig, comm, directory: str) -> dict | None:
    from ppbench.run.runner import run_benchmark

    return run_benchmark(cfg, comm, directory if comm.Get_rank() == 0 else None)


def _message_bytes(cfg: RunConfig) -> int:
    shape = models.activation_shape(cfg.model_config(), cfg.microbatch_size)
    return int(np.prod(shape)) * torch.tensor([], dtype=cfg.torch_dtype).element_size()


def _compute_line(points: list[tuple[float, int, float]]) -> tuple[float, float]:
    """(offset per unit, scale) of pipeline time = scale x profiled time + offset x units, least squares.
    The offset may be negative: a layer timed alone pays its own call overheads, which a stage's
    chain of layers partly does not."""
    if len(points) < 2:
        return 0.0, 1.0
    a = np.array([[t, units] for t, units, _ in points], dtype=float)
    y = np.array([m for *_, m in points], dtype=float)
    (scale, offset), *_ = np.linalg.lstsq(a, y, rcond=None)
    if scale <= 0:                                # degenerate (all points alike): a plain ratio
        return 0.0, float(y.sum() / max(a[:, 0].sum(), 1e-12))
    return float(offset), float(scale)


def _line(x: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (x, y), both clipped at 0."""
    if len(x) < 2:
        return max(float(y[0]), 0.0), 0.0
    slope, intercept = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return max(float(intercept), 0.0), max(float(slope), 0.0)


def _allreduce_line(comm, sizes: list[int], repeats: int) -> tuple[float, float, list[int], list[float]]:
    """(intercept, slope) of the time ppbench's gradient averaging takes over all ranks
    (:func:`ppbench.run.training.average_gradients`: gather into one buffer, Allreduce, scale,
    scatter back), with the sizes and times measured."""
    from mpi4py import MPI

    from ppbench.run.training import average_gradients

    times = []
    for nbytes in sizes:
        param = nn.Parameter(torch.zeros(max(1, nbytes // 4), dtype=torch.float32))
        param.grad = torch.ones_like(param)
        samples = []
        for _ in range(repeats + 1):
            comm.Barrier()
            start = time.perf_counter()
            average_gradients([param], comm, comm.Get_size(), staging=False)
            samples.append(time.perf_counter() - start)
        times.append(comm.allreduce(statistics.median(samples[1:]), op=MPI.MAX))
    a, b = _line(sizes, times)
    return a, b, sizes, times


def run_profile(cfg: RunConfig, comm, sizes: list[int], repeats: int, synthetic: dict | None) -> dict | None:
    """The whole profile (rank 0 returns the record; the others None). ``synthetic``: the synthetic
    workload's layers, t_fwd, t_bwd and message bytes per sample instead of measuring a model."""
    from mpi4py import MPI

    from ppbench.run.device import select_device
    from ppbench.run.environment import environment, set_threads

    set_threads(cfg.threads, comm)
    env = environment(comm)
    if synthetic is None:
        device = select_device(comm, cfg.device)
        env["device_used"] = str(device)
        gathered = comm.gather(profile_layers(cfg, sizes, repeats, device), root=0)
        layers = _median_over_ranks(gathered) if comm.Get_rank() == 0 else None
        per_sample = _message_bytes(replace(cfg, dp=1, microbatches=1, global_batch=1))   # one sample
        model_fields = {"model": cfg.model, "size": cfg.size, **cfg.dimensions()}
    else:
        layers = synthetic_layers(synthetic["layers"], synthetic["t_fwd"], synthetic["t_bwd"], sizes)
        synthetic = {**synthetic, "rows": layers}
        per_sample = synthetic["message_bytes"]
        model_fields = {"t_fwd": synthetic["t_fwd"], "t_bwd": synthetic["t_bwd"], "layers": synthetic["layers"]}
    machine = calibrate(cfg, comm, layers, sizes, repeats, synthetic)
    if comm.Get_rank() == 0:
        grads = sorted({int(sum(r["param_bytes"] for r in layers[:k])) for k in range(1, len(layers) + 1)})
    ar = _allreduce_line(comm, sorted(set(comm.bcast(grads[-4:] if comm.Get_rank() == 0 else None, root=0))
                                      | set(ALLREDUCE_BYTES)), repeats)
    comm.Barrier()
    if comm.Get_rank() != 0:
        return None
    n = comm.Get_size()
    a, b, ar_sizes, ar_times = ar
    # gradient averaging over n ranks measured as a line; a ring Allreduce costs 2 (n - 1) latencies
    # and moves 2 (n - 1) / n of the bytes per rank, which scales the line to other replica counts
    machine["allreduce_latency"] = a / (2 * (n - 1))
    machine["allreduce_seconds_per_byte"] = b * n / (2 * (n - 1))
    machine["calibration"]["allreduce"] = {"bytes": ar_sizes, "seconds": ar_times, "ranks": n}
    return {"model": model_fields, "model_name": cfg.model_name if synthetic is None else "synthetic",
            "workload": "model" if synthetic is None else "synthetic", "dtype": cfg.dtype, "optimizer": cfg.optimizer,
            "microbatch_sizes": list(sizes), "message_bytes_per_sample": int(per_sample), "layers": layers,
            "machine": machine, "environment": {**env, "profile_ranks": n, "repeats": repeats,
                                                "mpi_wtick": MPI.Wtick()}}


def _median_over_ranks(gathered: list[list[dict]]) -> list[dict]:
    """Each number of each layer: the median over the ranks that measured it."""
    out = []
    for i, first in enumerate(gathered[0]):
        row = {}
        for k, v in first.items():
            values = [rank_rows[i][k] for rank_rows in gathered]
            row[k] = [float(np.median(col)) for col in zip(*values)] if isinstance(v, list) else \
                (int(np.median(values)) if isinstance(v, int) else float(np.median(values)))
            if k.endswith("bytes") and isinstance(v, list):
                row[k] = [int(x) for x in row[k]]
        out.append(row)
    return out
