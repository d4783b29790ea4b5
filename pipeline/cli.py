"""Command line: ``python -m pipeline <stage> [options] [table.key=value ...]``.

Exit codes: 0 success, 1 a stage failed (bad input data, a missing earlier artifact, a failed task),
2 bad usage or config, 3 `run` finished but its report says the run means little (analyze.weak_run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from pathlib import Path

from pipeline import __version__
from pipeline import config as config_mod
from pipeline.config import EXECUTORS, ConfigError, PipelineConfig
from pipeline.errors import InputError, write_failure
from pipeline.infra import trusted
from pipeline.infra.executor import LOG_FORMAT, TaskFailed, cancel_run, end_run_workers
from pipeline.infra.rundir import RunDir
from pipeline.infra.stages import CHAIN, STAGES, run_chain, run_stage
from pipeline.options import did_you_mean
from pipeline.preflight import dry_run, planned, preflight

log = logging.getLogger("pipeline")

EXIT_FAILED, EXIT_CONFIG, EXIT_WEAK = 1, 2, 3


def means_little(cfg: PipelineConfig, run_dir: RunDir) -> bool:
    """Whether the finished run's report says it means little (a model no better than chance, one class
    predicted, too few examples): each reason as a warning; exit 3 unless analyze.weak_run = "warn"."""
    from pipeline.susceptibility import trust  # deferred: torch and xarray, for `run` only

    problems = trust.gates(run_dir, trust.successes_of(run_dir), cfg.analyze.min_targets)
    for problem in problems:
        log.warning("this run means little: %s", problem)
    if problems:
        log.warning("the report says so at its top; %s", "exit 3 (analyze.weak_run = \"warn\" keeps exit 0)"
                    if cfg.analyze.weak_run == "fail" else "analyze.weak_run = \"warn\": exit 0")
    return bool(problems)


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (`--worker 2` was taken as `--workers 2`); its subparsers are of this
    class too, and `stages` holds them by name."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)
        self.stages: dict[str, Parser] = {}

    def options(self) -> list[str]:
        """Every option string this parser takes (for suggestions: argparse lists them in no public API)."""
        return [s for action in self._actions for s in action.option_strings]

    def refuse(self, unknown: list[str]) -> typing.NoReturn:
        """Exit 2 naming each unknown argument, with the option it may be a typo of."""
        self.error("; ".join(f"unrecognized argument {a}{did_you_mean(a.partition('=')[0], self.options())}"
                             for a in unknown))


def _common_options() -> Parser:
    p = Parser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--config", type=Path, metavar="FILE.toml",
                   help="config file (tables [run], [synth], [tune-model], …); default: built-in defaults")
    g.add_argument("--run-dir", type=Path, default=Path("runs/default"), metavar="DIR",
                   help="run directory holding every artifact (default: %(default)s)")
    g.add_argument("--executor", choices=EXECUTORS,
                   help="where parallel tasks run: local processes, Slurm arrays, or in-process")
    g.add_argument("--workers", type=int, metavar="N", help="parallel tasks at once")
    g.add_argument("--seed", type=int, help="master seed (recorded in every artifact)")
    g.add_argument("--force", action="store_true", help="redo stages even if their output is complete")
    g.add_argument("--dry-run", action="store_true",
                   help="check and print what would run: each stage's config and, on Slurm, the sbatch script "
                        "(validated with sbatch --test-only); submits and writes nothing")
    g.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides; a bare key belongs to this stage's table, "
                        "'table.key=value' to any table (e.g. run.storage=postgresql+psycopg2://…)")
    return p


def _add_section_options(parser: argparse.ArgumentParser, section: type, table: str) -> None:
    """One ``--option`` per field of a stage's config dataclass (the one place options are defined)."""
    g = parser.add_argument_group(f"[{table}] options (also settable as key=value or in the config file)")
    hints = typing.get_type_hints(section)
    for f in dataclasses.fields(section):
        typ = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict = {"dest": f"opt_{f.name}", "default": None,
                        "help": f"{f.metadata.get('help', '')} (default: {default!r})"}
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is list:
            kwargs["nargs"] = "*"
        else:
            kwargs["type"] = typ
            kwargs["metavar"] = f.name.upper()
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
            kwargs.pop("metavar", None)
        g.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m pipeline",
        description="MIMIC-III mortality LSTM, L1 adversarial attack and susceptibility analysis, "
                    "as stages that run locally or as Slurm job arrays.",
        epilog="Stages run in this order; `run` does them all, skipping completed ones.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    common = _common_options()
    types_ = config_mod.section_types()
    for name in CHAIN:
        stage = STAGES[name]
        p = sub.add_parser(name, parents=[common], help=f"{stage.summary} → {stage.produces}",
                           description=f"{stage.summary}. Writes {stage.produces} in the run directory.")
        _add_section_options(p, types_[name], name)
    p = sub.add_parser("run", parents=[common], help="all stages in order, skipping completed ones",
                       description="Run " + " → ".join(CHAIN) + "; completed stages are skipped.")
    p.add_argument("--mimic-dir", dest="opt_mimic_dir", metavar="DIR",
                   help="real MIMIC-III tables (skips synth); default: synthetic data")
    p = sub.add_parser("cancel", help="stop this run's Slurm arrays and local workers (and no other run's)",
                       description="Cancel every Slurm array the run directory recorded (jobs/*/array.json) and "
                                   "end its live local workers (jobs/*/workers.json); only jobs and processes "
                                   "this run started are touched, whatever those files say.")
    p.add_argument("--run-dir", type=Path, default=Path("runs/default"), metavar="DIR",
                   help="run directory (default: %(default)s)")
    parser.stages = sub.choices
    return parser


def resolve_config(args: argparse.Namespace) -> PipelineConfig:
    """Defaults ← --config file ← key=value overrides ← explicit options."""
    table = "run" if args.stage == "run" else args.stage
    cfg = config_mod.load(args.config, args.overrides, default_table=table)
    run_opts = {k: getattr(args, k) for k in ("seed", "executor", "workers") if getattr(args, k) is not None}
    if run_opts:
        cfg = config_mod.replace(cfg, "run", **run_opts)
    stage_opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    if stage_opts:
        cfg = config_mod.replace(cfg, "prepare" if args.stage == "run" else table, **stage_opts)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if not a.startswith("-")), None)
    if stage is not None and stage not in parser.stages:  # argparse would list them all, suggesting none
        parser.error(f"unknown stage {stage!r}{did_you_mean(stage, parser.stages)} (stages: "
                     f"{', '.join(parser.stages)})")
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (argparse only takes them in one run)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.stages[args.stage].refuse(unknown)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format=LOG_FORMAT, datefmt="%H:%M:%S")
    if args.stage == "cancel":
        if extra:
            parser.stages["cancel"].refuse(extra)
        return cancel(args.run_dir)
    args.overrides = [*args.overrides, *extra]
    try:
        cfg = resolve_config(args)
        run_dir = RunDir(args.run_dir)
        trusted.leave_run_dir(run_dir.path)  # `python -m` from inside it put it on sys.path: import nothing from it
        if args.print_config:
            print(config_mod.to_toml(config_mod.redacted(cfg.to_dict())), end="")
            return 0
        stages = planned(cfg, run_dir, args.stage, args.force)
        preflight(cfg, run_dir, stages, submitting=not args.dry_run)  # all the chain needs, before it runs
        if args.dry_run:
            text, accepted = dry_run(cfg, run_dir, stages)
            print(text, end="")
            return 0 if accepted else EXIT_CONFIG
        log.info("run directory %s (executor %s, seed %d)", run_dir.path, cfg.run.executor, cfg.run.seed)
        if args.stage == "run":
            run_chain(cfg, run_dir, force=args.force)
            print(f"run directory: {run_dir.path}")
            if run_dir.report.exists():
                print(f"report: {run_dir.report}\nfigures: {run_dir.figure('')}")
                if means_little(cfg, run_dir) and cfg.analyze.weak_run == "fail":
                    return EXIT_WEAK
        else:
            run_stage(args.stage, cfg, run_dir, force=args.force)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (TaskFailed, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # the run directory's disk or permissions: one line, not a traceback
        error = write_failure(e, e.filename or args.run_dir)
        if error is None and isinstance(e, PermissionError) and e.filename:
            error = InputError(f"{e.filename}: permission denied (is the run directory {args.run_dir} writable?)")
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cancel(run_dir: Path) -> int:
    """``pipeline cancel``: end the run's live local workers, then scancel its Slurm arrays."""
    try:
        stopped = end_run_workers(run_dir)
        if stopped:
            print(f"stopped local worker pid {', '.join(map(str, stopped))}", flush=True)
        cancelled = cancel_run(run_dir)
    except InputError as e:  # scancel missing or failing, a worker that does not end
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if cancelled:
        print(f"cancelled Slurm job(s) {', '.join(cancelled)}")
    elif not stopped:
        print(f"{run_dir}: no Slurm array of this run is pending or running, and no local worker of it is alive")
    return 0


def entry() -> None:
    """The command line's entry point. After a failed stage it leaves without running native
    finalizers: pyarrow's IO threads, stuck on a stream a parse error abandoned, made interpreter
    shutdown wait forever in about one run in twenty (tests/test_prepare.py runs it 20 times)."""
    code = main()
    if code != 0:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
