"""Control: torch.distributed.pipelining used directly, the way its users write a training loop.

The same model, layers, partition, data and optimizer as ``ppbench run`` on the same options;
nothing of ppbench's harness runs inside the loop (no executor, no tracer, no hooks). Each step:
``zero_grad``, ``schedule.step``, ``optimizer.step``; a step is timed from a barrier to the end of
the optimizer step, and the slowest rank's time is the iteration time. Batches are made before the
loop, as a data loader would have them ready.

Launch it under MPI, one process per stage (it makes its gloo process group from the MPI job)::

    mpiexec -n 2 python benchmarks/torch_direct.py --schedule 1f1b -m 8 --model mlp --size medium \\
        --global-batch 256 --dtype float32 --repeats 7

It prints one JSON object: the iteration time of every measured step (seconds) and their median.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="1f1b")
    parser.add_argument("-m", "--microbatches", type=int, default=8)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--size", default="small")
    parser.add_argument("--global-batch", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import torch.distributed as dist
    from mpi4py import MPI
    from torch import nn
    from torch.distributed import pipelining

    from ppbench.config import RunConfig
    from ppbench.plan.schedules import SCHEDULES
    from ppbench.run import models
    from ppbench.run.training import make_optimizer

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    # the same configuration object ppbench would use, for the model, batch and optimizer only
    cfg = RunConfig(schedule=args.schedule, pp=size, microbatches=args.microbatches, model=args.model,
                    size=args.size, global_batch=args.global_batch, dtype=args.dtype, seed=args.seed,
                    threads=args.threads).validate(world_size=size)
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cfg.threads or max(1, cores // local.Get_size()))
    port = None
    if rank == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
    port = world.bcast(port, root=0)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)

    model_cfg = cfg.model_config()
    layers = models.build_layers(model_cfg, cfg.seed, cfg.torch_dtype)
    spec = SCHEDULES[cfg.schedule]
    v = cfg.chunks
    split = cfg.stage_split(size * v)
    stage_ids = [rank + k * size for k in range(v)] if spec.placement != "v" else [rank, 2 * size - 1 - rank]
    chunks = [nn.Sequential(*(layers[i] for i in split[s])) for s in stage_ids]
    stages = [pipelining.PipelineStage(chunk, s, size * v, torch.device("cpu")) for chunk, s in zip(chunks, stage_ids)]
    schedule_cls = getattr(pipelining, spec.torch_class)
    schedule = schedule_cls(stages if v > 1 else stages[0], n_microbatches=cfg.microbatches,
                            loss_fn=lambda out, tgt: models.loss_fn(model_cfg, out, tgt))
    params = [p for chunk in chunks for p in chunk.parameters()]
    optimizer = make_optimizer(cfg, params)
    holds_input = 0 in stage_ids
    holds_target = size * v - 1 in stage_ids
    batches = [models.make_batch(model_cfg, cfg.batch, cfg.seed, step, cfg.torch_dtype)
               for step in range(args.warmup + args.repeats)]

    times = []
    for step, (x, y) in enumerate(batches):
        world.Barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        schedule.step(*((x,) if holds_input else ()), **({"target": y} if holds_target else {}))
        optimizer.step()
        elapsed = world.allreduce(time.perf_counter() - start, op=MPI.MAX)
        if step >= args.warmup:
            times.append(elapsed)
    if rank == 0:
        print(json.dumps({"schedule": cfg.schedule, "pp": size, "microbatches": cfg.microbatches,
                          "model": cfg.model, "size": cfg.size, "batch": cfg.batch, "dtype": cfg.dtype,
                          "threads": torch.get_num_threads(), "iteration_times": times,
                          "iteration_time_median": statistics.median(times)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
