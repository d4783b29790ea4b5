"""The documentation travels with the code: every document the code and docs refer to is in the repository.

Checks that every mention of a ``.md`` file (a Markdown link or a plain ``docs/methods.md``) resolves to
a file of the repository, that nothing cites the team's notes outside it, that the ``pipeline/…`` (and
``tests/…``, ``slurm/…``, …) paths named in README.md and docs/ exist, that ``docs/methods.md §N``
names a section that exists, that the README stays short, and that docs/architecture.md's "Where to
change what" table names real files.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
METHODS = ROOT / "docs/methods.md"
ARCHITECTURE = ROOT / "docs/architecture.md"
README_MAX_LINES = 200

# the files whose references must resolve: the code, the tests, the scripts and the docs
SCANNED = ("pipeline/**/*.py", "tests/**/*.py", "benchmarks/**/*", "analysis/**/*", "slurm/**/*", "containers/**/*",
           "configs/*", ".ci/*", "Makefile", "docs/*.md", "README.md")
TEXT = {".py", ".md", ".toml", ".sh", ".def", ".txt", ".cfg", ""}

# the team's design notes live outside the repository; a clone does not have them (spelt in two parts so
# that this file does not cite them itself)
OUTSIDE_NOTES = tuple(name + ".md" for name in ("METHODS", "DATASET", "DESIGN", "HPC_TEST_CLUSTER", "STYLE"))

# .md files a run writes into its run directory, not documents of the repository
RUN_ARTIFACT = re.compile(r"(^|/)(report|susceptibility_\w+)\.md$")

MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
MD_MENTION = re.compile(r"(?<![\w/.<{*-])((?:\.\./|[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\.md)\b")
# paths into the repository's own folders, as README.md and docs/ name them
REPO_PATH = re.compile(r"(?<![\w/.-])((?:pipeline|tests|slurm|configs|benchmarks|analysis|containers|requirements|docs"
                       r"|\.ci)/[\w./-]*)")
SECTION_CITATION = re.compile(r"(?<![\w/.-])(?:docs/)?methods\.md §(\d+(?:\.\d+)?)")
BACKTICKED = re.compile(r"`([^`]+)`")

# split into packages while the docs were written: a path may name the module or its folder
PACKAGE_SPLIT = ("pipeline/infra/executor", "pipeline/infra/study", "pipeline/data/synth")


def scanned_files() -> list[Path]:
    files: set[Path] = set()
    for pattern in SCANNED:
        for path in ROOT.glob(pattern):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in TEXT:
                files.add(path)
    return sorted(files)


def docs_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def exists(name: str) -> bool:
    """`name` (relative to the repository root) is a file or a folder; a module and its package are one."""
    name = name.rstrip("/")
    if (ROOT / name).exists():
        return True
    if name.endswith(".py"):
        return (ROOT / name[:-3]).is_dir()
    return (ROOT / f"{name}.py").is_file()


def resolves(target: str, source: Path) -> bool:
    """A document path resolves relative to the file that names it, or to the repository root."""
    for base in (source.parent, ROOT):
        candidate = (base / target).resolve()
        if candidate.is_file() and candidate.is_relative_to(ROOT):
            return True
    return False


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ +(.+)$", text, flags=re.M)}


def test_md_references_resolve_inside_the_repository():
    missing = []
    for path in scanned_files():
        text = path.read_text(errors="replace")
        targets = set(MD_MENTION.findall(text))
        if path.suffix == ".md":
            targets |= {t.split("#")[0] for t in MD_LINK.findall(text)
                        if t.split("#")[0].endswith(".md") and "://" not in t}
        for target in sorted(targets):
            if target in OUTSIDE_NOTES or RUN_ARTIFACT.search(target):
                continue
            if not resolves(target, path):
                missing.append(f"{rel(path)}: {target}")
    assert not missing, "references to .md files that are not in the repository:\n" + "\n".join(missing)


def test_markdown_links_resolve():
    """Every relative link of README.md and docs/ names an existing file (and heading, for #anchors)."""
    broken = []
    for path in docs_files():
        for target in MD_LINK.findall(path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists() or not linked.is_relative_to(ROOT):
                broken.append(f"{rel(path)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{rel(path)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_nothing_cites_the_notes_outside_the_repository():
    here = Path(__file__).resolve()
    citing = []
    for path in scanned_files():
        if path == here:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for name in OUTSIDE_NOTES:
                if re.search(rf"(?<![\w/.-]){re.escape(name)}", line):
                    citing.append(f"{rel(path)}:{number}: {name}")
    assert not citing, "cite notes that are not in the repository (use docs/…):\n" + "\n".join(citing)


def test_paths_in_the_docs_exist():
    """`pipeline/…` (and tests/, slurm/, … ) paths named in README.md and docs/ are files or folders."""
    missing = []
    for path in docs_files():
        for name in REPO_PATH.findall(path.read_text()):
            name = name.rstrip(".")
            if not exists(name):
                missing.append(f"{rel(path)}: {name}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_method_sections_cited_exist():
    """`docs/methods.md §3` in a comment names a numbered section of docs/methods.md."""
    text = METHODS.read_text()
    numbered = set(re.findall(r"^#{2,4} +(\d+(?:\.\d+)?)\.? ", text, flags=re.M))
    missing = [f"{rel(path)}: §{number}" for path in scanned_files()
               for number in SECTION_CITATION.findall(path.read_text(errors="replace")) if number not in numbered]
    assert not missing, "cited sections that docs/methods.md does not have:\n" + "\n".join(missing)


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it ≤ {README_MAX_LINES}, details go to docs/"


def test_readme_links_every_doc():
    readme = README.read_text()
    unlinked = [rel(p) for p in sorted(DOCS.glob("*.md")) if f"]({rel(p)}" not in readme]
    assert not unlinked, f"docs not linked from README.md: {unlinked}"


def where_to_change_what() -> list[str]:
    text = ARCHITECTURE.read_text()
    match = re.search(r"^## Where to change what\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, "docs/architecture.md has no '## Where to change what' section"
    rows = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return [row for row in rows[2:]]  # without the header and its rule


@pytest.mark.parametrize("change", ["add a feature", "add an attack optimizer", "add an executor", "add a stage",
                                    "add a figure", "add a model architecture", "add an entry-error kind",
                                    "add an attack space", "read another MEDS dataset",
                                    "add a search that feeds best", "change the rule for best"])
def test_where_to_change_what_has_a_row(change):
    assert any(row.split("|")[1].strip() == change for row in where_to_change_what()), change


def test_where_to_change_what_names_existing_files():
    missing, empty = [], []
    for row in where_to_change_what():
        paths = [p for p in BACKTICKED.findall(row) if "/" in p and " " not in p]
        if not paths:
            empty.append(row.split("|")[1].strip())
        missing += [f"{row.split('|')[1].strip()}: {p}" for p in paths if not exists(p)]
    assert not empty, f"rows that name no file: {empty}"
    assert not missing, "files named in 'Where to change what' that do not exist:\n" + "\n".join(missing)


# what each registering change touches: (the registry's name as the row spells it, the file that defines it)
REGISTRIES = {
    "add an entry-error kind": [("@kind", "pipeline/error_kinds.py")],
    "add a model architecture": [("MODULES", "pipeline/model/archs.py"), ("ARCHS", "pipeline/config.py")],
    "add an attack space": [("SPACES", "pipeline/config.py"), ("TEXT", "pipeline/susceptibility/space_text.py")],
    "add a search that feeds best": [("FURTHER", "pipeline/attack/wiring/record.py"),
                                     ("Search", "pipeline/attack/fewest_edits.py"),
                                     ("core.rank_key", "pipeline/attack/core.py")],
    "change the rule for best": [("rank_key", "pipeline/attack/core.py"), ("ranks_before", "pipeline/attack/core.py")],
}


def defines(path: Path, name: str) -> bool:
    """Whether `path` defines `name` at its top level: an assignment, a function or class, or (`@name`) a
    decorator whose functions it applies."""
    tree = ast.parse(path.read_text())
    name = name.rsplit(".", 1)[-1]
    if name.startswith("@"):
        return any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == name[1:]
                   for node in tree.body if isinstance(node, ast.FunctionDef) for d in node.decorator_list)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(getattr(t, "id", None) == name for t in targets):
            return True
    return False


@pytest.mark.parametrize("change", REGISTRIES)
def test_a_registering_change_names_the_registry_where_the_code_keeps_it(change):
    """The row of "Where to change what" names each registry the change registers in, and its file; the file
    defines it (so a moved or renamed registry fails here, not in a reader's hands)."""
    (row,) = [r for r in where_to_change_what() if r.split("|")[1].strip() == change]
    for name, path in REGISTRIES[change]:
        assert f"`{name}" in row and f"`{path}`" in row, (change, name, path)
        assert defines(ROOT / path, name), f"{path} does not define {name}"


def test_every_test_file_is_on_the_map_of_the_tests():
    """docs/architecture.md's map from the package to its tests names every test file (the tree is flat)."""
    text = ARCHITECTURE.read_text()
    match = re.search(r"^## Where the tests are\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, "docs/architecture.md has no '## Where the tests are' section"
    named = set(BACKTICKED.findall(match.group(1)))
    missing = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "tests").glob("*.py"))
               if p.relative_to(ROOT).as_posix() not in named and p.name != "__init__.py"]
    assert not missing, f"test files not on the map: {missing}"
