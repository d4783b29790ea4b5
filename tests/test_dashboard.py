"""optuna-dashboard on a run's journal: readable study, metric and parameter names (its HTTP API, in-process)."""

import json
from wsgiref.util import setup_testing_defaults

from pipeline.cli import main
from tests.support.runs import copy_run, copy_trained


def api(app, path: str):
    """GET `path` from the dashboard's WSGI app; its JSON."""
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], (status, body[:300])
    return json.loads(body)


def open_dashboard(run):
    """What `optuna-dashboard <run>/optuna.journal` serves: the one study of the run, in detail."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(str(run / "optuna.journal"))  # the journal's path, as on the command line
    (summary,) = api(app, "/api/studies")["study_summaries"]
    return summary, api(app, f"/api/studies/{summary['study_id']}")


def test_the_dashboard_shows_tune_models_study_with_readable_names(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
                 "tune-model.trials=2", "tune-model.max_epochs=1", "tune-model.epochs_per_report=1",
                 "tune-model.folds_used=2"]) == 0
    summary, detail = open_dashboard(run)
    best = json.loads((run / "tune-model" / "best.json").read_text())

    assert summary["study_name"] == detail["name"] == best["study"]
    assert detail["name"].startswith("run-tune-model-"), "<run directory>-<stage>-<tag>"
    assert detail["objective_names"] == ["mean held-out AUROC over 2 fold(s)"] == [best["metric"]]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert attrs["run_dir"] == str(run.resolve()) and attrs["objective"] == best["metric"]
    assert json.loads(attrs["search_space"])["hidden"] == [32, 64]  # the local defaults: max_hidden = 64
    assert json.loads(attrs["config"])["trials"] == 2 and int(attrs["seed"]) > 0
    # parameters in their own units, named as [model]'s keys: no log2_hidden = 6
    names = {p["name"] for p in detail["union_search_space"]}
    assert names == {"hidden", "layers", "bidirectional", "fc", "dropout", "activation", "optimizer", "lr",
                     "batch_size"}
    for trial in detail["trials"]:
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert int(params["hidden"]) in (32, 64) and int(params["batch_size"]) in (32, 64, 128, 256)
    assert best["params"]["hidden"] in (32, 64)


def test_the_dashboard_shows_tune_attacks_objective_by_name(trained_run, tmp_path):
    run = copy_trained(trained_run, tmp_path)
    assert main(["tune-attack", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
                 "attack.max_iter=20", "attack.lam_search=1", "tune-attack.trials=2", "tune-attack.targets=10",
                 "tune-attack.params=['lr', 'lam', 'optimizer']"]) == 0
    summary, detail = open_dashboard(run)
    assert detail["name"].startswith("run-tune-attack-") and detail["directions"] == ["minimize"]
    assert detail["objective_names"] == ["median L1 of the best examples (scaled units, a failure = inf)"]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    space = json.loads(attrs["search_space"])
    assert space["lr"] == {"sgd": "0.01…10 log", "adam, rmsprop": "0.001…0.3 log"}
    assert space["lam"] == "0.0001…0.1 log" and space["optimizer"] == ["sgd", "adam", "rmsprop"]
    assert {p["name"] for p in detail["union_search_space"]} == {"lr", "lam", "optimizer"}
