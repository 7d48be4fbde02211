"""Type-check the library with mypy, as the package ``marketarena`` it is installed as.

Usage: ``python .ci/typecheck.py [mypy options]``; exits with mypy's status.

The subpackages live in top-level folders (``envs/`` is ``marketarena.envs``: pyproject.toml's
``[tool.setuptools] package-dir``), and the editable install reaches them through an import
hook that mypy does not follow, so ``mypy .`` would see modules named ``envs.*`` that import a
``marketarena`` it cannot find. Instead mypy checks ``-p marketarena`` in a temporary tree of
symlinks (``marketarena/envs -> envs/``, ...) with the settings in pyproject.toml's
``[tool.mypy]``; the paths it reports are the repository's, and its cache is the repository's
``.mypy_cache/`` (a second run takes seconds).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path) -> dict[str, str]:
    """Import name -> source folder, as installed: ``{"marketarena.envs": "envs", ...}``."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-dir"]


def build_tree(tree: Path, root: Path, dirs: dict[str, str]) -> str:
    """Symlink each source folder of ``root`` into ``tree`` under its import name, with an
    empty ``__init__.py`` in each parent package; returns the top-level package's name."""
    tops = {name.split(".")[0] for name in dirs}
    if len(tops) != 1:
        raise SystemExit(f"package-dir maps more than one top-level package: {sorted(tops)}")
    for name, folder in dirs.items():
        *parents, leaf = name.split(".")
        tree.joinpath(*parents).mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parents) + 1):
            tree.joinpath(*parents[:depth], "__init__.py").touch()
        tree.joinpath(*parents, leaf).symlink_to(root / folder, target_is_directory=True)
    return tops.pop()


def typecheck(root: Path, mypy_args: Sequence[str] = ()) -> int:
    """Run mypy on the package ``root``'s pyproject.toml maps, printing what it reports with
    the paths of ``root``; returns mypy's exit status."""
    dirs = package_dirs(root)
    # the tree's paths back to the repository's: marketarena/envs/core.py -> envs/core.py
    prefixes = {name.replace(".", "/") + "/": folder + "/" for name, folder in dirs.items()}
    with tempfile.TemporaryDirectory(prefix="typecheck-") as tmp:
        package = build_tree(Path(tmp), root, dirs)
        command = [
            *(sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")),
            *("--cache-dir", str(root / ".mypy_cache"), "-p", package, *mypy_args),
        ]
        with subprocess.Popen(command, cwd=tmp, stdout=subprocess.PIPE, text=True) as mypy:
            assert mypy.stdout is not None
            for line in mypy.stdout:
                prefix = next((p for p in prefixes if line.startswith(p)), None)
                print(prefixes[prefix] + line[len(prefix) :] if prefix else line, end="")
        return mypy.returncode


def main(argv: Sequence[str]) -> int:
    if importlib.util.find_spec("mypy") is None:
        print(f"mypy is not installed for {sys.executable}: pip install -e '.[dev]'")
        return 2
    return typecheck(ROOT, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
