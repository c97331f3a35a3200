"""The wheel, built as a user's pip builds it, and what a user's `mypy --strict` makes of it.

The wheel is built with build isolation, so pip fetches the declared `build-system` requirement
(setuptools ≥ 77, which PEP 639's `license = "Apache-2.0"` needs) from the package index; it is
built from a copy of the sources, so no `build/` left in the work tree leaks stale files into it.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamproc

ROOT = Path(__file__).parents[2]
USER_APP = Path(__file__).with_name("user_app.py")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "streamproc", source / "streamproc", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # the default pip: isolated builds
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "--wheel-dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(out.glob("*.whl"))
    assert [w.name for w in wheels] == [f"streamproc-{streamproc.__version__}-py3-none-any.whl"]
    yield wheels[0]


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        return email.parser.Parser().parsestr(
            archive.read(f"streamproc-{streamproc.__version__}.dist-info/METADATA").decode()
        )


def test_the_version_is_written_once_and_the_build_needs_pep_639_setuptools() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "streamproc.__version__"}
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]


def test_the_wheel_holds_the_package_data_the_license_and_only_streamproc(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"streamproc-{streamproc.__version__}.dist-info"
        assert {
            "streamproc/py.typed",
            "streamproc/default_topics.yaml",  # what `topics init` writes and the built-in defaults
            "streamproc/localbroker/pom.xml",
            "streamproc/localbroker/log4j2.properties",
            "streamproc/cli/__init__.py",
            # The monitor's UI, served as files: nothing is built at install time.
            "streamproc/web/static/index.html",
            "streamproc/web/static/app.js",
            "streamproc/web/static/style.css",
            f"{dist_info}/licenses/LICENSE",
        } <= names
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        assert "Apache License" in (ROOT / "LICENSE").read_text()
        assert (
            "[console_scripts]\nstreamproc = streamproc.__main__:main"
            in archive.read(f"{dist_info}/entry_points.txt").decode()
        )
    assert {name.split("/")[0] for name in names} == {"streamproc", dist_info}


def test_the_wheel_metadata(wheel: Path) -> None:
    metadata = _metadata(wheel)
    assert metadata["Name"] == "streamproc"
    assert metadata["Version"] == streamproc.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    assert {
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Operating System :: OS Independent",
        "Framework :: AsyncIO",
        "Topic :: System :: Distributed Computing",
        "Typing :: Typed",
    } <= set(classifiers)
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression only
    assert "kafka" in metadata["Keywords"].split(",")
    # the command's dependencies are the `cli` extra: code that only submits installs neither
    requires = metadata.get_all("Requires-Dist") or []
    assert "cli" in (metadata.get_all("Provides-Extra") or [])
    assert {r for r in requires if r.startswith(("typer", "rich"))} == {
        'typer>=0.12; extra == "cli"',
        'rich>=13; extra == "cli"',
    }


def _mypy_strict_on_user_app(site: Path, project: Path) -> subprocess.CompletedProcess[str]:
    """`mypy --strict user_app.py` in a project of its own, with streamproc importable only from `site`.

    The venv's own streamproc is an editable install, an import hook mypy does not follow, so the
    wheel's copy on PYTHONPATH is the only one mypy finds; like site-packages, mypy reads it only if
    it has `py.typed`. The config file keeps any mypy configuration around out of it.
    """
    project.mkdir()
    shutil.copy2(USER_APP, project / "user_app.py")
    (project / "mypy.ini").write_text("[mypy]\n")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            "../cache",
            "user_app.py",
        ],
        cwd=project,
        env=os.environ | {"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_mypy_strict_on_a_user_app_against_the_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)

    typed = _mypy_strict_on_user_app(site, tmp_path / "typed")
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert typed.stdout.startswith("Success: no issues found in 1 source file"), typed.stdout

    # The same app against the same wheel without its marker: what users got before py.typed.
    (site / "streamproc" / "py.typed").unlink()
    untyped = _mypy_strict_on_user_app(site, tmp_path / "untyped")
    assert untyped.returncode == 1
    assert "module is installed, but missing library stubs or py.typed marker  [import-untyped]" in untyped.stdout


def test_the_user_app_registers_its_tasks() -> None:
    from tests.packaging import user_app

    assert set(user_app.app.tasks) == {"resize", "notify"}
    assert user_app.resize(user_app.Resize(image_id="x", width=640)) == 320
