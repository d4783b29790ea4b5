"""The attack stage: targets, shards writing one Zarr store, resuming (debug and local executors)."""

import json
import math
import re

import numpy as np
import pytest

from pipeline.attack.shards import shard_ranges
from pipeline.attack.targets import select_targets
from pipeline.cli import main
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training
from tests.support.chains import ATTACK, run_attack
from tests.support.runs import copy_trained

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

def test_shard_ranges_on_batch_multiples():
    assert shard_ranges(100, 3, 16) == [(0, 32), (32, 80), (80, 100)]  # 7 batches: 2 + 3 + 2
    assert shard_ranges(10, 3, 16) == [(0, 0), (0, 10), (10, 10)]  # fewer batches than shards: empty ones
    for n, s, u in [(1000, 7, 64), (5, 3, 4), (64, 1, 64)]:
        ranges = shard_ranges(n, s, u)
        assert ranges[0][0] == 0 and ranges[-1][1] == n and len(ranges) == s
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        assert all(lo % u == 0 for lo, _ in ranges)


def test_targets_are_correctly_classified_test_samples(trained_run):
    targets = select_targets(RunDir(trained_run), "test")
    split = json.loads((trained_run / "split.json").read_text())
    assert set(targets.dataset_index) <= set(split["test"])
    data = training.load_data(trained_run)
    model = load_model(trained_run)
    import torch

    with torch.no_grad():
        pred = model(data.x[np.array(split["test"])]).argmax(1).numpy()
    correct = np.array(split["test"])[pred == data.y[np.array(split["test"])]]
    assert sorted(targets.dataset_index) == sorted(correct.tolist())
    assert (targets.y == targets.pred).all()
    everything = select_targets(RunDir(trained_run), "all")
    assert len(everything) > len(targets) and (everything.y == everything.pred).all()


@pytest.mark.heavy
def test_three_local_shards_equal_one_debug_shard_bit_for_bit(trained_run, tmp_path):
    one = run_attack(copy_trained(trained_run, tmp_path / "one"), "--executor", "debug", "attack.shards=1")
    three = run_attack(copy_trained(trained_run, tmp_path / "three"), "--executor", "local", "--workers", "2",
                       "attack.shards=3")
    assert one.sizes["sample"] == three.sizes["sample"] > 2 * 8  # every shard has a batch
    for name in ("perturbation", "found", "iteration", "margin", "lam", "logits", "dataset_index", "y", "pred",
                 "edit", "method", "one_edit", "one_edit_margin"):
        np.testing.assert_array_equal(one[name].values, three[name].values, err_msg=name)
    assert one.found.values[:, 0].any()
    assert one.perturbation.dims == ("sample", "kind", "time", "feature")
    assert one.kind.values.tolist() == ["first", "best", "l1_best"]  # record space, the default
    assert one.attrs["attack_config"]["max_iter"] == 30 and len(one.attrs["weights_sha256"]) == 64
    assert one.perturbation.chunks[0][0] == 8


@pytest.mark.heavy
def test_a_shard_resumes_without_redoing_batches(trained_run, tmp_path):
    full = run_attack(copy_trained(trained_run, tmp_path / "full"), "--executor", "debug", "attack.shards=2")
    run = copy_trained(trained_run, tmp_path / "cut")
    # a first attempt that stops after the first batch of shard 0: simulate with a failing second batch
    from pipeline.attack import shards as attack_stage

    original = attack_stage.L1Attack.run
    calls = {"n": 0}

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("preempted")
        return original(self, *args)

    attack_stage.L1Attack.run = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            main(["attack", "--run-dir", str(run), *ATTACK, "--executor", "debug", "attack.shards=2"])
    finally:
        attack_stage.L1Attack.run = original
    progress = json.loads((run / "attack-shards" / "shard-0.json").read_text())["state"]
    assert progress["done"] == [0] and not (run / "attack.zarr").exists()
    resumed = run_attack(run, "--executor", "debug", "attack.shards=2")
    for name in ("perturbation", "found", "iteration", "margin", "lam", "logits", "edit", "method", "one_edit"):
        np.testing.assert_array_equal(full[name].values, resumed[name].values, err_msg=name)
    writes = [tuple(w) for k in range(2) for w in json.loads((run / "attack-shards" / f"shard-{k}.json")
                                                            .read_text())["state"]["writes"]]
    assert len(writes) == len(set(writes)), "a batch was written twice"


@pytest.mark.heavy
def test_tune_attack_locally_then_attack_uses_its_best(trained_run, tmp_path):
    import optuna

    from pipeline.infra import study

    run = copy_trained(trained_run, tmp_path)
    assert main(["tune-attack", "--run-dir", str(run), *ATTACK, "--executor", "local", "--workers", "2",
                 "tune-attack.trials=4", "tune-attack.targets=20", "tune-attack.startup_trials=2"]) == 0
    best = json.loads((run / "tune-attack" / "best.json").read_text())
    s = optuna.load_study(study_name=best["study"], storage=study.open_storage("", run))
    done = s.get_trials(states=study.DONE)
    assert len(done) == 4 and best["targets"] == 20 and s.direction == optuna.study.StudyDirection.MINIMIZE
    assert {t.user_attrs["worker"] for t in done} <= {0, 1}  # which worker ran what depends on timing
    assert set(best["params"]) == {"lr", "lam"}  # the declared subset, nothing else
    # the best trial: most targets flipped, then the smallest median L1 (a failure's +inf is null in best.json)
    key = sorted((-t.user_attrs["success_rate"], t.value) for t in done)[0]
    assert (-best["success_rate"], math.inf if best["value"] is None else best["value"]) == key
    store = run_attack(run, "--executor", "debug")
    assert store.attrs["params_source"].startswith(str(run / "tune-attack" / "best.json"))
    assert store.attrs["attack_config"]["lam"] == pytest.approx(best["params"]["lam"])
    assert store.attrs["attack_config"]["lr"] == pytest.approx(best["params"]["lr"])


@pytest.mark.parametrize("space", ["record", "tensor"])
def test_tune_attack_runs_the_attack_that_attack_runs(space, trained_run, tmp_path):
    """[attack] fista, lam_search, max_iter, observed_only reach the trials; the trial's objective equals
    the one computed from attack.zarr made with the chosen parameters on the same targets."""
    import optuna
    import torch

    from pipeline.attack.core import AttackResult
    from pipeline.attack.tune_attack import measures
    from pipeline.infra import study

    run = copy_trained(trained_run, tmp_path)
    observed_only = space == "tensor"  # a tensor-space option
    chosen = [f"attack.space={space}", "attack.fista=true", "attack.lam_search=5", "attack.kappa=0.05",
              "attack.max_iter=100", f"attack.observed_only={str(observed_only).lower()}"]
    assert main(["tune-attack", "--run-dir", str(run), *ATTACK, *chosen, "--executor", "debug",
                 "tune-attack.trials=2", "tune-attack.targets=1000", "attack.targets=test"]) == 0
    best = json.loads((run / "tune-attack" / "best.json").read_text())
    s = optuna.load_study(study_name=best["study"], storage=study.open_storage("", run))
    for trial in s.get_trials(states=study.DONE):
        used = trial.user_attrs["attack"]
        assert (used["fista"], used["lam_search"], used["max_iter"], used["observed_only"], used["kappa"]) == \
            (True, 5, 100, observed_only, 0.05)
        assert used["lr"] == trial.params["lr"] and used["lam"] == trial.params["lam"]
    store = run_attack(run, *chosen, "--executor", "debug", "attack.targets=test")
    assert store.attrs["attack_config"]["fista"] and store.attrs["attack_config"]["lam_search"] == 5
    assert sorted(store.dataset_index.values) == json.loads((run / "tune-attack" / "targets.json").read_text())[
        "dataset_index"]
    assert store.attrs["space"] == space
    own = store.sel(kind=["first", "l1_best" if space == "record" else "best"])  # the L1 attack's own examples
    p = torch.from_numpy(own["edit" if space == "record" else "perturbation"].values)  # what the attack varies
    result = AttackResult(p, torch.from_numpy(own.found.values), None, None, None, None)
    again = measures(result)
    assert again["success_rate"] == best["success_rate"] > 0
    assert again["median_l1"] == pytest.approx(best["median_l1"] if best["median_l1"] is not None else float("inf"),
                                               rel=1e-4)


def test_objectives_on_a_known_result():
    import torch

    from pipeline.attack.core import AttackResult
    from pipeline.attack.tune_attack import score

    p = torch.zeros(3, 2, 48, 19)
    p[0, 1, 0, 0], p[0, 1, 5, 3] = 0.2, -0.4      # L0 2, L1 0.6, L∞ 0.4
    p[1, 1, 1, 1] = 0.1                           # L0 1, L1 0.1, L∞ 0.1
    found = torch.tensor([[True, True], [True, True], [False, False]])
    result = AttackResult(p, found, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2), torch.zeros(3, 2),
                          torch.zeros(3, 2, 2))
    assert score(result, "success_rate") == pytest.approx(2 / 3)
    assert score(result, "min_l1") == pytest.approx(0.6)  # median of 0.1, 0.6 and +∞ (the failure)
    assert score(result, "sparse_small_max") == pytest.approx((1 - 2 / 912) / 0.4 + (1 - 1 / 912) / 0.1)
    assert score(result, "sparse_small") == pytest.approx((1 - 2 / 912) / 0.6 + (1 - 1 / 912) / 0.1)
    found[1] = False
    assert score(result, "min_l1") == float("inf")  # most targets failed


@pytest.mark.heavy
def test_lambda_search_from_the_config(trained_run, tmp_path):
    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), *ATTACK, "--executor", "debug", "attack.lam_search=0"]) == 2
    assert not (run / "attack.zarr").exists()
    store = run_attack(run, "--executor", "debug", "attack.lam_search=3")
    assert store.attrs["attack_config"]["lam_search"] == 3
    assert int(store.iteration.max()) <= 30 and bool(store.found.any())


@pytest.mark.parametrize("stage", ["attack", "tune-attack"])
def test_without_a_split_the_stage_names_it_and_exits_1(stage, trained_run, tmp_path, capsys):
    from tests.support.runs import copy_run

    run = copy_run(trained_run, tmp_path)  # dataset.zarr only
    assert main([stage, "--run-dir", str(run), *ATTACK, "--executor", "debug"]) == 1
    assert "split.json: not found (run the `tune-model` or `cv` or `train` stage first)" in capsys.readouterr().err


@pytest.mark.heavy
def test_a_remade_dataset_is_caught_by_the_next_stages_marker(trained_run, tmp_path, capsys):
    """dataset.zarr made again from other tables (another seed): the complete attack is not skipped."""
    import shutil

    run = copy_trained(trained_run, tmp_path / "run")
    run_attack(run, "--executor", "debug")
    marker = json.loads((run / ".stages" / "attack.json").read_text())
    assert re.fullmatch(r"v2:[0-9a-f]{64}", marker["inputs"]["dataset.zarr"])
    assert marker["inputs"]["tune-attack/best.json"] is None
    other = tmp_path / "other"
    assert main(["synth", "--run-dir", str(other), "--admissions", "120", "--seed", "4"]) == 0  # fewer samples
    assert main(["prepare", "--run-dir", str(other), "--seed", "4"]) == 0
    shutil.rmtree(run / "dataset.zarr")
    shutil.copytree(other / "dataset.zarr", run / "dataset.zarr")
    capsys.readouterr()
    assert main(["attack", "--run-dir", str(run), *ATTACK, "--executor", "debug"]) == 1
    assert "attack: complete, but its input dataset.zarr changed" in capsys.readouterr().err
    # forced on the test set: the split was made for the other dataset, and says so (it was an IndexError)
    assert main(["attack", "--run-dir", str(run), *ATTACK, "--executor", "debug", "--force"]) == 1
    assert "split.json: its test set names sample" in capsys.readouterr().err
    everything = [*ATTACK, "attack.targets=all", "--executor", "debug"]
    assert main(["attack", "--run-dir", str(run), *everything, "--force"]) == 1  # the checks' training records
    assert "split.json: names sample" in capsys.readouterr().err
    lab = tmp_path / "limits.toml"
    lab.write_text("[sodium]\ndelta = 13\n")  # a laboratory's limits: then nothing needs a split of this dataset
    assert main(["attack", "--run-dir", str(run), *everything, f"checks.limits={lab}", "--force"]) == 0
    assert main(["attack", "--run-dir", str(run), *everything, f"checks.limits={lab}"]) == 0  # consistent again


@pytest.mark.heavy
def test_a_shard_without_targets_is_not_submitted(trained_run, tmp_path, caplog):
    """More shards than batches of targets submitted empty shards."""
    run = copy_trained(trained_run, tmp_path)
    with caplog.at_level("INFO"):
        store = run_attack(run, "--executor", "debug", "attack.shards=4", "attack.batch_size=256",
                           "attack.chunk_samples=8")
    assert store.found.sizes["sample"] <= 256
    assert "1 shard(s) run, not 4" in caplog.text
    assert len(list((run / "attack-shards").iterdir())) == 1, "one shard ran"
