"""Code that only submits (`from streamproc import Producer, SyncProducer, App`) or tests handlers
(`streamproc.testing`) needs neither typer nor rich: those are the `cli` extra, which the
`streamproc` command asks for in one line when it is missing. Each check runs in a fresh
interpreter, since this one has imported the CLI already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
CLI_MODULES = ("typer", "click", "rich")

# Makes the CLI's modules unimportable, as in an install without the `cli` extra.
WITHOUT_CLI = textwrap.dedent(
    f"""
    import sys

    class _NotInstalled:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] in {CLI_MODULES!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled)
    """
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _loaded_cli_modules(imports: str) -> list[str]:
    code = imports + "\nimport json, sys\nprint(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    run = _python(code)
    assert run.returncode == 0, run.stderr
    return [name for name in json.loads(run.stdout) if name in CLI_MODULES]


def test_the_producer_path_loads_neither_typer_nor_rich() -> None:
    imports = textwrap.dedent(
        """
        import streamproc
        from streamproc import App, PermanentError, Producer, SyncProducer, Task, TaskContext
        Producer.from_env(bootstrap_servers="localhost:1")  # built, not started: no connection
        """
    )
    assert _loaded_cli_modules(imports) == []
    assert _loaded_cli_modules("import streamproc; streamproc.Producer; streamproc.SyncProducer") == []


def test_submitting_code_and_handler_tests_work_without_the_cli_extra() -> None:
    code = WITHOUT_CLI + textwrap.dedent(
        """
        from pydantic import BaseModel
        from streamproc import App, Producer, SyncProducer
        from streamproc.testing import make_context, run_task_sync

        app = App()

        class Add(BaseModel):
            a: int
            b: int

        @app.task("add")
        def add(payload: Add) -> int:
            return payload.a + payload.b

        run = run_task_sync(app, add, {"a": 1, "b": 2})
        assert run.succeeded, run
        assert make_context("add").task == "add"
        Producer.from_env(bootstrap_servers="localhost:1")
        import streamproc.worker  # a worker run from the user's own code needs no CLI either
        print("ok")
        """
    )
    run = _python(code)
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stderr


def test_the_command_without_the_cli_extra_says_so_in_one_line() -> None:
    run = _python(WITHOUT_CLI + "from streamproc.__main__ import main\nsys.argv[0] = 'streamproc'\nmain()", "--version")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == (
        "error: the streamproc command needs the cli extra (typer is not installed): pip install 'streamproc[cli]'\n"
    )


def test_typer_and_rich_are_the_cli_extra_which_dev_and_the_image_install() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {dep.split(">")[0].split("[")[0].strip().lower() for dep in project["dependencies"]}
    assert not required & {"typer", "rich", "click"}
    extras = project["optional-dependencies"]
    assert {dep.split(">")[0] for dep in extras["cli"]} == {"typer", "rich"}
    dev_self = next(dep for dep in extras["dev"] if dep.startswith("streamproc["))
    assert "cli" in dev_self.removeprefix("streamproc[").removesuffix("]").split(",")
    bench_self = next(dep for dep in extras["bench"] if dep.startswith("streamproc["))
    assert "cli" in bench_self.removeprefix("streamproc[").removesuffix("]").split(",")  # `streamproc bench`
    assert "-e '.[dev]'" in (ROOT / "Makefile").read_text()
    assert (
        '/opt/streamproc/bin/pip install --quiet "$(echo /wheels/streamproc-*.whl)[cli,web]"'
        in (ROOT / "Dockerfile").read_text()
    )  # the image installs its wheel with the cli and web extras (tests/image runs both)
