"""The one table (stdout and docs/benchmarks.md) and ``bench/results.json``."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Result, Tier
from bench.profiling import Profile

ANALYSIS = Path(__file__).with_name("analysis.md")
_MIB = 1024 * 1024


def fmt(value: float | None) -> str:
    """Three significant digits, thousands separated."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(value: float | None, rounds: list[float], unit: str) -> str:
    if value is None:
        return "-"
    text = f"{fmt(value)} {unit}"
    if len(rounds) > 1:
        text += f" [{fmt(min(rounds))}-{fmt(max(rounds))}]"
    return text


def _ratio(result: Result) -> str:
    ratio = result.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}x"


def _met(result: Result) -> str:
    if result.met is None:
        return "n/a"
    return "yes" if result.met else "**NO**"


def table(results: list[Result]) -> str:
    """Return the markdown table: measure, taskcache, baseline, ratio, target, met."""
    header = "| measure | taskcache | baseline | ratio | target | met |"
    lines = [header, "|---|---|---|---|---|---|"]
    for result in results:
        measure = f"**{result.id}** {result.measure}"
        if result.notes:
            measure += f" ({result.notes})"
        lines.append(
            "| "
            + " | ".join(
                [
                    measure,
                    _cell(result.ours, result.ours_rounds, result.unit),
                    _cell(result.baseline, result.baseline_rounds, result.unit),
                    _ratio(result),
                    result.target,
                    _met(result),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / _MIB:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _hashing_route() -> str:
    from taskcache import hashing  # noqa: PLC0415

    route = hashing.hashing_route()
    if route != "compiled":
        return f"{route} (the compiled core is not available)"
    from taskcache.hashing import compiled  # noqa: PLC0415

    return f"compiled (SHA-256: {compiled.sha256_backend()})"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


@dataclass
class Facts:
    """Everything reported outside the table."""

    tier: Tier
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_at_start: str = field(default_factory=load_average)
    load_at_end: str = ""
    elapsed_seconds: float = 0.0
    postgres: str = "not available"
    server_peak_rss: dict[str, int | None] = field(default_factory=dict)
    reservation_cache: dict[str, Any] = field(default_factory=dict)
    open_times: dict[str, Any] = field(default_factory=dict)
    import_times: dict[str, Any] = field(default_factory=dict)
    profile: Profile | None = None
    failures: list[str] = field(default_factory=list)

    def machine(self) -> list[tuple[str, str]]:
        from google.protobuf.internal import api_implementation  # noqa: PLC0415

        return [
            ("CPU", f"{_cpu_model()}, {os.cpu_count()} cores, {_memory()} RAM"),
            ("OS", platform.platform()),
            ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
            ("SQLite", sqlite3.sqlite_version),
            ("PostgreSQL", self.postgres),
            (
                "protobuf",
                f"{_version('protobuf')} ({api_implementation.Type()} backend)",
            ),
            (
                "libraries",
                ", ".join(
                    f"{name} {_version(name)}"
                    for name in (
                        "grpcio",
                        "connectrpc",
                        "uvicorn",
                        "psycopg",
                        "diskcache",
                        "joblib",
                    )
                ),
            ),
            ("hashing route", _hashing_route()),
            ("load average (1/5/15 min)", f"start {self.load_at_start}, end {self.load_at_end}"),
        ]


def _also_measured(facts: Facts) -> list[str]:
    lines = []
    if facts.server_peak_rss:
        parts = [
            f"{name} {value / _MIB:.0f} MiB" if value else f"{name} n/a"
            for name, value in facts.server_peak_rss.items()
        ]
        lines.append(f"- Server peak RSS during P1 (VmHWM): {', '.join(parts)}.")
    if facts.reservation_cache:
        cache = facts.reservation_cache
        lines.append(
            f"- Reservation-cache entry: {cache['bytes_per_entry']:.0f} bytes per remembered "
            f"owner (ReservationCacheStore, {cache['entries']} entries, tracemalloc; includes "
            f"the {cache['owner_id_bytes']}-byte 40-character owner-id string and the "
            "entry's datetime)."
        )
    if facts.open_times:
        times = facts.open_times
        lines.append(
            "- `taskcache.open()` of the embedded SQLite catalog (open + close, median of "
            f"{times['repeats']}): new catalog (creates the schema) "
            f"{times['new_catalog_s'] * 1000:.2f} ms, existing catalog "
            f"{times['existing_catalog_s'] * 1000:.2f} ms; `import taskcache` + open in a "
            f"fresh process {times['fresh_process_import_and_open_s'] * 1000:.0f} ms."
        )
    if facts.import_times:
        imports = facts.import_times
        heavy = ", ".join(imports["heavy_modules"]) or "none"
        lines.append(
            f"- `import taskcache` in a fresh process (`python -X importtime`, {imports['repeats']}"
            f" runs; target <= 100 ms, not asserted): median {imports['median_s'] * 1000:.0f} ms,"
            f" best {imports['best_s'] * 1000:.0f} ms; heavy modules it loaded: {heavy}."
        )
        if "first_use_median_s" in imports:
            lines.append(
                f"- `{imports['first_use_statement']}` in a fresh process (wall time, the"
                f" exported names' modules included): median"
                f" {imports['first_use_median_s'] * 1000:.0f} ms,"
                f" best {imports['first_use_best_s'] * 1000:.0f} ms."
            )
    return lines


def _details(results: list[Result]) -> list[str]:
    lines = []
    for result in results:
        if result.id.startswith("P6-") and result.extra:
            extra = result.extra
            lines.append(
                f"- {result.id}: p95 {fmt(extra['p95_us'])} us at {extra['entries']} entries "
                f"vs {fmt(extra['baseline_p95_us'])} us at {extra['baseline_entries']}; minor "
                f"page faults per lookup {fmt(extra['minor_faults_per_lookup'])} vs "
                f"{fmt(extra['baseline_minor_faults_per_lookup'])}."
            )
        if result.id == "P5-stampede" and result.extra:
            extra = result.extra
            lines.append(
                f"- P5: executions per round, ours {extra['ours_executions']}, diskcache "
                f"{extra['baseline_executions']} (task {extra['task_seconds']} s)."
            )
        if result.id == "P7-takeover" and result.extra:
            extra = result.extra
            lines.append(
                f"- P7: takeovers per round {extra['takeovers']}; every one of the "
                f"{extra['waiters']} waiters had the value "
                f"{', '.join(fmt(s) for s in extra['all_waiters_have_value_s'])} s after the "
                f"kill (heartbeat {extra['heartbeat_s']} s, grace {extra['grace_multiplier']:g}, "
                f"poll cap {extra['poll_cap_s']} s)."
            )
        if result.id.startswith("P4-") and result.extra:
            lines.append(
                f"- {result.id}: the message serializes to "
                f"{result.extra['serialized_bytes']} bytes; hashed on the "
                f"{result.extra['hashing_route']} route."
            )
    return lines


def markdown(results: list[Result], facts: Facts) -> str:
    tier = facts.tier
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench{'' if tier.name == 'full' else ' --' + tier.name}` "
        f"(`make bench{'' if tier.name == 'full' else '-' + tier.name}`) on "
        f"{facts.started:%Y-%m-%d %H:%M} UTC, tier **{tier.name}**, in "
        f"{facts.elapsed_seconds:.0f} s. Regenerated on every run; the hand-written analysis "
        "comes from `bench/analysis.md`. Raw numbers: `bench/results.json`.",
    ]
    if tier.notes:
        parts += ["", f"**Note:** {tier.notes}."]
    parts += ["", "## Machine", "", "| | |", "|---|---|"]
    parts += [f"| {name} | {value} |" for name, value in facts.machine()]
    parts += [
        "",
        "The machine is shared (other sessions' tests may run meanwhile): read the spreads.",
        "",
        "## Results",
        "",
        "Each cell: median over rounds [min-max]. Rounds alternate ours, baseline, ours, "
        "baseline, ... in the same run. Ratio = taskcache / baseline: for throughputs (req/s, "
        "ops/s) higher is better, for times lower is better.",
        "",
        table(results),
        "",
    ]
    if facts.failures:
        parts += ["**Failures:**", "", *[f"- {failure}" for failure in facts.failures], ""]
    also = _also_measured(facts)
    if also:
        parts += ["## Also measured", "", *also, ""]
    details = _details(results)
    if details:
        parts += ["## Details", "", *details, ""]
    if facts.profile is not None:
        parts += [
            f"## Profile of the worst in-process ratio ({facts.profile.result_id})",
            "",
            "cProfile, sorted by own time (this run):",
            "",
            "```",
            facts.profile.text,
            "```",
            "",
        ]
    if ANALYSIS.exists():
        parts += [ANALYSIS.read_text().rstrip(), ""]
    return "\n".join(parts)


def write(results: list[Result], facts: Facts, results_path: Path, docs_path: Path) -> None:
    results_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = results_path.with_name(results_path.name + ".tmp")
    temporary.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    temporary.replace(results_path)
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    docs_path.write_text(markdown(results, facts))
