"""Fixtures for the real services: a Slurm cluster and a PostgreSQL server.

Tests that need them skip with a reason when they are absent — unless PIPELINE_REQUIRE_SERVICES=1
(set by .ci/run), where an absent service is a failure. Start them with
``bash slurm/test-cluster.sh up``; the connection settings are read from its env.sh.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("PIPELINE_REQUIRE_SERVICES") == "1"
CLUSTER_ENV = Path(os.environ.get("PIPELINE_TEST_CLUSTER", "/tmp/pipeline-test-cluster")) / "env.sh"

# Slurm jobs and spawned local workers import task functions from tests.support.tasks by name.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _load_cluster_env() -> None:
    if not CLUSTER_ENV.is_file():
        return
    for line in CLUSTER_ENV.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, value)


_load_cluster_env()


SERVICE_FIXTURES = {"slurm_cluster": "slurm", "postgres_url": "postgres", "fresh_pg_url": "postgres",
                    "image": "image"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a service by the fixtures it uses (and an executor `kind` of "slurm"), so that
    the marks cannot be forgotten: CI runs the marked tests with the services up, then every test with them
    hidden (.ci/without-services.sh), which is what `make test` meets on a laptop."""
    for item in items:
        needs = {SERVICE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVICE_FIXTURES}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("kind") == "slurm":
            needs.add("slurm")
        for mark in sorted(needs - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, mark))


def service_missing(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (PIPELINE_REQUIRE_SERVICES=1: services must be up)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of the cluster's partition; skips/fails when no Slurm controller answers."""
    if shutil.which("sbatch") is None:
        service_missing("Slurm is not installed (bash slurm/test-cluster.sh install)")
    if not os.environ.get("SLURM_CONF"):
        service_missing("SLURM_CONF is not set (bash slurm/test-cluster.sh up)")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        service_missing(f"no Slurm controller answers: {ping.stdout.strip()} {ping.stderr.strip()}")
    sacct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True)
    if sacct.returncode != 0:
        service_missing(f"Slurm accounting (sacct) is not working: {sacct.stderr.strip()}")
    part = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True)
    return part.stdout.split()[0]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("PIPELINE_TEST_PG_URL")
    if not url:
        service_missing("PIPELINE_TEST_PG_URL is not set (bash slurm/test-cluster.sh up)")
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as e:
        service_missing(f"PostgreSQL at {url} does not answer: {e}")
    return url


@pytest.fixture(scope="session")
def own_pg_url(postgres_url: str):
    """A database of this test process's own on the test server, dropped at the end: test processes that run
    beside each other (pytest-xdist's workers, the floors job in CI) never empty one another's tables."""
    import sqlalchemy

    name = f"pipeline_test_{os.getpid()}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield sqlalchemy.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_pg_url(own_pg_url: str) -> str:
    """This process's test database emptied of Optuna's tables, so that each test starts from nothing."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(own_pg_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
    engine.dispose()
    return own_pg_url


@pytest.fixture
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp dir with a shell-hostile name, as the run directory of Slurm tests."""
    return tmp_path_factory.mktemp("run dir 'quoted'; echo x")


@pytest.fixture
def where(request, tmp_path: Path, shared_tmp: Path) -> Path:
    """For a test parametrized by executor `kind`: a folder its tasks can reach (the shared one for
    Slurm jobs, which also requires the cluster)."""
    if request.node.callspec.params["kind"] == "slurm":
        request.getfixturevalue("slurm_cluster")
        base = shared_tmp / request.node.name.replace("[", "-").replace("]", "")
        base.mkdir()
        return base
    return tmp_path


# ---- small synthetic runs for the model and attack stages ---------------------------------------

DEMO = ROOT.parent / "shared" / "data" / "mimic3-demo"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The real MIMIC-III demo (100 patients) beside the project; skips/fails when absent."""
    if not DEMO.is_dir():
        if os.environ.get("PIPELINE_REQUIRE_DEMO") == "1":
            pytest.fail(f"the MIMIC-III demo is not at {DEMO} (PIPELINE_REQUIRE_DEMO=1)")
        pytest.skip(f"the MIMIC-III demo is not at {DEMO}")
    return DEMO


@pytest.fixture(scope="session")
def demo_run(demo_dir, tmp_path_factory) -> Path:
    """A run directory holding dataset.zarr of the real demo (copy it before writing)."""
    from pipeline.cli import main

    run = tmp_path_factory.mktemp("demo")
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir)]) == 0
    return run


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A run directory holding dataset.zarr of 300 synthetic admissions (copy it before writing)."""
    from pipeline.cli import main

    run = tmp_path_factory.mktemp("small")
    assert main(["synth", "--run-dir", str(run), "--admissions", "300", "--seed", "3"]) == 0
    assert main(["prepare", "--run-dir", str(run), "--seed", "3"]) == 0
    return run


@pytest.fixture(scope="session")
def trained_run(small_run, tmp_path_factory) -> Path:
    """small_run plus a tiny trained model (split, model/); copy before writing."""
    from pipeline.cli import main
    from tests.support.runs import TINY, copy_run

    run = copy_run(small_run, tmp_path_factory.mktemp("trained"))
    assert main(["train", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
                 "train.epochs=8", *TINY, "model.hidden=16", "model.lr=0.01"]) == 0
    return run
