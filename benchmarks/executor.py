"""The executor's own cost: one step of a plan whose computations take no time, on one rank in
one process (no MPI, no threads), so the time is the executor's bookkeeping per action and
nothing else. ``track_fastest_step`` is the benchmark that catches a slower executor between
commits (recipe in docs/results.md): CPU-bound, single-threaded, and the fastest of many steps.
"""

M = 512        # microbatches: 1024 actions (F and B, or F, I and W) per step


class ExecutorStep:
    params = [["1f1b", "zb-h1"]]
    param_names = ["schedule"]
    number = 3
    repeat = (10, 20, 10.0)     # per round: at least 10 samples, at most 20 or 10 s
    rounds = 4                  # with --interleave-rounds, the compared commits alternate round by round
    warmup_time = 0.2

    def setup(self, schedule):
        import torch

        from ppbench.plan.comm import add_communication
        from ppbench.plan.schedules import compute_order, placement_for
        from ppbench.run.executor import Executor
        from ppbench.run.stages import SyntheticStage
        from ppbench.run.transport import LocalHub, LocalTransport

        placement = placement_for(schedule, 1)
        order = compute_order(schedule, 1, M, 0)
        stages = {s: SyntheticStage(0.0, 0.0, 4, True, True) for s in placement.stages_of(0)}
        self.executor = Executor(rank=0, placement=placement, stages=stages,
                                 actions=add_communication(order, placement), transport=LocalTransport(LocalHub(), 0),
                                 mode="nonblocking", activation_shape=(1,), dtype=torch.float32, num_microbatches=M)
        self.data = [torch.zeros(1)] * M

    def time_step(self, schedule):
        self.executor.run(self.data, self.data)

    def track_fastest_step(self, schedule):
        """The fastest of 50 steps: on a shared 2-core machine the slow tail of a step's time is the
        neighbours' (a median moves by 10-20 % between runs of the same code), the fastest step is
        the code's (it moves by under 1 %), so this is the metric that catches a regression."""
        import time

        fastest = float("inf")
        for _ in range(50):
            start = time.perf_counter()
            self.executor.run(self.data, self.data)
            fastest = min(fastest, time.perf_counter() - start)
        return fastest

    track_fastest_step.unit = "seconds"
