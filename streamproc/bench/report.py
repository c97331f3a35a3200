"""SPEC §10's figures from the scenarios' results, as a rich table and a JSON document."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from rich.table import Table

from streamproc.bench.peers import PEERS, reason, versions

Results = dict[str, Any]


@dataclass(frozen=True)
class Ratio:
    """One SPEC §10 figure: what was measured, against what, and whether it meets its target."""

    figure: str
    value: float
    target: float
    at_least: bool  # True: the value must be >= target; False: <= target
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def shown(self, number: float) -> str:
        return f"{number:.2f}{self.unit}" if self.unit == "x" else f"{number:,.0f} {self.unit}"


def _over(numerator: float, denominator: float) -> float:
    """The ratio, or NaN where the baseline measured nothing (a quick run's backlog can be gone too soon)."""
    return numerator / denominator if denominator else math.nan


def fastest_peer(noop: Results) -> tuple[str, float]:
    """The fastest of the peers that ran (FastStream among them): its name and tasks/s."""
    ran = {
        name: float(noop[name]["tasks_per_s"])
        for name in ("faststream", *(peer.kind for peer in PEERS))
        if name in noop and reason(noop[name]) is None
    }
    if not ran:
        raise KeyError("no peer ran")
    name = max(ran, key=lambda peer: ran[peer])
    return name, ran[name]


def _retry_bound_ms(retry: Results) -> float:
    return max(0.1 * float(retry["tier_ms"]), 250.0)


RATIOS: list[Callable[[Results], Ratio]] = [
    lambda r: Ratio(
        "no-op per-task handler, one worker process, vs the dispatch floor",
        _over(r["noop"]["streamproc"]["tasks_per_s"], r["noop"]["floor"]["tasks_per_s"]),
        0.5,
        True,
    ),
    lambda r: Ratio(
        f"the same, vs the fastest peer ({fastest_peer(r['noop'])[0]})",
        _over(r["noop"]["streamproc"]["tasks_per_s"], fastest_peer(r["noop"])[1]),
        2.0,
        True,
    ),
    lambda r: Ratio(
        "no-op tasks/s, one worker process, vs a bare aiokafka loop",
        _over(r["noop"]["streamproc"]["tasks_per_s"], r["noop"]["aiokafka"]["tasks_per_s"]),
        0.8,
        True,
    ),
    lambda r: Ratio(
        "the same, vs FastStream's Kafka subscriber with manual ack",
        _over(r["noop"]["streamproc"]["tasks_per_s"], r["noop"]["faststream"]["tasks_per_s"]),
        2.0,
        True,
    ),
    lambda r: Ratio(
        "batch handler (max_size 500), one worker process, vs a bare aiokafka loop",
        _over(r["noop"]["streamproc_batch"]["tasks_per_s"], r["noop"]["aiokafka"]["tasks_per_s"]),
        0.8,
        True,
    ),
    lambda r: Ratio(
        "20 ms I/O handler at concurrency 256, vs min(256/0.02 s, no-op rate)",
        _over(r["io"]["tasks_per_s"], min(r["io"]["ideal_per_s"], r["noop"]["streamproc"]["tasks_per_s"])),
        0.9,
        True,
    ),
    lambda r: Ratio(
        "high-priority p99 wait under a saturating low backlog, vs none",
        _over(r["priority"]["saturated_p99_ms"], r["priority"]["idle_p99_ms"]),
        2.0,
        False,
    ),
    lambda r: Ratio(
        f"retry delay error p99 (tier {r['retry']['tier_ms'] / 1000:g} s)",
        r["retry"]["error_p99_ms"],
        _retry_bound_ms(r["retry"]),
        False,
        unit="ms",
    ),
    lambda r: Ratio(
        "two worker processes vs one, no-op",
        _over(r["noop"]["streamproc_two_processes"]["tasks_per_s"], r["noop"]["streamproc"]["tasks_per_s"]),
        1.6,
        True,
    ),
    lambda r: Ratio(
        f"worker peak RSS with a {r['memory']['backlog']:,}-task backlog",
        r["memory"]["peak_rss_mb"],
        250,
        False,
        unit="MB",
    ),
    lambda r: Ratio(
        "no-op tasks/s with statuses and results, vs without (SPEC 12)",
        _over(r["noop"]["streamproc"]["tasks_per_s"], r["noop"]["streamproc_no_status"]["tasks_per_s"]),
        0.7,
        True,
    ),
    lambda r: Ratio("submit → result p50, no-op, idle worker", r["results"]["p50_ms"], 20, False, unit="ms"),
    lambda r: Ratio("submit → result p99, no-op, idle worker", r["results"]["p99_ms"], 50, False, unit="ms"),
    lambda r: Ratio(
        f"streamproc web: lookup of an old id p99, {r['view']['lookup']['stored']:,} stored",
        r["view"]["lookup"]["p99_ms"],
        50,
        False,
        unit="ms",
    ),
    lambda r: Ratio(
        "streamproc web: statuses/s a fresh view reads",
        r["view"]["ingest"]["statuses_per_s"],
        50_000,
        True,
        unit="statuses/s",
    ),
    lambda r: Ratio(
        f"streamproc web: update lag max, {r['monitor']['reporters']} workers reporting (SPEC 14)",
        r["monitor"]["lag_max_ms"],
        2000,
        False,
        unit="ms",
    ),
    lambda r: Ratio(
        "the status traffic meanwhile",
        r["monitor"]["statuses_per_s"],
        r["monitor"]["target_statuses_per_s"],
        True,
        unit="statuses/s",
    ),
    lambda r: Ratio(
        "streamproc web: peak RSS under that load", r["monitor"]["rss_peak_sampled_mb"], 250, False, unit="MB"
    ),
    lambda r: Ratio(
        f"delayed tasks: lateness p99, {r['delayed']['tasks']:,} over {r['delayed']['spread_s']:g} s (SPEC 13)",
        r["delayed"]["lateness_p99_ms"],
        1000,
        False,
        unit="ms",
    ),
]


def ratios(results: Results) -> list[Ratio]:
    """The figures of the scenarios in `results` (`streamproc bench --scenario` runs some only)."""
    found = []
    for compute in RATIOS:
        try:
            found.append(compute(results))
        except KeyError:
            continue  # a scenario not run
    return found


def machine(broker: str) -> dict[str, Any]:
    """What the figures were measured on."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiokafka": version("aiokafka"),
        "faststream": version("faststream"),
        "streamproc": version("streamproc"),
        "peers": versions(),  # each in a virtualenv of its own (peers.py)
        "broker": broker,
    }


def document(results: Results, about: dict[str, Any], mode: str) -> dict[str, Any]:
    """The JSON written by `streamproc bench --output`."""
    finite: dict[str, Any] = _finite(
        {
            "mode": mode,
            "machine": about,
            "scenarios": results,
            "ratios": [asdict(ratio) | {"met": ratio.met} for ratio in ratios(results)],
        }
    )
    return finite


def _finite(value: Any) -> Any:
    """JSON has no NaN: unmeasured figures are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def table(results: Results) -> Table:
    out = Table(title="streamproc bench: SPEC §10, measured in one run on one broker")
    out.add_column("figure")
    out.add_column("measured", justify="right")
    out.add_column("target", justify="right")
    out.add_column("", justify="center")
    for ratio in ratios(results):
        out.add_row(
            ratio.figure,
            ratio.shown(ratio.value),
            f"{'>=' if ratio.at_least else '<='} {ratio.shown(ratio.target)}",
            "[green]met[/green]" if ratio.met else "[red]missed[/red]",
        )
    return out


def figures(results: Results) -> Table:
    """The raw figures behind the ratios."""
    out = Table(title="measured")
    out.add_column("scenario")
    out.add_column("figure", justify="right")
    if "noop" in results:
        noop = results["noop"]
        for name, label in (
            ("aiokafka", "1. bare aiokafka loop, JSON-decoded, no-op"),
            ("streamproc", "2. streamproc, no-op, one process"),
            ("faststream", "3. FastStream subscriber, manual ack"),
        ):
            out.add_row(label, f"{noop[name]['tasks_per_s']:,.0f} tasks/s")
        out.add_row("   streamproc, no-op batch handler (max_size 500), one process", _rate(noop["streamproc_batch"]))
        out.add_row("   streamproc, no-op, one process on uvloop (`--loop uvloop`)", _rate(noop["streamproc_uvloop"]))
        _peer_rows(out, noop)
    if "io" in results:
        out.add_row("4. streamproc, 20 ms handler, concurrency 256", f"{results['io']['tasks_per_s']:,.0f} tasks/s")
    if "priority" in results:
        priority = results["priority"]
        out.add_row(
            "5. high-priority wait p50 / p99, idle",
            f"{priority['idle_p50_ms']:.1f} / {priority['idle_p99_ms']:.1f} ms",
        )
        out.add_row(
            "   the same, low backlog saturating",
            f"{priority['saturated_p50_ms']:.1f} / {priority['saturated_p99_ms']:.1f} ms",
        )
    if "noop" in results:
        out.add_row(
            "6. streamproc, no-op, two processes", f"{noop['streamproc_two_processes']['tasks_per_s']:,.0f} tasks/s"
        )
    if "retry" in results:
        retry = results["retry"]
        out.add_row("7. retry delay error p50 / p99", f"{retry['error_p50_ms']:.0f} / {retry['error_p99_ms']:.0f} ms")
    if "memory" in results:
        memory = results["memory"]
        out.add_row(f"8. peak RSS, {memory['backlog']:,} backlog", f"{memory['peak_rss_mb']:.0f} MB")
    if "noop" in results:
        out.add_row(
            "§12. streamproc, no-op, statuses off", f"{noop['streamproc_no_status']['tasks_per_s']:,.0f} tasks/s"
        )
    if "results" in results:
        latency = results["results"]
        out.add_row("§12. submit → result p50 / p99", f"{latency['p50_ms']:.1f} / {latency['p99_ms']:.1f} ms")
    if "view" in results:
        view = results["view"]
        out.add_row("§12. web view ingest", f"{view['ingest']['statuses_per_s']:,.0f} statuses/s")
        out.add_row(
            f"§12. web lookup p50 / p99, {view['lookup']['stored']:,} stored",
            f"{view['lookup']['p50_ms']:.1f} / {view['lookup']['p99_ms']:.1f} ms",
        )
    if "monitor" in results:
        _monitor_rows(out, results["monitor"])
    if "delayed" in results:
        delayed = results["delayed"]
        out.add_row(
            f"§13. delayed tasks' lateness p50 / p99 / max, {delayed['tasks']:,} over {delayed['spread_s']:g} s",
            f"{delayed['lateness_p50_ms']:.0f} / {delayed['lateness_p99_ms']:.0f} / "
            f"{delayed['lateness_max_ms']:.0f} ms",
        )
        out.add_row(
            "§13.   ran / ran twice / ran early / submitted after their eta (not counted)",
            f"{delayed['ran']:,} / {delayed['ran_twice']} / {delayed['early']} / {delayed['submitted_after_eta']}",
        )
        out.add_row(
            f"§13.   worker peak RSS meanwhile (look-ahead {delayed['look_ahead_s']:g} s)",
            f"{delayed['rss_peak_mb']:.0f} MB",
        )
    return out


def _rate(figures: Results) -> str:
    why = reason(figures)
    return f"{figures['tasks_per_s']:,.0f} tasks/s" if why is None else f"could not run: {why}"


def _peer_rows(out: Table, noop: Results) -> None:
    """The dispatch floor and the peers of SPEC §10, on the same backlog."""
    if "floor" in noop:
        out.add_row("   the dispatch floor: the bare loop awaiting a no-op handler", _rate(noop["floor"]))
    for peer in PEERS:
        if peer.kind in noop:
            out.add_row(f"   peer: {peer.label}", _rate(noop[peer.kind]))


def _monitor_rows(out: Table, monitor: Results) -> None:
    out.add_row(
        f"§14. web update lag p50 / p99 / max, {monitor['reports']:,} reports of {monitor['reporters']} workers",
        f"{monitor['lag_p50_ms']:.0f} / {monitor['lag_p99_ms']:.0f} / {monitor['lag_max_ms']:.0f} ms",
    )
    out.add_row(
        "§14.   reports never shown / shown only through a later one",
        f"{monitor['reports_unseen']} / {monitor['shown_through_a_later_report']}",
    )
    out.add_row(
        f"§14.   status traffic meanwhile, for {monitor['seconds']:g} s (asked {monitor['target_statuses_per_s']:,}/s)",
        f"{monitor['statuses_per_s']:,.0f} statuses/s",
    )
    out.add_row(
        "§14.   statuses the web view stored / left to read at the end",
        f"{monitor['view_statuses']:,} / {monitor['view_lag_at_end']}",
    )
    out.add_row(
        "§14.   web RSS before / at the end / peak (sampled each second)",
        f"{monitor['rss_before_mb']:.0f} / {monitor['rss_end_mb']:.0f} / {monitor['rss_peak_sampled_mb']:.0f} MB",
    )
