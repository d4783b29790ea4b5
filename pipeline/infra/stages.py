"""How a stage is run: skipped if complete, locked, timed, marked (the stages themselves: registry.py).

A stage is a function ``stage(config, run_dir)`` that reads earlier stages' artifacts from disk and
writes its own.
"""

from __future__ import annotations

import logging
import shutil
import time

from pipeline.config import ConfigError, PipelineConfig, redacted
from pipeline.errors import InputError, StageBusy
from pipeline.infra.registry import CHAIN, STAGES, Stage, chain, products, related, stage_config, writers
from pipeline.infra.rundir import RunDir, recover_replaced, remove_dead_temporaries

__all__ = ["CHAIN", "STAGES", "Stage", "check_kept_configs", "inputs_read", "remove_leftovers", "run_chain",
           "run_stage"]

log = logging.getLogger(__name__)

# [run] keys that say where and how a stage runs, not what it makes: a complete stage is kept whatever they are
HOW_IT_RUNS = ("executor", "workers", "slurm_profile", "storage", "heartbeat_s")
HOW_IT_ENDS = ("analyze.weak_run",)  # changes only `run`'s exit code, no stage's output


def run_stage(name: str, cfg: PipelineConfig, run_dir: RunDir, force: bool = False,
              redone: frozenset[str] = frozenset()) -> bool:
    """Run one stage unless it is complete; returns True if it ran.

    A complete stage is skipped without writing anything (a read-only run directory is fine) — unless its
    output is gone or damaged, or (`redone`: the stages `run` has run so far) a stage before it was redone
    by the same `run`; one made with another config than `cfg` is a ConfigError. A stage that runs holds its
    lock for the run directory, first cleans what killed runs of it left, and replaces its marker only once
    its new output is complete: a failed ``--force`` keeps the old one.
    """
    stage = STAGES[name]
    wanted = stage_config(cfg, name)
    if run_dir.is_complete(name) and not force and (damaged := unfit_outputs(name, run_dir)):
        log.warning("%s: marked complete but %s; running it again", name,
                    "; ".join(f"{o} {why}" for o, why in damaged.items()))
        force = True
    check_inputs_intact(name, run_dir)
    if run_dir.is_complete(name) and not force:
        if not stale_in_this_run(name, run_dir, redone):
            check_source(name, cfg, run_dir)
            check_config(name, cfg, run_dir)
            log.info("%s: complete, skipped (%s)", name, run_dir.marker(name))
            return False
        force = True
    run_dir.forced = force
    with run_dir.stage_lock(name):
        for other, why in related(name).items():  # holding our lock: of two starting at once, one sees the other
            if (holder := run_dir.running(other)) is not None:
                raise StageBusy(f"{name}: `{other}` is running in {run_dir.path} ({holder}) and {why}; run {name} "
                                f"once it has ended")
        run_dir.open(redacted(cfg.to_dict()), cfg.run.seed)  # no password is ever written
        remove_leftovers(stage, run_dir)
        log.info("%s: %s → %s", name, stage.summary, stage.produces)
        started = time.time()
        read = run_dir.fingerprints(*stage.inputs)  # what the stage is about to read
        stage.load()(cfg, run_dir)
        run_dir.mark_complete(name, config=wanted, seed=cfg.run.seed, started=started,
                              executor=cfg.run.executor, inputs=inputs_read(name, stage, run_dir, read),
                              outputs=products(name),
                              extra={"source": watcher.record(cfg, run_dir)} if (watcher := stage.watcher()) else None)
    log.info("%s: done in %.1f s", name, time.time() - started)
    return True


def stale_in_this_run(name: str, run_dir: RunDir, redone: frozenset[str]) -> bool:
    """Whether complete stage `name` must run again because a stage before it, redone by this same `run`
    (`redone`), changed its input; an input changed otherwise is an InputError naming the stale stages."""
    changed = run_dir.changed_inputs(name, STAGES[name].inputs)
    if not changed:
        return False
    if all(set(writers(c)) & redone for c in changed):
        log.info("%s: its input %s was redone by this run; running it again", name, ", ".join(changed))
        return True
    redo = ", then ".join(f"`python -m pipeline {s} --force`" for s in stale_stages(run_dir, name))
    raise InputError(f"{name}: complete, but its input {', '.join(changed)} changed since (a stage before "
                     f"it was redone); redo the stale stages in order: {redo}")


def config_changes(name: str, cfg: PipelineConfig, run_dir: RunDir) -> list[str]:
    """'table.key: old → new' for each key that complete stage `name`'s result depends on and that `cfg` sets
    otherwise than the stage's marker records (not HOW_IT_RUNS or HOW_IT_ENDS; a key newer than the marker
    counts at its default)."""
    recorded = run_dir.completed_config(name)
    if not isinstance(recorded, dict):
        return []  # nothing recorded to compare with
    was, default = _flat(recorded), _flat(stage_config(PipelineConfig(), name))
    return [f"{key}: {before!r} → {value!r}" for key, value in _flat(stage_config(cfg, name)).items()
            if key.removeprefix("run.") not in HOW_IT_RUNS and key not in HOW_IT_ENDS
            and (before := was.get(key, default.get(key))) != value]


def _flat(config: dict) -> dict[str, object]:
    return {f"{table}.{key}": value for table, values in config.items() if isinstance(values, dict)
            for key, value in values.items()}


def check_config(name: str, cfg: PipelineConfig, run_dir: RunDir) -> None:
    """ConfigError when complete stage `name` would be kept although `cfg` asks for another result (its
    results were silently kept): the keys that differ, and the two ways on."""
    changes = config_changes(name, cfg, run_dir)
    if changes:
        shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise ConfigError(f"{name}: complete in {run_dir.path}, made with another config ({shown}); not redone. "
                          "To keep both results, use a new run directory (--run-dir runs/<new-name>); to redo it "
                          f"in place, add --force (`run --force` redoes every stage, `python -m pipeline {name} "
                          "--force` this one, then the stages after it)")


def check_kept_configs(cfg: PipelineConfig, run_dir: RunDir, names: list[str], force: bool = False) -> None:
    """Before `run` runs a stage: check_config for each complete stage of `names` it will keep for sure (its
    output intact, its inputs unchanged, none written by a stage this run redoes), so that a changed config
    stops it before hours of the stages before. The others are checked when their turn comes."""
    if force:
        return
    redone: set[str] = set()
    for name in names:
        inputs = STAGES[name].inputs
        if (not run_dir.is_complete(name) or unfit_outputs(name, run_dir) or run_dir.changed_inputs(name, inputs)
                or any(set(writers(a)) & redone for a in inputs)):
            redone.add(name)
        else:
            check_config(name, cfg, run_dir)


def check_source(name: str, cfg: PipelineConfig, run_dir: RunDir) -> None:
    """InputError when the files complete stage `name` read from outside the run directory (prepare's
    tables) changed since: its dataset, and all after it, describe data that are no longer there. A
    source that is gone as a whole (raw data moved off scratch) only warns: the dataset stands."""
    watcher = STAGES[name].watcher()
    recorded = (run_dir.read_marker(name) or {}).get("source")
    if watcher is None or not isinstance(recorded, dict):
        return  # a marker of the version before recorded no source
    try:
        found = watcher.changes(cfg, run_dir, recorded)
    except InputError as e:
        log.warning("%s: complete; the files it read are no longer there (%s); its output is kept", name, e)
        return
    if found:
        shown = "; ".join(found[:3]) + (f"; {len(found) - 3} more" if len(found) > 3 else "")
        raise InputError(f"{name}: complete, but the files it read changed since ({shown}); make its output "
                         f"again with `python -m pipeline {name} --force`, then redo the stages after it")


def unfit_outputs(name: str, run_dir: RunDir) -> dict[str, str]:
    """{output: why} for the outputs of complete stage `name` that are gone or not as it wrote them."""
    gone = {o: "is gone" for o in STAGES[name].outputs if not (run_dir / o).exists()}
    return {**gone, **run_dir.damaged_outputs(name)}


def check_inputs_intact(name: str, run_dir: RunDir) -> None:
    """InputError (one line) when an input of `name` is gone or damaged since the stage that makes it
    completed: reading it would fail, or give wrong numbers (Zarr reads a lost chunk as fill values)."""
    for artifact in STAGES[name].inputs:
        if artifact in STAGES[name].makes:
            continue  # the stage makes it again itself when it is stale
        for maker in filter(run_dir.is_complete, writers(artifact)):
            unfit = unfit_outputs(maker, run_dir)
            why = unfit.get(artifact) or unfit.get(artifact.split("/")[0])  # cv/summary.json: cv/ as recorded
            if why:
                raise InputError(f"{name}: its input {run_dir / artifact} {why}; make it again with "
                                 f"`python -m pipeline {maker}` (a complete stage whose output is damaged runs "
                                 "again), then run this stage")


def stale_stages(run_dir: RunDir, first: str) -> list[str]:
    """The complete stages from `first` on, in chain order, that an input changed since makes stale: their
    own input changed, or a stage before them that they read from is stale."""
    stale: list[str] = []
    for name in CHAIN[CHAIN.index(first):]:
        inputs = STAGES[name].inputs
        if run_dir.is_complete(name) and (run_dir.changed_inputs(name, inputs)
                                          or any(set(writers(a)) & set(stale) for a in inputs)):
            stale.append(name)
    return stale


def inputs_read(name: str, stage: Stage, run_dir: RunDir, read: dict[str, str | None]) -> dict[str, str | None]:
    """The fingerprints to record in the marker: those taken before the stage read its inputs. An input
    that changed while the stage ran (a stage before it redone meanwhile) is an InputError: the result
    may mix the old input and the new. An input the stage makes itself (`Stage.makes`: split.json) is
    recorded as it made it."""
    now = run_dir.fingerprints(*stage.inputs)
    changed = [n for n in stage.inputs if read[n] is not None and now[n] != read[n] and n not in stage.makes]
    if changed:
        raise InputError(f"{name}: its input {', '.join(changed)} changed while it ran (a stage before it was redone "
                         f"meanwhile); nothing was marked complete: run `python -m pipeline {name} --force` again")
    return {n: now[n] if (read[n] is None or n in stage.makes) else read[n] for n in stage.inputs}


def remove_leftovers(stage: Stage, run_dir: RunDir) -> None:
    """What killed runs left (called holding the stage's lock, so none of it is being written):
    the stage's half-written outputs and scratch folders, and anywhere in the run directory the
    temporaries of processes on this host that have ended. Resumable progress (task checkpoints,
    attack's store in the making) is kept: the stage resumes from it."""
    for output in stage.outputs:
        recover_replaced(run_dir / output)
    scratch = [p for pattern in stage.scratch for p in run_dir.path.glob(pattern)]
    for path in scratch:
        shutil.rmtree(path, ignore_errors=True)
    dead = remove_dead_temporaries(run_dir.path)
    if scratch or dead:
        log.info("%s: removed %d temporary file(s) of killed runs", stage.name, len(scratch) + len(dead))


def run_chain(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> None:
    """Every stage of :func:`chain` in order, skipping the complete ones (a stage whose input an earlier
    stage of this chain redid runs again; one it would keep, made with another config, is a ConfigError)."""
    check_kept_configs(cfg, run_dir, chain(cfg), force)
    ran: set[str] = set()
    for name in CHAIN:
        if name not in chain(cfg):
            why = (f"the model is trained elsewhere ([model] external = {cfg.model.external})"
                   if STAGES[name].fits_model else f"real data in {cfg.prepare.meds_dir or cfg.prepare.mimic_dir}")
            log.info("%s: skipped, %s", name, why)
            continue
        if run_stage(name, cfg, run_dir, force, redone=frozenset(ran)):
            ran.add(name)
