"""Terminal text for ppbench's commands: the check verdict, a run's summary, measured vs simulated."""

from __future__ import annotations

from ppbench.config import RunConfig

__all__ = ["check_text", "run_text", "comparison_text"]


def check_text(r: dict) -> str:
    stages = " ".join(f"[{a}..{b}]" for a, b in r["stage_layers"])
    lines = [
        f"ppbench check: {('file ' + r['schedule_file']) if r.get('schedule_file') else r['schedule']}  "
        f"pp={r['pp']} dp={r['dp']} microbatches={r['microbatches']}"
        + ("  (in process)" if r.get("in_process") else "") + "  "
        f"model={r.get('model_name', r['model'] + '/' + r['size'])} {r['dtype']}  "
        f"global batch={r['global_batch']}  steps={r['steps']}"
        + (f" ({r['optimizer']}, lr={r['lr']})" if r["steps"] else ""),
        f"  stage layers: {stages}",
        f"  loss {r['loss']:.12g}  (reference {r['ref_loss']:.12g}, rel err {r['loss_rel_err']:.2e})",
        f"  gradients:  max abs err {r['grad_max_abs_err']:.2e}  max rel err {r['grad_max_rel_err']:.2e}",
    ]
    if r["steps"]:
        lines.append(f"  parameters after {r.get('steps_run', r['steps'])} steps: "
                     f"max abs err {r['param_max_abs_err']:.2e}  max rel err {r['param_max_rel_err']:.2e}")
    if r.get("diverged"):
        lines.append(f"  DIVERGED at step {r['diverged_step']}: the loss went from {r['first_loss']:.6g} to "
                     f"{r['ref_loss']:.6g} (reference) / {r['loss']:.6g} (pipeline); numbers this large compare "
                     "nothing, so no verdict on equivalence; lower --lr")
    else:
        verdict = "EQUIVALENT" if r["passed"] else "NOT EQUIVALENT"
        lines.append(f"  {verdict}: max rel err {r['max_rel_err']:.2e} vs tolerance {r['tolerance']:.0e}")
    return "\n".join(lines)


def run_text(cfg: RunConfig, s: dict) -> str:
    env = s["environment"]
    work = (f"synthetic F={cfg.t_fwd * 1e3:g} ms B={cfg.t_bwd * 1e3:g} ms, {cfg.message_bytes} B/message"
            if cfg.workload == "synthetic" else f"model {cfg.model_name} {cfg.dtype}")
    over = " OVERSUBSCRIBED" if env["oversubscribed"] else ""
    return "\n".join([
        f"ppbench run: {('file ' + cfg.schedule_file) if cfg.schedule_file else cfg.schedule} "
        f"({cfg.resolved_transport})  pp={cfg.pp} dp={cfg.dp} m={cfg.microbatches}  "
        f"{work}  batch={cfg.batch}",
        f"  on {env['host']}: {env['world_size']} ranks x {env.get('threads_per_rank', '?')} torch threads, "
        f"{env['cores']} cores{over}, {env['device']}, "
        f"{env['mpi_library']}",
        f"  step time   median {s['step_time_median'] * 1e3:.3f} ms  (min {s['step_time_min'] * 1e3:.3f}, "
        f"max {s['step_time_max'] * 1e3:.3f}; {s['steps']} steps)",
        f"  throughput  {s['throughput_median']:.1f} samples/s (iteration {s['iteration_time_median'] * 1e3:.3f} ms "
        f"incl. allreduce {s['allreduce_time_median'] * 1e3:.3f} ms, "
        f"optimizer {s['optimizer_time_median'] * 1e3:.3f} ms)",
        f"  bubble      mean {s['bubble_mean_median']:.3f}  max {s['bubble_max_median']:.3f}  "
        f"(theory {_number(s['bubble_theory'])}, simulated with this run's costs {s['bubble_simulated']:.3f})   "
        f"utilization {s['utilization_median']:.3f}",
        f"  overlap     {s['overlap_median']:.3f}   exposed communication {s['exposed_comm_median'] * 1e3:.3f} ms/rank",
        f"  in flight   {s['peak_in_flight']} (theory {s['peak_in_flight_theory']})   "
        f"saved activations {[round(b / 1024, 1) for b in s['peak_saved_bytes']]} KiB per stage",
        *_compute_lines(s.get("compute_time_per_stage")),
        *_serial_lines(s, cfg.pp),
        f"  clock skew  <= {s['clock_skew_max'] * 1e6:.1f} us   tracing overhead ~{s['trace_overhead'] * 100:.2f}% "
        f"of step time   polling ~{s.get('poll_overhead', float('nan')) * 100:.2f}% (busiest rank)",
        f"  other work  {s['foreign_cpu_share'] * 100:.1f}% of the host's CPU time went to other processes"
        + ("  SHARED CORES: these timings are disturbed" if s["shared_cores"] else ""),
        f"  saved to    {s['path']}" if s["path"] else "  not saved (--no-save)",
    ])


def _compute_lines(times: dict | None) -> list[str]:
    """Median ms of one F, I, W, B per stage, for the ops that ran."""
    if not times:
        return []
    ran = {op: v for op, v in times.items() if any(t == t for t in v)}
    return ["  per stage   " + "   ".join(f"{op} " + " ".join(_number(t * 1e3, 2) for t in v) for op, v in ran.items())
            + " ms (median of one action)"]


def _serial_lines(s: dict, p: int) -> list[str]:
    if "efficiency" not in s:
        return []
    return [f"  serial      whole model on one rank {s['serial_iteration_time'] * 1e3:.3f} ms per iteration "
            f"(forward-backward {s['serial_fb_time'] * 1e3:.3f}, optimizer {s['serial_optimizer_time'] * 1e3:.3f}); "
            f"limit for p={p}: {s['limit_iteration_time'] * 1e3:.3f} ms",
            f"  efficiency  {s['efficiency']:.3f} of the limit   speedup {s['speedup']:.2f}x over serial"]


def _number(value: float, digits: int = 3) -> str:
    """Three decimals, or '-' where there is none (a schedule file has no closed form)."""
    return "-" if value != value else f"{value:.{digits}f}"


def comparison_text(rows: list[dict], samples: int) -> str:
    """Measured runs beside their simulations (:func:`ppbench.sim.calibrate.compare_with_simulation` rows)."""
    lines = []
    how = (f"median of {samples} simulations drawing every action's costs from the run's measured ones" if samples
           else "one simulation with the run's mean costs")
    lines.append(f"measured vs simulated ({how}); mean costs in ms: F, B, W, message latency, overhead per action")
    lines.append(f"{'schedule':<12}{'p':>3}{'m':>4} {'transport':<12}{'F':>6}{'B':>6}{'W':>6}{'comm':>6}{'ovh':>6}"
                 f"{'step meas':>10}{'step sim':>10}{'bubble meas':>12}{'bubble sim':>11}{'diff':>7}"
                 f"{'ovl meas':>9}{'ovl sim':>8}")
    for row in rows:
        c, me, si = row["costs"], row["measured"], row["simulated"]
        lines.append(f"{row['schedule']:<12}{row['pp']:>3}{row['microbatches']:>4} {row['transport']:<12}"
                     + "".join(f"{1e3 * c[k]:>6.2f}" for k in ("fwd", "bwd", "wgrad", "comm", "overhead"))
                     + f"{1e3 * me['step_time']:>10.2f}{1e3 * si['step_time']:>10.2f}{me['bubble_mean']:>12.3f}"
                     f"{si['bubble_mean']:>11.3f}{row['bubble_difference']:>+7.3f}{me['overlap']:>9.3f}{si['overlap']:>8.3f}")
    return "\n".join(lines)
