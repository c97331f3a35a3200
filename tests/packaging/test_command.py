"""The installed `streamproc` script: `--version` and shell completion, run as a user's shell runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamproc

SCRIPT = str(Path(sys.executable).with_name("streamproc"))
BASH_HOOK = "complete -o default -F _streamproc_completion streamproc"


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=os.environ | env,
        stdin=subprocess.DEVNULL,  # no terminal: a script, CI, a Dockerfile
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", [[SCRIPT], [sys.executable, "-m", "streamproc"]], ids=["script", "python -m"])
def test_version(command: list[str]) -> None:
    result = _run([*command, "--version"])
    assert (result.returncode, result.stdout, result.stderr) == (0, f"streamproc {streamproc.__version__}\n", "")


def test_version_is_eager() -> None:
    result = _run([SCRIPT, "--version", "worker"])  # worker would need --app
    assert (result.returncode, result.stdout) == (0, f"streamproc {streamproc.__version__}\n")


def test_show_completion_in_a_non_interactive_bash() -> None:
    # `; exit $?` keeps bash as the parent (it would exec a lone command): typer detects the shell from it.
    result = _run(["bash", "-c", f"{SCRIPT} --show-completion; exit $?"])
    assert result.returncode == 0, result.stderr
    assert BASH_HOOK in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(("shell", "marker"), [("bash", BASH_HOOK), ("zsh", "#compdef streamproc")])
def test_completion_script_for_a_named_shell_needs_no_detection(shell: str, marker: str) -> None:
    result = _run([SCRIPT], _STREAMPROC_COMPLETE=f"source_{shell}")
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("words", "expected"),
    [("streamproc wor", "worker"), ("streamproc worker --sync", "--sync-threads"), ("streamproc dlq re", "replay")],
)
def test_bash_completes_commands_and_options(words: str, expected: str) -> None:
    cword = str(len(words.split()) - 1)
    result = _run([SCRIPT], _STREAMPROC_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout.split()
