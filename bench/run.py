"""Run the benchmarks, print one table, write ``bench/results.json`` and ``docs/benchmarks.md``.

    python -m bench            # full (make bench), <= 15 min on 2 cores
    python -m bench --quick    # everything small (make bench-quick), < 2 min
    python -m bench --smoke    # proves the harness only, < 1 min (the test suite runs --quick)

Everything listens and connects on 127.0.0.1 only; every load loop is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import pg
from bench.common import TIERS, Result, Tier, progress
from bench.report import Facts, load_average, table, write
from bench.servers import REPOSITORY_ROOT, Server, ceiling_server, taskcache_server
from taskcache.repositories.base import Repository

MEASURES = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "extras")

EXPECTED_IDS: tuple[str, ...] = (
    "P1-sqlite-connect",
    "P1-sqlite-grpc",
    "P1-postgres-connect",
    "P1-postgres-grpc",
    "P1-sqlite-workers2-connect",
    "P1-sqlite-workers2-grpc",
    "P2-sqlite-grpc",
    "P2-sqlite-embedded",
    "P2-postgres-grpc",
    "P2-postgres-embedded",
    "P3-diskcache",
    "P3-joblib",
    "P3-new-keys",
    "P4-scalars",
    "P4-list10k",
    "P4-nested4",
    "P4-inputs5",
    "P4-scalars-python",
    "P4-list10k-python",
    "P4-nested4-python",
    "P4-inputs5-python",
    "P5-stampede",
    "P6-sqlite-mid",
    "P6-sqlite-large",
    "P6-sqlite-large-warm",
    "P6-postgres-mid",
    "P6-postgres-large",
    "P7-takeover",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="everything small (< 2 min)")
    size.add_argument("--smoke", action="store_true", help="harness check only (< 1 min)")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPOSITORY_ROOT / "bench" / "results.json",
        help="where to write the JSON results (default bench/results.json)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=REPOSITORY_ROOT / "docs" / "benchmarks.md",
        help="where to write the report (default docs/benchmarks.md)",
    )
    parser.add_argument(
        "--only",
        default=",".join(MEASURES),
        help=f"comma-separated subset of {','.join(MEASURES)} (others are listed as not run)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile section")
    return parser


class Runner:
    """Runs the selected measures; a measure that fails is reported, not fatal."""

    def __init__(self, tier: Tier, selected: set[str], facts: Facts) -> None:
        self.tier = tier
        self.selected = selected
        self.facts = facts
        self.results: list[Result] = []

    def attempt(self, name: str, measure: Callable[[], list[Result]]) -> None:
        if name not in self.selected:
            return
        progress(f"{name} ...")
        try:
            self.results.extend(measure())
        except Exception as error:
            progress(f"{name} failed: {error!r}")
            traceback.print_exc()
            self.facts.failures.append(f"{name}: {error!r}")

    def complete(self) -> list[Result]:
        """Return the results in table order, a placeholder for every id not measured."""
        by_id = {result.id: result for result in self.results}
        ordered = []
        for result_id in EXPECTED_IDS:
            result = by_id.pop(result_id, None)
            if result is None:
                measure = result_id.split("-", 1)[0]
                reason = "not selected (--only)" if measure not in self.selected else "failed"
                result = Result(
                    id=result_id,
                    measure="not measured",
                    unit="",
                    target="",
                    direction="higher",
                    limit=None,
                    notes=reason,
                )
            ordered.append(result)
        return ordered + list(by_id.values())


@contextlib.contextmanager
def _servers(
    folder: Path, postgres_url: str | None, *, workers_row: bool
) -> Iterator[tuple[dict[str, Server | None], Server]]:
    """Start ours on SQLite (and PostgreSQL; with ``workers_row``, SQLite behind two worker
    processes too) plus the ceiling; stop them all afterwards.
    """
    with contextlib.ExitStack() as stack:
        ours: dict[str, Server | None] = {
            "sqlite": stack.enter_context(
                taskcache_server("sqlite", str(folder / "p1p2-catalog.db"), folder)
            ),
            "postgres": (
                stack.enter_context(taskcache_server("postgres", postgres_url, folder))
                if postgres_url
                else None
            ),
        }
        if workers_row:  # P1 only: the SQLite catalog served by two worker processes
            ours["sqlite-workers2"] = stack.enter_context(
                taskcache_server(
                    "sqlite-workers2", str(folder / "p1p2-catalog.db"), folder, workers=2
                )
            )
        ceiling = stack.enter_context(ceiling_server(folder))
        yield ours, ceiling


def _network(runner: Runner, folder: Path, admin: str | None) -> None:
    """P1 and P2 share the server processes (and their databases)."""
    from bench import p1_network, p2_reservations  # noqa: PLC0415

    if not {"P1", "P2"} & runner.selected:
        return
    with contextlib.ExitStack() as stack:
        postgres_url = stack.enter_context(pg.fresh_database(admin, "p1p2_")) if admin else None
        ours, ceiling = stack.enter_context(
            _servers(folder, postgres_url, workers_row="P1" in runner.selected)
        )
        runner.attempt("P1", lambda: p1_network.run(runner.tier, ours, ceiling))
        if "P1" in runner.selected:
            runner.facts.server_peak_rss = {
                f"{name} server": server.peak_rss()
                for name, server in ours.items()
                # The supervisor of the workers' server holds no catalog: its RSS says little.
                if server and not name.endswith("-workers2")
            }
            runner.facts.server_peak_rss["ceiling server"] = ceiling.peak_rss()

        def open_postgres(size: int) -> Repository:
            from taskcache.repositories.postgres import PostgresRepository  # noqa: PLC0415

            assert postgres_url is not None
            return PostgresRepository(postgres_url, max_size=size)

        runner.attempt(
            "P2",
            lambda: p2_reservations.run(
                runner.tier,
                folder / "p1p2-catalog.db",
                postgres_url,
                ours,
                ceiling,
                open_postgres if postgres_url else None,
            ),
        )


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    tier = TIERS["quick" if options.quick else "smoke" if options.smoke else "full"]
    selected = {name.strip() for name in options.only.split(",") if name.strip()}
    unknown = selected - set(MEASURES)
    if unknown:
        raise SystemExit(f"unknown measures: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    facts = Facts(tier=tier)
    admin, postgres = pg.admin_url()
    facts.postgres = postgres if admin else f"not available ({postgres})"
    if admin is None:
        progress(f"PostgreSQL variants will not run: {postgres}")
    runner = Runner(tier, selected, facts)
    progress(f"tier {tier.name}; measures {', '.join(sorted(selected))}")
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-") as folder:
        try:
            _network(runner, Path(folder), admin)
        except Exception as error:  # e.g. a server that would not start
            progress(f"P1/P2 failed: {error!r}")
            traceback.print_exc()
            facts.failures.append(f"P1/P2: {error!r}")

    from bench import (  # noqa: PLC0415
        extras,
        p3_memoize,
        p4_hashing,
        p5_stampede,
        p6_scale,
        p7_takeover,
    )

    runner.attempt("P3", lambda: p3_memoize.run(tier))
    runner.attempt("P4", lambda: p4_hashing.run(tier))
    runner.attempt("P5", lambda: p5_stampede.run(tier))
    runner.attempt("P6", lambda: p6_scale.run(tier, admin))
    runner.attempt("P7", lambda: p7_takeover.run(tier))
    if "extras" in selected:
        progress("extras ...")
        try:
            facts.reservation_cache = extras.reservation_cache_entry_bytes()
            facts.open_times = extras.open_times(tier.open_repeats)
            facts.import_times = extras.import_times(tier.open_repeats)
        except Exception as error:
            traceback.print_exc()
            facts.failures.append(f"extras: {error!r}")
    results = runner.complete()
    if not options.no_profile:
        from bench.profiling import profile_worst  # noqa: PLC0415

        progress("profiling the worst in-process ratio ...")
        try:
            facts.profile = profile_worst(results, tier)
        except Exception as error:
            traceback.print_exc()
            facts.failures.append(f"profile: {error!r}")
    facts.load_at_end = load_average()
    facts.elapsed_seconds = time.monotonic() - started
    write(results, facts, options.results, options.docs)
    print(table(results))
    progress(f"wrote {options.results} and {options.docs} in {facts.elapsed_seconds:.0f} s")
    return 1 if facts.failures else 0
