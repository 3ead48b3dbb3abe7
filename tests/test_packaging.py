"""The package installs (issue 34): pyproject.toml builds a wheel holding every module of fine_tune with the
dependencies and version it declares, the wheel imports from any folder without the checkout on the path, and
requirements.txt is what scripts/requirements.py generates from pyproject.toml (one source of truth)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (the test extra)
    import tomli as tomllib

from conftest import REPO


def test_requirements_txt_is_generated_from_pyproject(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import requirements
    finally:
        sys.path.remove(str(REPO / "scripts"))
    text = requirements.render()
    assert (REPO / "requirements.txt").read_text() == text, "run python scripts/requirements.py"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [line.split("#")[0].strip() for line in text.splitlines() if line and not line.startswith("#")]
    assert pins == [
        *project["dependencies"],
        *(s for e in ("onnx", "tracking", "test", "lint") for s in project["optional-dependencies"][e]),
    ]
    # a pin edited in one file only is caught
    changed = tmp_path / "pyproject.toml"
    changed.write_text((REPO / "pyproject.toml").read_text().replace('"pyyaml>=6.0"', '"pyyaml>=6.1"'))
    assert requirements.render(changed) != text


def test_the_wheel_holds_the_package_and_imports_from_anywhere(tmp_path):
    src = tmp_path / "src"  # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "fine_tune", src / "fine_tune", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("*.whl")
    import fine_tune

    assert wheel.name.startswith(f"fine_tune_distil-{fine_tune.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fine_tune").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    from packaging.requirements import Requirement

    def norm(specs):
        return [(r.name, r.specifier) for r in map(Requirement, specs)]

    assert norm(r for r in requires if "extra ==" not in r) == norm(project["dependencies"])
    assert {"onnx", "tracking", "test", "lint", "dev"} <= {
        line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Provides-Extra: ")
    }
    # installed (without its dependencies, which this interpreter has) into a folder of its own, imported from
    # another folder with neither the checkout nor the sources on the path
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", "import fine_tune, fine_tune.cli, fine_tune.recipes.format; print(fine_tune.__file__)"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(out).is_relative_to(target), out
