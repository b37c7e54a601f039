"""A Ray Tune sweep whose trials are whole COALITION runs, over model families, sizes and
settings (the sweep file's schema and expansion: ``sweeps/spec.py``).

    python sweeps/sweep.py --config configs/sweeps/smoke.yaml [key=value ...]

Each trial is a driver function (the current Tune + Train pattern, not ``Tuner(trainer)``):
it builds its config, starts the generator/scorer actors (inside the trial's placement group)
and runs the recipe, whose updates are Ray Train ``TorchTrainer`` runs with placement groups
of their own; after the warm-up (round 0) and each round it reports the mean held-out
accuracy, which ASHA uses to stop weak trials early. Rerunning with the same ``run_dir``
restores the sweep (``Tuner.restore``): finished trials are kept, unfinished and errored
ones run again and their COALITION runs resume after their last finished stage.

Writes into ``run_dir``: ``sweep.yaml``, ``tune/`` (Tune's state), ``trials/<id>/`` (each
trial's run directory), ``results.csv``, ``results.md`` (the same table for docs),
``results.json``, ``accuracy_vs_size.png`` and ``best_config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from coalition.run import cli
from coalition.run.config import ConfigError
from coalition.run.report import print_table
from coalition.run.rundir import atomic_write, write_json
from sweeps import results as R
from sweeps import spec as S

# what a restored sweep may change: where and how wide it runs, nothing that changes results
RESUMABLE_CHANGES = ("ray", "resources.max_concurrent_trials", "max_failures")
EXPERIMENT = "tune"


# ---------------------------------------------------------------------- one trial


def run_trial(params: dict[str, Any], sweep_raw: dict[str, Any], sweep_dir: str) -> None:
    """The Tune trainable: one COALITION run with the trial's ``params``, reporting
    :func:`sweeps.results.round_report` after the warm-up and each round."""
    from ray import tune

    from actors.group import RayGroup
    from coalition.groups.layout import run_layout
    from coalition.recipes.sro import Run
    from coalition.run.cli import check_combination, check_resume

    sweep = S.SweepConfig.model_validate(sweep_raw)
    trial_id = tune.get_context().get_trial_id()
    run_dir = Path(sweep_dir) / "trials" / trial_id
    cfg = S.trial_config(sweep, params, run_dir)
    check_combination(cfg)
    check_resume(cfg, run_dir)  # a restored trial resumes its own run, with the same config
    cli.prepare_run_dir(cfg, "train")
    with open(run_dir / "attempts.jsonl", "a") as log:  # one line per start of this trial
        log.write(json.dumps({"start": time.time(), "host": socket.gethostname()}) + "\n")

    # The last round is reported only after the run wrote its summary: Tune may end a trial
    # as soon as it reports its final result (ASHA at max_t), which would cut the summary.
    final: list[dict[str, Any]] = []

    def on_eval(r: int, accuracy: dict[str, Any]) -> None:
        row = R.round_report(r, accuracy)
        if r < cfg.rounds:
            tune.report(row)
        else:
            final.append(row)

    workers = RayGroup(cfg, run_layout(cfg, in_process=False), run_dir / "ray_train")
    try:
        Run(cfg, workers, run_dir, on_eval=on_eval).run()
    finally:
        workers.close()
    for row in final:
        tune.report(row)


# ---------------------------------------------------------------------- the sweep


def _tune_domain(dom: S.Domain) -> Any:
    from ray import tune

    lo_hi = dom.values
    return {
        "grid": lambda: tune.grid_search(dom.values),
        "choice": lambda: tune.choice(dom.values),
        "uniform": lambda: tune.uniform(*lo_hi),
        "loguniform": lambda: tune.loguniform(*lo_hi),
        "randint": lambda: tune.randint(*lo_hi),
    }[dom.kind]()


def trainable(sweep: S.SweepConfig, sweep_dir: Path) -> Any:
    """``run_trial`` bound to the sweep, with each trial's placement group from its config:
    the trial's own process, a generator per variant, the scorer (model size → resources)."""
    from ray import tune

    driver_cpus = sweep.resources.driver_cpus

    def resources(params: dict[str, Any]) -> tune.PlacementGroupFactory:
        need = S.trial_resources(S.trial_config(sweep, params, sweep_dir), driver_cpus)
        return tune.PlacementGroupFactory(need.bundles)

    fn = tune.with_parameters(
        run_trial, sweep_raw=sweep.model_dump(mode="json"), sweep_dir=str(sweep_dir)
    )
    return tune.with_resources(fn, resources)


def tune_space(sweep: S.SweepConfig) -> dict[str, Any]:
    """The trial parameters as Tune search-space objects."""
    return {key: _tune_domain(dom) for key, dom in S.search_space(sweep).items()}


def searcher(sweep: S.SweepConfig, concurrent: int) -> Any:
    """Grid or random: Tune's variant generator; optuna: Optuna's TPE (model-based)."""
    if sweep.search.algorithm == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=sweep.search.seed), concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # given a variant generator, Tune ignores TuneConfig.max_concurrent_trials (it only
    # warns), so the generator gets the limit itself
    return BasicVariantGenerator(max_concurrent=concurrent, random_state=sweep.search.seed)


def scheduler(sweep: S.SweepConfig, max_rounds: int) -> Any:
    """ASHA on the per-round accuracy (``round`` is its time), or first-in-first-out."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = sweep.scheduler
    if sched.kind == "asha" and max_rounds >= 1:
        return ASHAScheduler(
            time_attr=R.TIME_ATTR,
            max_t=max_rounds,
            grace_period=min(sched.grace_period, max_rounds),
            reduction_factor=sched.reduction_factor,
        )
    return FIFOScheduler()


def build_tuner(sweep: S.SweepConfig, sweep_dir: Path, concurrent: int, max_rounds: int) -> Any:
    """A new Tuner: the search space, searcher, scheduler and where Tune keeps its state."""
    from ray import tune

    return tune.Tuner(
        trainable(sweep, sweep_dir),
        param_space=tune_space(sweep),
        tune_config=tune.TuneConfig(
            metric=R.METRIC,
            mode="max",
            search_alg=searcher(sweep, concurrent),
            scheduler=scheduler(sweep, max_rounds),
            num_samples=sweep.search.num_samples,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(sweep_dir),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        ),
    )


def check_resume(sweep: S.SweepConfig, sweep_dir: Path) -> None:
    """A restored sweep keeps its space and settings (Tune restores its own copy of them)."""
    from coalition.run.cli import diff

    old_path = sweep_dir / "sweep.yaml"
    if not old_path.exists():
        return
    import yaml

    old = yaml.safe_load(old_path.read_text()) or {}
    new = sweep.model_dump(mode="json")
    changed = [
        key
        for key in diff(old, new)
        if key != "run_dir"
        and not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    ]
    if changed:
        raise ConfigError(
            f"run_dir {sweep_dir} holds a sweep with other settings ({', '.join(changed)} "
            "differ); use a new run_dir, or the same settings to resume it"
        )


def init_ray(sweep: S.SweepConfig, needs: list[S.TrialResources]) -> None:
    """Join the cluster (``ray.address``, ``RAY_ADDRESS`` or the ``ray job submit`` one), or
    start a local Ray with room for at least the largest trial."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = sweep.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    biggest = max(n.total().get("CPU", 0.0) for n in needs)
    cpus = sweep.ray.num_cpus or max(os.cpu_count() or 1, math.ceil(biggest - 1e-9))
    if cpus < biggest - 1e-9:
        raise ConfigError(
            f"ray.num_cpus: {cpus}, but one trial needs {biggest:g} CPUs (its actors plus the "
            "Ray Train workers of its updates); raise it or lower the trial's ray.* settings"
        )
    gpus = max(n.total().get("GPU", 0.0) for n in needs)
    if gpus > 0:
        raise ConfigError(
            f"a trial needs {gpus:g} GPUs and a local Ray has none; run on a GPU cluster "
            "(ray.address / RAY_ADDRESS, or ray job submit) or use a CPU sweep"
        )
    from actors.session import LOCAL_SYSTEM_CONFIG, local_token_auth, quiet_workers

    local_token_auth()

    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"worker_process_setup_hook": quiet_workers},
        _system_config=LOCAL_SYSTEM_CONFIG,
    )


_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


def collect(sweep: S.SweepConfig, grid: Any) -> list[R.TrialResult]:
    """The Tune results as :class:`~sweeps.results.TrialResult` records."""
    out = []
    for result in grid:
        params = dict(result.config or {})
        model = sweep.model(params.pop(S.MODEL_PARAM))
        metrics = result.metrics or {}
        trial = metrics.get("trial_id")
        if not trial:
            found = _TRIAL_ID.search(Path(result.path).name)
            trial = found.group(1) if found else Path(result.path).name
        accuracy: dict[int, float] = {}
        df = result.metrics_dataframe
        if df is not None and R.TIME_ATTR in df and R.METRIC in df:
            for r, acc in zip(df[R.TIME_ATTR], df[R.METRIC], strict=True):
                if r == r and acc == acc:  # skip NaN rows
                    accuracy[int(r)] = float(acc)
        out.append(
            R.TrialResult(
                trial=str(trial),
                model=model.label,
                family=model.family,
                params_b=model.size_b,
                params=params,
                status="ERROR" if result.error else "TERMINATED",
                accuracy=dict(sorted(accuracy.items())),
                wall_s=float(metrics.get("time_total_s") or 0.0),
                error=None if result.error is None else _last_line(result.error),
            )
        )
    return sorted(out, key=lambda t: (t.params_b, t.family, t.trial))


def _last_line(error: BaseException) -> str:
    """The exception's own message (a Ray task error starts with the actor's name)."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def report(sweep: S.SweepConfig, sweep_dir: Path, results: list[R.TrialResult]) -> None:
    """Table to the terminal; CSV, JSON, plot and best config into the sweep directory."""
    header, rows = R.table(results)
    print_table(header, rows)
    R.write_csv(results, sweep_dir / "results.csv")
    atomic_write(sweep_dir / "results.md", R.markdown(results) + "\n")
    write_json(
        sweep_dir / "results.json",
        {
            "schema_version": S.SCHEMA_VERSION,
            "sweep": sweep.name,
            "trials": [asdict(t) for t in results],
        },
    )
    R.plot_accuracy_vs_size(
        results, sweep_dir / "accuracy_vs_size.png", title=f"sweep {sweep.name}: accuracy vs size"
    )
    top = R.best(results)
    if top is not None:
        cfg = S.trial_config(sweep, {S.MODEL_PARAM: top.model, **top.params}, "unused")
        R.write_best(top, cfg, sweep_dir / "best_config.yaml", sweep.name)
        print(
            f"best: trial {top.trial} ({top.model} {top.params}) accuracy "
            f"{top.best_accuracy:.3f} at round {top.best_round}"
        )
    print(f"results: {sweep_dir / 'results.csv'}, {sweep_dir / 'accuracy_vs_size.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeps/sweep.py",
        description="Ray Tune sweep of COALITION runs: --config SWEEP.yaml plus key=value.",
        epilog="example: python sweeps/sweep.py --config configs/sweeps/smoke.yaml "
        "space.sro.beta=[0.1]",
    )
    parser.add_argument("--config", type=Path, required=True, help="sweep file (configs/sweeps/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    args = parser.parse_args(argv)
    sweep = S.load(args.config, args.overrides)
    sweep_dir = sweep.sweep_dir().resolve()
    sweep = sweep.model_copy(update={"run_dir": str(sweep_dir)})
    check_resume(sweep, sweep_dir)

    from coalition.run.cli import check_combination

    configs = S.check_trials(sweep)
    for cfg in configs:
        check_combination(cfg)
    needs = [S.trial_resources(cfg, sweep.resources.driver_cpus) for cfg in configs]

    import ray
    from ray import tune

    start = time.perf_counter()
    init_ray(sweep, needs)
    try:
        cluster = ray.cluster_resources()
        concurrent = S.max_concurrent(cluster, needs, sweep.resources.max_concurrent_trials)
        worst = max((n.total() for n in needs), key=lambda t: t.get("GPU", 0) * 1e6 + t["CPU"])
        why = (
            "resources.max_concurrent_trials"
            if sweep.resources.max_concurrent_trials
            else "what the cluster holds now"
        )
        print(
            f"sweep {sweep.name}: cluster {dict(sorted(cluster.items()))}; largest trial needs "
            f"{worst}; {concurrent} trial(s) at once ({why}); run_dir {sweep_dir}",
            flush=True,
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / "sweep.yaml", S.dump(sweep))
        experiment = sweep_dir / EXPERIMENT
        if tune.Tuner.can_restore(str(experiment)):
            print(f"restoring the sweep from {experiment}", flush=True)
            tuner = tune.Tuner.restore(
                str(experiment), trainable=trainable(sweep, sweep_dir), resume_errored=True
            )
        else:
            max_rounds = max(cfg.rounds for cfg in configs)
            tuner = build_tuner(sweep, sweep_dir, concurrent, max_rounds)
        grid = tuner.fit()
        results = collect(sweep, grid)
    finally:
        ray.shutdown()
    report(sweep, sweep_dir, results)
    errored = [t for t in results if t.status == "ERROR"]
    print(f"wall time {time.perf_counter() - start:.0f}s; {len(results)} trial(s)", flush=True)
    if errored:
        for t in errored:
            print(f"trial {t.trial} failed: {t.error}", file=sys.stderr)
        print("rerun the same command to resume the failed trials", file=sys.stderr)
        return 1
    return 0


command = cli.command(main)

if __name__ == "__main__":
    command()
