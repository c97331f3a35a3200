"""`streamproc demo` end to end on the session broker, as `make demo` runs it."""

from pathlib import Path

import yaml

from streamproc.topology import Topology
from tests.helpers import run_cli

REPO = Path(__file__).parents[2]


def test_demo_runs_every_task_and_prints_the_summary(bootstrap: str, topology: Topology, tmp_path: Path) -> None:
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(yaml.safe_dump(topology.model_dump()))
    result = run_cli("demo", "--tasks", "400", "--file", str(topics_file), cwd=str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "400/400 tasks done" in result.stdout
    assert "metrics on http://127.0.0.1:" in result.stdout
    for priority in topology.priorities:
        assert priority in result.stdout
