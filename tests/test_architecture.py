"""What the library imports: the layer contract, no import cycles, every dependency declared.

- Layers (DESIGN.md): ``envs`` < ``agents`` < ``evaluation`` < ``training`` < ``service`` <
  ``cli``; a lower layer never imports a higher one, not even inside a function. The contract
  lives in pyproject.toml (``[tool.importlinter]``) and is checked by import-linter's
  ``lint-imports``, here and in ``.ci/run``; a planted violation shows that the check can fail.
- No import cycles at import time: import-linter's ``acyclic_siblings`` also counts imports in
  function bodies (the usual way to break a cycle), so the module-level graph is built here
  with ``ast``. Imports under ``if TYPE_CHECKING:`` do not run and do not count.
- Every third-party package the library imports is declared in pyproject.toml: in
  ``dependencies`` when imported at import time, or in an extra (not ``dev``) when imported
  lazily for an optional feature; the tests' imports may also come from ``dev``.
- The library type-checks: ``.ci/typecheck.py`` runs mypy on it as ``marketarena.*`` (here and
  in ``.ci/run``); a planted package shows that a type error fails the check and is reported
  at its path in the repository.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> source folder, as installed ({"marketarena.envs": "envs", ...})
PACKAGE_DIRS = {
    name: ROOT / folder for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()
}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
TYPECHECK = ROOT / ".ci" / "typecheck.py"


@dataclass(frozen=True)
class ImportStatement:
    module: str  # the importing module
    where: str  # file:line
    names: tuple[str, ...]  # absolute dotted names: `import a.b` -> a.b, `from a import b` -> a.b
    package: str | None  # `from a import b`: a, which b is a name of when a.b is no module
    at_import_time: bool  # False in a function body or under `if TYPE_CHECKING:`


# ------------------------------------------------------------------------- the import scan
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, at_import_time: bool) -> Iterator[tuple[ast.AST, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, at_import_time
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        at_import_time = False
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _walk(stmt, False)
        for stmt in node.orelse:
            yield from _walk(stmt, at_import_time)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, at_import_time)


def modules(package_dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    found = {}
    for package, folder in package_dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def import_statements(files: dict[str, Path], root: Path) -> Iterator[ImportStatement]:
    """Every import statement in ``files`` (module name -> path), relative ones resolved;
    places are shown relative to ``root``."""
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for node, at_import_time in _walk(ast.parse(path.read_text(), str(path)), True):
            where = f"{path.relative_to(root)}:{node.lineno}"
            if isinstance(node, ast.Import):
                names = tuple(alias.name for alias in node.names)
                yield ImportStatement(module, where, names, None, at_import_time)
                continue
            assert isinstance(node, ast.ImportFrom)
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = tuple(f"{base}.{alias.name}" for alias in node.names)
            yield ImportStatement(module, where, names, base, at_import_time)


# ----------------------------------------------------------------------------- the layers
def lint_imports(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[dev]' (import-linter)")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layer_contract_is_kept():
    done = lint_imports()
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", report), report


PLANTED_LAYERS = ("cli", "service", "training", "evaluation", "agents", "envs")


def _planted_tree(root: Path, violation: str | None) -> Path:
    """A package ``planted`` with the project's layers as subpackages, and ``envs/low.py``
    holding ``violation`` (or nothing); returns its pyproject.toml, whose contract is the
    project's own with ``marketarena`` renamed."""
    for layer in PLANTED_LAYERS:
        (root / "planted" / layer).mkdir(parents=True)
        (root / "planted" / layer / "__init__.py").write_text("")
    (root / "planted" / "__init__.py").write_text("")
    (root / "planted" / "cli" / "app.py").write_text("from planted.envs import low\n")
    (root / "planted" / "training" / "config.py").write_text("")
    (root / "planted" / "envs" / "low.py").write_text(violation or "X = 1\n")
    contract = next(
        c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    )
    layers = [layer.replace("marketarena.", "planted.") for layer in contract["layers"]]
    assert layers == [f"planted.{layer}" for layer in PLANTED_LAYERS]
    config = root / "pyproject.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "planted"\n\n'
        "[[tool.importlinter.contracts]]\n"
        f'name = "layers"\ntype = "layers"\nlayers = {layers!r}\n'.replace("'", '"')
    )
    return config


@pytest.mark.parametrize(
    "violation",
    [
        "from planted.training import config\n",
        "def load():\n    import planted.cli\n\n    return planted.cli\n",
    ],
    ids=["module-level", "in-a-function"],
)
def test_a_low_layer_importing_a_high_one_breaks_the_contract(tmp_path, violation):
    config = _planted_tree(tmp_path, violation)
    done = lint_imports(str(config), cwd=tmp_path, PYTHONPATH=str(tmp_path))
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    assert "Contracts: 0 kept, 1 broken." in report, report
    assert "planted.envs.low -> planted." in report, report


def test_the_planted_tree_without_a_violation_keeps_the_contract(tmp_path):
    config = _planted_tree(tmp_path, None)
    done = lint_imports(str(config), cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------- the cycles
def import_cycles(package_dirs: dict[str, Path], root: Path) -> list[list[str]]:
    """Groups of modules that import each other at import time (strongly connected
    components of the module-level import graph), each as its edges ``a -> b (file:line)``.

    An import of ``a.b.c`` counts as an edge to ``a.b.c`` alone: its parent packages are
    imported first, but a package that is mid-import already sits in ``sys.modules``."""
    files = modules(package_dirs)
    edges: dict[str, dict[str, str]] = {m: {} for m in files}
    for stmt in import_statements(files, root):
        if not stmt.at_import_time:
            continue
        for name in stmt.names:
            target = name if name in files else stmt.package
            if target in files and target != stmt.module:
                edges[stmt.module].setdefault(target, stmt.where)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {m: reachable(m) for m in files}
    cycles, placed = [], set()
    for m in sorted(files):
        if m in placed or m not in reach[m]:
            continue
        group = {m} | {n for n in reach[m] if m in reach[n]}
        placed |= group
        cycles.append(
            [f"{a} -> {b} ({w})" for a in sorted(group) for b, w in edges[a].items() if b in group]
        )
    return cycles


def test_no_import_cycles_at_import_time():
    cycles = import_cycles(PACKAGE_DIRS, ROOT)
    assert not cycles, "import cycles (move one import into the function that needs it):\n" + (
        "\n\n".join("\n".join(c) for c in cycles)
    )


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import pkg.b\nfrom pkg import c\n")
    (pkg / "b.py").write_text("from pkg.a import NAME\n")  # a <-> b: a cycle
    (pkg / "c.py").write_text("def f():\n    from pkg import a\n")  # lazy: not a cycle
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n"
    )
    (pkg / "e.py").write_text("from . import d\n")  # d's import never runs: not a cycle
    assert import_cycles({"pkg": pkg}, tmp_path) == [
        ["pkg.a -> pkg.b (pkg/a.py:1)", "pkg.b -> pkg.a (pkg/b.py:1)"]
    ]


# ------------------------------------------------------------------------ the dependencies
def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _third_party(
    statements: Iterable[ImportStatement], local: set[str]
) -> Iterator[tuple[str, ImportStatement]]:
    """(import name, statement) for every import of a package outside the standard library."""
    for stmt in statements:
        for top in {name.split(".")[0] for name in stmt.names}:
            if top not in sys.stdlib_module_names and top not in local:
                yield top, stmt


def undeclared_imports(
    statements: Iterable[ImportStatement],
    at_import_time: set[str],
    lazily: set[str],
    local: set[str],
) -> list[str]:
    """Imports whose distribution is not among the declared ones: ``at_import_time`` for
    imports that run when the module is imported, ``at_import_time | lazily`` for the rest."""
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for name, stmt in _third_party(statements, local):
        # a package that is not installed here: assume the import name is the distribution's
        candidates = {_distribution(d) for d in distributions.get(name, [name])}
        allowed = at_import_time if stmt.at_import_time else at_import_time | lazily
        if not candidates & allowed:
            where = "at import time" if stmt.at_import_time else "in a function"
            problems.append(
                f"{stmt.where}: {name} ({', '.join(sorted(candidates))}) imported {where}, "
                f"declared in none of {sorted(allowed)}"
            )
    return problems


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = PYPROJECT["project"]
    extras = {
        extra: {_distribution(r) for r in reqs}
        for extra, reqs in project.get("optional-dependencies", {}).items()
    }
    return {_distribution(r) for r in project["dependencies"]}, extras


def test_every_library_import_is_declared():
    dependencies, extras = declared()
    optional = set().union(*(reqs for extra, reqs in extras.items() if extra != "dev"))
    statements = import_statements(modules(PACKAGE_DIRS), ROOT)
    problems = undeclared_imports(statements, dependencies, optional, local={"marketarena"})
    assert not problems, "\n".join(problems)


def test_every_test_import_is_declared():
    dependencies, extras = declared()
    # tests import each other's helpers and the benchmark scripts by file name
    local = {"marketarena", "tests", "benchmarks"} | {
        p.stem for p in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    }
    files = modules({"tests": ROOT / "tests"})
    everything = dependencies | set().union(*extras.values())
    problems = undeclared_imports(import_statements(files, ROOT), everything, everything, local)
    assert not problems, "\n".join(problems)


def test_an_undeclared_import_is_named(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import numpy\nimport yaml\nimport os.path\n\ndef f():\n    import optuna\n"
    )
    statements = list(import_statements(modules({"pkg": pkg}), tmp_path))
    problems = undeclared_imports(statements, {"numpy"}, {"optuna"}, local={"pkg"})
    assert len(problems) == 1 and "pkg/__init__.py:2: yaml (pyyaml)" in problems[0], problems
    # declared only in an extra: fine in a function, not at import time
    problems = undeclared_imports(statements, {"numpy", "pyyaml"}, set(), local={"pkg"})
    assert len(problems) == 1 and "optuna (optuna) imported in a function" in problems[0]


# ------------------------------------------------------------------------------ the types
def _typecheck_module():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed: pip install -e '.[dev]' (CI installs it)")
    spec = importlib.util.spec_from_file_location("typecheck", TYPECHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_library_type_checks():
    _typecheck_module()  # skips without mypy
    done = subprocess.run(
        [sys.executable, str(TYPECHECK)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    # at least every module of the library and the tree's own marketarena/__init__.py (mypy
    # also counts folders without Python files, such as agents/prompts/, as namespace packages)
    found = re.search(r"Success: no issues found in (\d+) source files", report)
    assert found and int(found.group(1)) >= len(modules(PACKAGE_DIRS)) + 1, report


def test_a_planted_type_error_fails_the_check_at_its_path(tmp_path, capsys):
    typecheck = _typecheck_module()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "planted.low" = "low", "planted.high" = "high" }\n'
        '\n[tool.mypy]\npython_version = "3.11"\n'
    )
    for folder in ("low", "high"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "low" / "values.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    (tmp_path / "high" / "use.py").write_text(
        "from planted.low.values import double\n\nHALF: int = double(1) / 2\n"
    )
    assert typecheck.typecheck(tmp_path) == 1
    report = capsys.readouterr().out
    error = 'high/use.py:3: error: Incompatible types in assignment (expression has type "float"'
    assert error in report, report
