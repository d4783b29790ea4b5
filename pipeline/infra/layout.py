"""The run directory's layout: the name of every file and folder the stages write there, spelled once.

:class:`~pipeline.infra.rundir.RunDir` turns these names into paths; no other module joins a name to
a run directory. The stage table (pipeline/infra/registry.py) names its artifacts with the same
strings (tests/test_rundir.py checks that each is one of these).
"""

DATASET = "dataset.zarr"  # prepare
SPLIT = "split.json"  # the first stage that fits a model
MODEL = "model"  # train: the final model, a folder of
WEIGHTS = "weights.pt"
MODEL_META = "model.json"  # its parameters and provenance
TEST_PREDICTIONS = "test_predictions.csv"
TEST_PREDICTIONS_MEDS = "test_predictions.parquet"  # the same, in MEDS's prediction schema
TEST_METRICS = "test_metrics.json"
TRAINING_LOSS = "training_loss.png"
TRAIN_CHECKPOINT = "model-checkpoint.pt"  # train's progress, while it runs
CV = "cv"  # cv: a folder of fold-K/ folders and the summary
CV_SUMMARY = "summary.json"
CV_TABLE = "summary.csv"
FOLD_PREDICTIONS = "predictions.csv"  # in a fold's folder
FOLD_METRICS = "metrics.csv"
FOLD_CURVE = "learning_curve.png"
FOLD_DONE = "done.json"
FOLD_CHECKPOINT = "checkpoint.pt"
BEST = "best.json"  # in a tuning stage's folder (tune-model/, tune-attack/): the best trial
TUNING_TARGETS = "targets.json"  # in tune-attack/: the fixed subset of targets
ATTACK = "attack.zarr"
ERRORS = "errors.zarr"
SUSCEPTIBILITY = "susceptibility.zarr"  # analyze, with
TABLES = "tables"
FIGURES = "figures"
REPORT = "report.md"
SUMMARY = "summary.json"  # in tables/: the report's numbers
RAW = "raw"  # synth's MIMIC-III tables (and raw/meds/, its MEDS dataset)
MEDS = "meds"
MANIFEST = "manifest.json"
STAGES = ".stages"  # the stages' markers and locks
JOBS = "jobs"  # submitit's pickles and logs, per stage
ARRAY_RECORD = "array.json"  # in a stage's jobs/ folder: the Slurm array jobs it submitted
LOCAL_WORKERS = "workers.json"  # and the local worker processes it started
