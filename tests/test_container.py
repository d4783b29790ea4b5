"""What can be checked of the Apptainer definition without building it (tests/test_image.py runs the built
image): it installs the lock file and
nothing else, keeps user site-packages out, carries the source commit to its labels, help and the
task-start version check, the files it copies exist, and its %runscript and %test commands work on
this (host) install with its %environment."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEF = ROOT / "containers" / "pipeline.def"
MAKEFILE = (ROOT / "Makefile").read_text()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FLOORS = os.environ.get("PIPELINE_FLOORS") == "1"  # .ci/floors.sh: this venv holds the floors, not the lock


def sections(text: str | None = None) -> dict[str, str]:
    parts = re.split(r"^%(\w+)[ \t]*$", DEF.read_text() if text is None else text, flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def defaults() -> dict[str, str]:
    """The build arguments %arguments gives a default."""
    return dict(line.split("=", 1) for line in commands(sections()["arguments"]))


def rendered(commit: str = COMMIT, lock: str = "cpu") -> dict[str, str]:
    """The sections as `apptainer build --build-arg SOURCE_COMMIT=<commit> --build-arg LOCK=<lock>` sees them."""
    values = {**defaults(), "SOURCE_COMMIT": commit, "LOCK": lock}
    return sections(re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], DEF.read_text()))


def commands(body: str) -> list[str]:
    return [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def host_shell(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a section as the container would: its %environment first, this venv's python first on PATH."""
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", "-euc", rendered()["environment"] + "\n" + script, "section", *args],
                          capture_output=True, text=True, env=full, cwd=ROOT)


DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}  # the python3 each Debian release ships


def test_header_uses_the_python_of_the_lock():
    header = DEF.read_text().split("%", 1)[0]
    assert re.search(r"^Bootstrap:\s*debootstrap$", header, re.M), "the Debian archive, no Docker Hub needed"
    release = re.search(r"^OSVersion:\s*(\w+)$", header, re.M)
    assert release and re.search(r"^Include:.*\bpython3\b.*\bpython3-venv\b", header, re.M)
    locked_python = re.search(r"--python-version (\d+\.\d+)", MAKEFILE)
    assert locked_python and DEBIAN_PYTHON[release.group(1)] == locked_python.group(1), \
        "the image's Python must be the one make lock resolves for"


def test_post_installs_the_lock_and_nothing_unpinned():
    for lock in ("cpu", "cuda"):
        post = commands(rendered(lock=lock)["post"])
        lockfile = f"/opt/pipeline/requirements/{lock}.txt"
        assert f"LOCKFILE={lockfile}" in post
        installs = [shlex.split(c) for c in post if re.search(r"\bpip install\b", c)]
        assert installs
        for argv in installs:
            rest = [a for a in argv[argv.index("install") + 1:] if a not in ("--no-cache-dir", "--no-build-isolation")]
            if "-r" in rest:
                assert rest == ["-r", "$LOCKFILE"], argv
            elif rest[-1] == "$TORCH":  # the CPU lock's torch, the CPU build, from a folder or PyTorch's index
                assert rest[0] == "--no-deps" and ("--no-index" in rest or "--index-url" in rest), argv
            else:  # the package itself: its dependencies all come from the lock
                assert rest == ["--no-deps", "/opt/pipeline"], argv
        assert "TORCH=$(grep -E '^torch==' \"$LOCKFILE\")" in post  # the lock's own pin
        assert "python -m pip check" in post


def test_every_copied_file_exists():
    for lock in ("cpu", "cuda"):
        lines = [ln.split() for ln in commands(rendered(lock=lock)["files"])]
        assert lines
        for src, dest in lines:
            assert (ROOT / src).exists(), f"%files copies {src}, which is not in the repository"
            assert dest.startswith("/opt/pipeline/")
        # what %post installs must have been copied
        assert {"/opt/pipeline/pyproject.toml", f"/opt/pipeline/requirements/{lock}.txt"} <= {d for _, d in lines}


def test_user_site_packages_stay_out():
    assert re.search(r"^\s*export PYTHONNOUSERSITE=1\s*$", sections()["environment"], re.M)
    # effective: a Python started after %environment ignores ~/.local
    out = host_shell("python -c 'import sys; print(sys.flags.no_user_site)'")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_every_build_argument_is_passed_by_make_container():
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", DEF.read_text()))
    assert used == {"SOURCE_COMMIT", "LOCK", "TORCH_INDEX"}
    script = (ROOT / "containers" / "build.sh").read_text()
    passed = set(re.findall(r"--build-arg (\w+)=", script))
    assert used - set(defaults()) <= passed, "apptainer build fails on a {{ VAR }} that no --build-arg defines"
    assert "git rev-parse HEAD" in script and "containers/pipeline.def" in script and "LOCK" in passed
    for target, lock in (("container", "cuda"), ("container-cpu", "cpu")):
        recipe = MAKEFILE.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert f"containers/build.sh {lock} " in recipe, target


def test_labels_help_and_environment_carry_the_commit():
    s = rendered()
    assert re.search(rf"^\s*org\.opencontainers\.image\.revision {COMMIT}$", s["labels"], re.M)
    assert COMMIT in s["help"]
    for needed in ("apptainer run", "apptainer exec", "make container", "PYTHONNOUSERSITE"):
        assert needed in s["help"], needed
    # the version check of each task reads it where the source is no git checkout (inside the image)
    probe = ("import pipeline.infra.versions as v; v.source_commit = lambda: None; "
             "print(v.runtime_versions()['commit'])")
    out = host_shell(f"python -c {shlex.quote(probe)}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == COMMIT


def test_runscript_is_the_cli():
    out = host_shell(rendered()["runscript"], "--help")
    assert out.returncode == 0, out.stderr
    assert "tune-attack" in out.stdout and "analyze" in out.stdout


@pytest.mark.skipif(FLOORS, reason="the floors venv holds the lowest versions, not the lock")
def test_test_section_passes_on_the_host():
    # here the host's lock (CPU) stands for the image's
    out = host_shell(rendered()["test"], env={"PIPELINE_LOCK": "requirements/cpu.txt"})
    assert out.returncode == 0, out.stderr
    assert "every package as locked in requirements/cpu.txt" in out.stdout
    assert "pipeline OK" in out.stdout


def test_test_section_fails_when_a_package_differs_from_the_lock(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==0.0.1\n    # via pandas\nsubmitit==0.0.2\n")
    out = host_shell(rendered()["test"], env={"PIPELINE_LOCK": str(lock)})
    assert out.returncode != 0
    assert "numpy: installed" in out.stderr and "but locked 0.0.1" in out.stderr
    assert "submitit: installed" in out.stderr and "but locked 0.0.2" in out.stderr


def sources_copy(where: Path) -> Path:
    """The files containers/build.sh reads, copied to `where` (a tree without git, as a release tarball)."""
    import shutil

    for name in ("containers", "requirements", "pipeline", "configs", "slurm"):
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.sif*"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, where / name)
    return where


def build(tree: Path, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PIPELINE_IMAGE_CACHE": str(cache)} if cache else {})}
    return subprocess.run(["bash", str(tree / "containers" / "build.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=tree)


def test_the_image_is_built_again_only_when_its_sources_change(tmp_path):
    """The key beside the image: the package, the lock, containers/ change it; the tests and docs do not; an image
    of the same key in the cache is copied, not built (no Apptainer is run: the copy is a stand-in file)."""
    tree = sources_copy(tmp_path / "src")
    key = build(tree, "--key", "cpu").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key) and build(tree, "--key", "cpu").stdout.strip() == key
    assert build(tree, "--key", "cuda").stdout.strip() != key
    (tree / "tests").mkdir()
    (tree / "tests" / "test_new.py").write_text("def test(): pass\n")
    (tree / "containers" / "README.md").write_text("notes\n")
    assert build(tree, "--key", "cpu").stdout.strip() == key
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{key}.sif").write_bytes(b"an image built before")
    done = build(tree, "cpu", "out.sif", cache=cache)
    assert done.returncode == 0 and "copied from" in done.stdout, done.stderr
    assert (tree / "out.sif").read_bytes() == b"an image built before"
    assert (tree / "out.sif.key").read_text().strip() == key
    assert "is up to date" in build(tree, "cpu", "out.sif").stdout
    for changed in ("pipeline/attack/l1.py", "requirements/cpu.txt", "containers/pipeline.def"):
        path = tree / changed
        before = path.read_bytes()
        path.write_bytes(before + b"\n# changed\n")
        assert build(tree, "--key", "cpu").stdout.strip() != key, changed
        path.write_bytes(before)
