"""`python -m tests.chaos`: run the chaos scenarios against a broker of the harness's own and print the table.

Exits 1 when a task was lost, a partition kept lag, or duplicates passed their bound.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from tests.chaos.cluster import DEFAULT_PORT, ChaosBroker
from tests.chaos.scenarios import SCENARIOS, Options, Result, run_scenario


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per scenario and workload (default 20000)")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable; default all)"
    )
    parser.add_argument("--ordering", choices=["keyed", "unkeyed", "both"], default="both", help="the workloads")
    parser.add_argument(
        "--duration", type=float, help="seconds of submission and faults per run (default: tasks / 500, at least 10)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="--concurrency of each worker (default 16)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the chaos broker's port (a free one if taken)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the journals and worker logs even if all passed")
    return parser.parse_args(argv)


def failures(result: Result) -> list[str]:
    """What makes a row a failure: SPEC §11's guarantees."""
    found = []
    if result.lost:
        found.append(f"{result.lost} lost")
    if result.lag:
        found.append(f"lag {result.lag}")
    if result.duplicates > result.bound:
        found.append(f"{result.duplicates} duplicates > bound {result.bound}")
    return found


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING)
    # The harness's own clients retry through the broker kills, loudly: results say what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    orderings = [True, False] if args.ordering == "both" else [args.ordering == "keyed"]
    duration = args.duration or max(10.0, args.tasks / 500)
    base = Path(tempfile.mkdtemp(prefix="streamproc-chaos-"))
    broker = ChaosBroker.create(base / "broker", port=args.port)
    print(f"chaos broker on {broker.bootstrap_servers}, files in {base}", flush=True)
    failed: list[str] = []
    try:
        broker.start()
        print(Result.HEADER, flush=True)
        for name in args.scenario or list(SCENARIOS):
            for keyed in orderings:
                work_dir = base / f"{name}-{'keyed' if keyed else 'unkeyed'}"
                work_dir.mkdir()
                options = Options(args.tasks, keyed, duration, concurrency=args.concurrency, seed=args.seed)
                result = run_scenario(broker, SCENARIOS[name], options, work_dir)
                problems = failures(result)
                print(result.row() + ("   FAIL: " + ", ".join(problems) if problems else ""), flush=True)
                for note in result.notes:
                    print(f"    {note}", flush=True)
                failed += [f"{name} {result.ordering}: {p}" for p in problems]
    finally:
        broker.stop()
    if failed:
        print(f"{len(failed)} failures; files kept in {base}:\n  " + "\n  ".join(failed))
    elif args.keep:
        print(f"files kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
