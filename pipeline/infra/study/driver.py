"""The driver of a tuning stage: name and create its study once, run its workers as an array, return the name.

:func:`run_study` gives the study a name that stands for everything its trials depend on, records the
run's context as the study's user attributes, hands the workers the storage URL without its password and
runs them on the run's executor; a worker that failed is tolerated when the others finished the study.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict

from pipeline.config import without_password
from pipeline.infra.executor import TaskFailed
from pipeline.infra.launch import run_array, stage_seed, study_name
from pipeline.infra.registry import STAGES
from pipeline.infra.study.storage import JOURNAL, create_study, finished_trials

log = logging.getLogger(__name__)


def run_study(cfg, run_dir, stage: str, worker: Callable[..., int], trials: int, settings: dict,
              direction: str = "maximize", metric: str = "", search_space: dict | None = None) -> str:
    """The driver of a distributed study: create it once, run `workers` worker tasks, return its name.

    The study is named ``<run>-<stage>-<tag>`` (settings.study_name): the tag stands for the run
    directory and for everything its trials depend on — the stage's config table, `settings`, the seed
    and the stage's inputs — so a stage redone with another search space, objective, budget or data
    starts a study of its own instead of mixing its trials with the old ones, while a stage resumed
    as it was continues its study. `metric` names the objective; the study's user attributes hold the
    run directory, seed, objective, `search_space` and config.

    A worker that dies is tolerated when the others finished the study (its trial was retried).
    `worker` is called as worker(run_dir, storage, name, trials, worker_index, settings).
    """
    seed = stage_seed(cfg, stage)
    config = asdict(cfg.section(stage))
    name = study_name(run_dir, stage, {"config": config, "settings": settings, "seed": seed,
                                       "inputs": run_dir.fingerprints(*STAGES[stage].inputs)})
    attrs = {"run_dir": str(run_dir.path), "stage": stage, "seed": seed, "run_seed": cfg.run.seed,
             "objective": metric, "direction": direction, "search_space": search_space or {}, "config": config}
    create_study(cfg.run.storage, run_dir.path, name, direction=direction, seed=seed,
                 heartbeat_s=cfg.run.heartbeat_s, metric=metric, attrs=attrs)
    settings = {**settings, "seed": seed, "workers": cfg.run.workers, "heartbeat_s": cfg.run.heartbeat_s}
    # the workers get the URL without its password (their calls are pickled into the run directory on
    # Slurm); libpq reads it from PGPASSWORD, which local processes and Slurm jobs inherit, or ~/.pgpass
    url, password = without_password(cfg.run.storage)
    if password:
        os.environ["PGPASSWORD"] = password
    calls = [(str(run_dir.path), url, name, trials, w, settings) for w in range(cfg.run.workers)]
    log.info("%s: study %s in %s, %d trials, %d workers", stage, name,
             url or run_dir.path / JOURNAL, trials, cfg.run.workers)
    try:
        run_array(cfg, run_dir, stage, worker, calls)
    except TaskFailed as e:
        if finished_trials(cfg.run.storage, run_dir.path, name, cfg.run.heartbeat_s) < trials:
            raise
        log.warning("%s: a worker failed but the study is complete: %s", stage, str(e).splitlines()[0])
    return name
