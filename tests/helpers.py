"""Small helpers shared by tests."""

import os
import subprocess
import sys


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `streamproc ARGS` in a child process, as a user would, with extra environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env=os.environ | {"COLUMNS": "200"} | env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
