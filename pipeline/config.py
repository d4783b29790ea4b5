"""Typed configuration: one frozen dataclass per stage, loaded from TOML, overridable by key=value.

A config file has one table per stage (``[synth]``, ``[tune-model]``, …) plus ``[run]`` for what all
stages share. Unknown tables or keys, wrong types and missing files raise :class:`ConfigError`, which
the CLI turns into a one-line message and exit code 2.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import error_kinds, options
from pipeline.features import FEATURES, WINDOW_HOURS
from pipeline.options import ConfigError, build_section, option  # noqa: F401 (re-exported: the config API)
from pipeline.redact import redacted, without_password  # noqa: F401 (part of the config API: used by callers)

EXECUTORS = ("local", "slurm", "debug")


@dataclass(frozen=True)
class RunSection:
    """Settings every stage shares."""

    seed: int = option(0, "master seed; every stage derives its seeds from it and records them", ge=0)
    executor: str = option("local", "where parallel tasks run", EXECUTORS)
    workers: int = option(2, "parallel tasks at once (local processes, or array tasks / tuning workers)", ge=1)
    slurm_profile: str = option(
        "slurm/profiles/test-cluster.toml", "Slurm profile (TOML) with per-stage sbatch parameters"
    )
    storage: str = option(
        "", "Optuna storage URL; empty = a journal file in the run directory (one machine, or a cluster whose "
            "run directory is on a shared file system)"
    )
    heartbeat_s: int = option(10, "PostgreSQL: a trial without a heartbeat for 3× this long is failed and retried; "
                                  "journal: how often workers check whether a running trial's owner is gone", ge=1)


@dataclass(frozen=True)
class SynthConfig:
    admissions: int = option(4000, "number of synthetic hospital admissions (~1,270 CHARTEVENTS rows each)", ge=1)
    noise_fraction: float = option(0.65, "share of CHARTEVENTS/LABEVENTS rows of non-feature items (full MIMIC ~0.89)",
                                   ge=0, lt=1)
    meds: bool = option(False, "also write the cohort as a MEDS dataset in raw/meds (read with prepare.source = meds)")


@dataclass(frozen=True)
class PrepareConfig:
    source: str = option("mimic3", "what prepare reads: mimic3 = MIMIC-III's CSV tables (mimic_dir); meds = a "
                         "dataset in the Medical Event Data Standard (meds_dir, feature_map)", ("mimic3", "meds"))
    mimic_dir: str = option("", "folder of MIMIC-III CSV/CSV.gz tables; empty = <run-dir>/raw")
    meds_dir: str = option("", "source = meds: the MEDS root (data/**/*.parquet, metadata/)")
    feature_map: str = option("mimic-iv", "source = meds: which codes are the features and the cohort's events: a "
                              "map shipped in pipeline/data/maps (by name) or a TOML file of that form")
    labels: str = option("", "source = meds: a MEDS label file, or a folder of them (subject_id, prediction_time, "
                         "boolean_value, as ACES writes one), as the cohort: a sample a row, its window the "
                         "window_hours before prediction_time; empty = the cohort rules below")
    lab_time: str = option("result", "source = meds: where a lab result sits in time: result = its event's time "
                           "(the MIMIC-IV ETL's storetime); draw = its specimen's collection, paired by the "
                           "map's `lab_draw` codes", ("result", "draw"))
    chunk_samples: int = option(1024, "dataset.zarr chunk length along `sample`", ge=1)
    require_chartevents_data: bool = option(True, "keep only admissions with has_chartevents_data = 1")
    min_age_years: float = option(18.0, "minimum age at ICU intime, years", ge=0)
    min_hospital_hours: float = option(24.0, "minimum hospital stay dischtime − admittime, hours", ge=0)
    min_icu_hours: float = option(24.0, "minimum ICU stay outtime − intime, hours", ge=0)
    window_hours: int = option(WINDOW_HOURS, "hourly bins from ICU intime", ge=1)
    span_start_max_hours: float = option(1.0, "span rule: a sample's first kept event at t ≤ this", ge=0)
    span_end_min_hours: float = option(47.0, "span rule: a sample's last kept event at t ≥ this", ge=0)
    lower_percentile: float = option(5.0, "winsorize / scale from this percentile of the window's events", ge=0, lt=100)
    upper_percentile: float = option(95.0, "… to this one", gt=0, le=100)
    stats_from: str = option("", "take p5, median and p95 from this dataset.zarr (a trained model's) instead of "
                                 "computing them: how a model scores a new cohort")


ARCHS = ("lstm", "gru", "transformer", "tcn", "logreg")  # pipeline/model/archs.py: each one's module and space
ACTIVATIONS = ("relu", "tanh")  # of the models' heads (pipeline/model/recurrent.py)
OPTIMIZERS = ("adam", "rmsprop", "sgd")  # of training (pipeline/model/archs.py make_optimizer)
ROBUST = ("none", "errors", "adversarial")  # robust training modes (pipeline/model/robust.py)
# what the attack edits (pipeline/attack/spaces/: a module per name); the first is the default. Config comes
# below the attack in the layers, so the names are here and the spaces read them.
SPACES = ("record", "tensor")
ATTACK_OPTIMIZERS = ("sgd", "adam", "rmsprop")  # the attack's gradient steps (pipeline/attack/l1.py GradientStep)


@dataclass(frozen=True)
class ModelParams:
    """[model]: the architecture, its sizes and the optimizer; `tune-model`'s best parameters replace these in
    a run. Each architecture reads the keys it needs (docs/methods.md §2.1); the others are ignored."""

    arch: str = option("lstm", "the model: lstm or gru (recurrent), transformer (encoder), tcn (dilated causal "
                       "convolutions), logreg (linear in the flattened input)", ARCHS)
    # every size is bounded (a typo such as layers = 40 would ask for gigabytes a step); tune-model searches
    # inside the bounds (tests/test_external_hostile.py)
    hidden: int = option(128, "lstm/gru: hidden units per direction; transformer: model width; tcn: channels", ge=1,
                         le=1024)
    layers: int = option(1, "lstm/gru: stacked layers; transformer: encoder layers; tcn: residual blocks (6 see "
                         f"the whole {WINDOW_HOURS} h)", ge=1, le=8)
    bidirectional: bool = option(True, "lstm/gru: read the series both ways")
    heads: int = option(4, "transformer: attention heads (hidden must be a multiple of it)", ge=1, le=16)
    kernel: int = option(3, "tcn: convolution width in hours (dilation doubles per block)", ge=2, le=16)
    fc: int = option(64, "units of the fully connected layer before the output (not logreg)", ge=1, le=1024)
    dropout: float = option(0.2, "dropout before the fully connected layer (and between LSTM layers)", ge=0, lt=1)
    activation: str = option("relu", "activation of the head", ACTIVATIONS)
    optimizer: str = option("adam", "optimizer", OPTIMIZERS)
    lr: float = option(1e-3, "learning rate", gt=0)
    batch_size: int = option(128, "samples per batch", ge=1, le=4096)
    robust: str = option("none", "robust training (docs/methods.md §2.3) on a share of each batch: none, errors "
                         "(entry errors) or adversarial (the record edits of most loss)", ROBUST)
    robust_share: float = option(0.5, "robust: the share of each batch trained on an edited record", gt=0, le=1)
    robust_edits: int = option(1, "robust: edits (or entry errors) per edited record", ge=1, le=20)
    external: str = option("", "a model trained elsewhere, attacked instead of training one: a TorchScript file "
                           "(.pt/.ts) or 'package.module:factory' (with `weights`); docs/methods.md §2.2")
    weights: str = option("", "external = 'package.module:factory': its state_dict file (loaded weights_only)")

    def check(self) -> None:
        """What the types and choices cannot say about `[model]`."""
        if self.arch == "transformer" and self.hidden % self.heads:
            raise ConfigError(f"[model] hidden = {self.hidden} must be a multiple of heads = {self.heads} "
                              "(transformer)")
        if self.weights and ":" not in self.external:
            raise ConfigError("[model] weights is for external = 'package.module:factory' (a TorchScript file "
                              "holds its weights)")
        if ":" in self.external and not self.weights:
            raise ConfigError(f"[model] external = {self.external!r}: a factory needs `weights` (its state_dict)")


@dataclass(frozen=True)
class TuneModelConfig:
    trials: int = option(8, "finished (complete or pruned) trials the study must hold", ge=1)
    folds_used: int = option(2, "CV folds trained and evaluated per trial", ge=1)
    max_epochs: int = option(10, "epochs per trial at most", ge=1)
    epochs_per_report: int = option(2, "epochs between reports of the held-out AUROC to the pruner", ge=1)
    # The reference space (docs/methods.md §2) is hidden ≤ 256, layers ≤ 2, lr ≥ 1e-5; these bounds keep a
    # laptop run short and configs/cluster.toml restores the reference.
    max_hidden: int = option(64, "largest LSTM hidden size searched (a power of 2, 32…256)", ge=32, le=256)
    max_layers: int = option(1, "most LSTM layers searched (1 or 2)", ge=1, le=2)
    min_lr: float = option(1e-4, "smallest learning rate searched (log scale up to 0.1)", ge=1e-5, lt=0.1)
    archs: list[str] = option([], "architectures searched over (each with its own space); empty = [model] arch", ARCHS)


@dataclass(frozen=True)
class CVConfig:
    folds: int = option(5, "stratified folds on the non-test data", ge=2)
    test_fraction: float = option(0.15, "stratified held-out test set, never seen by tuning or CV", gt=0, lt=1)
    meds_split: bool = option(True, "a MEDS dataset with subject splits: its held_out subjects are the test set "
                                    "(test_fraction unused), train and tuning the folds")
    epochs: int = option(10, "epochs per fold", ge=1)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(0, "epochs of the final model; 0 = the count chosen by CV", ge=0)


@dataclass(frozen=True)
class TuneAttackConfig:
    """Optuna over a declared subset of `[attack]`; every other `[attack]` key is used as it is."""

    trials: int = option(16, "finished trials the study must hold", ge=1)
    startup_trials: int = option(6, "random trials before TPE models the results (TPE's n_startup_trials)", ge=0)
    targets: int = option(100, "fixed subset of targets the attack is tuned on (at most 1,000)", ge=1, le=1000)
    params: list[str] = option(["lr", "lam"], "the [attack] keys tuned: any of lr, lam, kappa, optimizer, fista")
    objective: str = option(
        "min_l1", "what tuning optimizes", ("min_l1", "success_rate", "sparse_small_max", "sparse_small")
    )


@dataclass(frozen=True)
class AttackParams:
    """The attack algorithm's keys of [attack]: what changes the examples (docs/methods.md §3, §10). The
    L1 attack takes these and nothing else (the fewest-edit keys are for the search that follows it in
    record space); tune-attack's trials vary some of them."""

    space: str = option(SPACES[0], "what the attack edits: record = the recorded values (the model sees the "
                        "input prepare derives from the edited record); tensor = the model's input cell by cell "
                        "(Sun et al.)", SPACES)
    max_iter: int = option(1000, "proximal updates per target, over all λ-search runs (no early stop)", ge=1,
                           le=1_000_000)
    observed_only: bool = option(False, "tensor space: perturb only cells that were really measured (mask)")
    kappa: float = option(0.0, "confidence margin κ of the hinge max(Z_t − Z_o, −κ)", ge=0)
    lam: float = option(0.003, "λ, weight of the elementwise L1 norm (the first λ of the λ search)", gt=0, le=1e3)
    lr: float = option(0.1, "step size η of the gradient step on the hinge term (adam: about the move per step)", gt=0)
    optimizer: str = option("adam", "gradient step: sgd = ISTA (threshold η·λ); adam, rmsprop threshold each "
                            "cell in their own metric, η·λ / (√v̂ + ε)", ATTACK_OPTIMIZERS)
    fista: bool = option(False, "FISTA momentum (as EAD)")
    lam_search: int = option(4, "runs sharing max_iter with a per-sample λ search between them (1: one λ)", ge=1)
    max_edits: int = option(3, "record space: the fewest-edit search looks for flips by up to this many edited "
                            "values after the one-edit scan (1: the scan alone); best = the sparsest example found",
                            ge=1, le=10)
    edits_beam: int = option(2, "record space: states kept per step of the fewest-edit search (1 = greedy; the "
                             "greedy path is always kept)", ge=1, le=64)
    scan_points: int = option(8, "record space: points of the one-edit scan per p5…p95 range moved by the "
                              "fastest-moving hour, besides every kink of the input's line", ge=1, le=1024)

    def check(self) -> None:
        """What the types and choices cannot say about the algorithm's keys; the keys a space cannot take are
        the space's to refuse (pipeline/attack/spaces/: `spaces.check`, which calls this)."""
        if not 1 <= self.lam_search <= self.max_iter:
            raise ConfigError(f"[attack] lam_search = {self.lam_search}: must be in 1…max_iter ({self.max_iter})")


@dataclass(frozen=True)
class AttackConfig(AttackParams):
    """[attack]: the algorithm's keys (:class:`AttackParams`) and how the work is split and stored."""

    shards: int = option(1, "array tasks, each a contiguous range of targets (boundaries on batch multiples)", ge=1)
    targets: str = option("test", "correctly classified samples of the test set or of all samples",
                          ("test", "all"))
    batch_size: int = option(256, "targets attacked at once; a multiple of chunk_samples", ge=1)
    chunk_samples: int = option(64, "attack.zarr chunk length along `sample`", ge=1)

    def params(self) -> AttackParams:
        """The algorithm's keys alone."""
        return AttackParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AttackParams)})

    def check(self) -> None:
        """What the types and choices cannot say about `[attack]`."""
        super().check()
        if self.batch_size % self.chunk_samples:
            raise ConfigError(f"[attack] batch_size = {self.batch_size} must be a multiple of chunk_samples = "
                              f"{self.chunk_samples} (shards must not share a chunk)")


ERROR_KINDS = tuple(error_kinds.KINDS)  # registered in pipeline/error_kinds.py, in store-code order (§9)


@dataclass(frozen=True)
class ErrorsConfig:
    """[errors]: the fewest plausible data-entry errors that flip each target (docs/methods.md §9)."""

    kinds: list[str] = option(list(ERROR_KINDS), "error kinds tried (default: every one): " + "; ".join(
                              f"{name} ({error_kinds.SUMMARY[name]})" for name in ERROR_KINDS), ERROR_KINDS,
                              min_items=1)
    max_errors: int = option(3, "errors per target at most; a target no such set flips is reported as not flipped",
                             ge=1, le=10)
    beam: int = option(4, "search width: states kept per step (1 = greedy; the greedy path is always kept)", ge=1,
                       le=1024)
    targets: str = option("test", "correctly classified samples of the test set or of all samples", ("test", "all"))
    shards: int = option(1, "array tasks, each a contiguous range of targets", ge=1)
    batch_size: int = option(4096, "candidate records per forward pass of the model", ge=1)


@dataclass(frozen=True)
class ChecksConfig:
    """[checks]: the range and delta checks a hospital runs on a recorded value, and the search for the
    sparsest flip they do not catch (docs/methods.md §11)."""

    limits: str = option("", "a laboratory's limits table (TOML; docs/methods.md §11); empty = limits derived from "
                             "the training records (with prepare.stats_from: the trained run's)")
    range_tail: float = option(0.001, "derived range check: the [q, 1 − q] quantiles of the training records' "
                                      "values", ge=0, lt=0.5)
    delta_tail: float = option(0.005, "derived delta check: the [q, 1 − q] quantiles of the change between "
                                      "consecutive recorded values of a stay", ge=0, lt=0.5)
    within_hours: float = option(0.0, "delta check: compare only recorded values at most this many hours apart "
                                      "(0: any two consecutive ones in the window)", ge=0)
    search: bool = option(True, "search each target's sparsest flip that no check flags (record space: attack "
                                "and errors); off: the report only says which examples the checks flag")


@dataclass(frozen=True)
class AnalyzeConfig:
    top_features: int = option(10, "features listed in the ranked susceptibility tables", ge=1,
                              le=len(FEATURES))
    min_targets: int = option(20, "successful examples a direction needs for its feature ranking to mean something "
                                  "(fewer: the report says so)", ge=1)
    weak_run: str = option("fail", "a run whose report says it means little (a model not above chance, no positive "
                                   "prediction, too few targets): 'fail' ends `run` with exit 3, 'warn' only says so",
                           ("fail", "warn"))


@dataclass(frozen=True)
class PipelineConfig:
    """The whole configuration; TOML table names are the stage names (``tune-model`` etc.)."""

    run: RunSection = field(default_factory=RunSection)
    model: ModelParams = field(default_factory=ModelParams)
    synth: SynthConfig = field(default_factory=SynthConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    tune_model: TuneModelConfig = field(default_factory=TuneModelConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune_attack: TuneAttackConfig = field(default_factory=TuneAttackConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    errors: ErrorsConfig = field(default_factory=ErrorsConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)

    def section(self, name: str) -> Any:
        return getattr(self, attr_name(name))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {table_name(f.name): dataclasses.asdict(getattr(self, f.name))
                for f in dataclasses.fields(self)}


def table_name(attr: str) -> str:
    return attr.replace("_", "-")


def attr_name(table: str) -> str:
    return table.replace("-", "_")


def section_types() -> dict[str, type]:
    """TOML table name → its dataclass."""
    hints = typing.get_type_hints(PipelineConfig)
    return {table_name(f.name): hints[f.name] for f in dataclasses.fields(PipelineConfig)}


def from_dict(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    types_ = section_types()
    sections = {}
    for table, values in data.items():
        if table not in types_:
            raise ConfigError(f"{source}: unknown table [{table}] (known: {', '.join(types_)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{table}] must be a table, got {type(values).__name__}")
        sections[attr_name(table)] = build_section(types_[table], values, f"{source}: [{table}]")
    return PipelineConfig(**sections)


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load(path: Path | None = None, overrides: list[str] = (), default_table: str = "run") -> PipelineConfig:
    """Defaults ← TOML file ← ``table.key=value`` overrides (a bare ``key`` means `default_table`)."""
    data: dict[str, dict[str, Any]] = {}
    source = "config"
    if path is not None:
        data = read_toml(path)
        source = str(path)
    cfg = from_dict(data, source)
    return apply_overrides(cfg, overrides, default_table)


def _parse_override_value(raw: str, typ: Any) -> Any:
    if typ is str:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # type check below names the key


def apply_overrides(cfg: PipelineConfig, overrides: list[str], default_table: str = "run") -> PipelineConfig:
    types_ = section_types()
    merged = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value or table.key=value")
        table, dot, name = key.rpartition(".")
        table = table if dot else default_table
        table = table_name(table)
        if table not in types_:
            raise ConfigError(f"override {item!r}: unknown table [{table}]{options.did_you_mean(table, types_)} "
                              f"(known: {', '.join(types_)})")
        hints = typing.get_type_hints(types_[table])
        if name not in hints:
            known = ", ".join(sorted(hints))
            close = options.did_you_mean(name, hints)
            raise ConfigError(f"override {item!r}: unknown key {name!r} in [{table}]{close} (known: {known})")
        merged[table][name] = _parse_override_value(raw, hints[name])
    return from_dict(merged, "overrides")


def replace(cfg: PipelineConfig, table: str, **changes: Any) -> PipelineConfig:
    """A copy of `cfg` with some keys of one table changed (values type-checked)."""
    merged = cfg.to_dict()
    merged[table_name(table)].update(changes)
    return from_dict(merged, "options")


def to_toml(cfg: PipelineConfig | dict[str, dict[str, Any]]) -> str:
    """Render a config, or some of its tables, as TOML (strings, numbers, bools, lists of those)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for table, values in (cfg.to_dict() if isinstance(cfg, PipelineConfig) else cfg).items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
