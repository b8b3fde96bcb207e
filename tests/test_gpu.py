"""The CUDA path. Skipped on machines without a CUDA GPU (CI has none)."""

import pytest
import torch
from conftest import world_size

from ppbench.config import ConfigError, RunConfig

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none here")


def test_asking_for_cuda_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error cannot happen here")
    with pytest.raises(ConfigError, match="'cuda' requested but torch sees no CUDA device"):
        RunConfig(device="cuda").validate()


@needs_gpu
@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_gradients_on_gpu_match_the_reference(schedule, dtype):
    from mpi4py import MPI

    from ppbench.run.check import TOLERANCE, run_check

    result = run_check(RunConfig(schedule=schedule, pp=world_size(), microbatches=4, model="gpt", dtype=dtype,
                                 device="cuda", steps=2), MPI.COMM_WORLD)
    assert result["max_rel_err"] <= TOLERANCE[dtype], result


@needs_gpu
@pytest.mark.mpi
def test_gpu_run_records_device_and_allocator_peak(tmp_path):
    from mpi4py import MPI

    from ppbench.run.runner import run_benchmark

    directory = MPI.COMM_WORLD.bcast(str(tmp_path), root=0)
    summary = run_benchmark(RunConfig(pp=world_size(), model="gpt", device="cuda", repeats=2), MPI.COMM_WORLD,
                            directory)
    if summary is not None:
        assert summary["environment"]["device_used"].startswith("cuda:")
        assert all(b > 0 for b in summary["peak_device_bytes"])
