"""wanhook's benchmarks: each figure against its baseline, measured in the same run.

    python -m bench.run [--smoke] [--only NAME ...] [--output PATH] [--chart PATH] [--page PATH]

Prints a table and writes bench/results.json ({"name": {"value", "unit", "baseline", "ratio", ...}}),
the latency chart bench/latency.png, and the table into docs/benchmarks.md between its bench markers.
--smoke runs every benchmark at tiny sizes and writes only where told to (the test suite runs it,
so the benchmarks cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from .common import Context, Result
from .download import bench_download
from .event_to_download import bench_event_to_download
from .ingest import bench_ingest
from .polling import bench_polling
from .quota import bench_quota
from .report import chart, table, update_readme
from .rocketmq import bench_rocketmq
from .scale import bench_scale

HERE = Path(__file__).resolve().parent

BENCHMARKS: dict[str, Callable[[Context], Result]] = {
    "ingest": bench_ingest,
    "event_to_download": bench_event_to_download,
    "polling": bench_polling,
    "download": bench_download,
    "quota": bench_quota,
    "scale": bench_scale,
    "rocketmq": bench_rocketmq,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmarks still run")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--output", type=Path, help="results JSON (default: bench/results.json, not with --smoke)")
    parser.add_argument("--chart", type=Path, help="latency chart PNG (default: bench/latency.png, not with --smoke)")
    parser.add_argument(
        "--page",
        "--readme",
        dest="page",
        type=Path,
        help="page to put the table in, between its bench markers (default: docs/benchmarks.md for a full run)",
    )
    args = parser.parse_args(argv)
    full = not args.smoke and not args.only
    output = args.output or (None if args.smoke else HERE / "results.json")
    chart_path = args.chart or (None if args.smoke else HERE / "latency.png")
    readme = args.page or (HERE.parent / "docs" / "benchmarks.md" if full else None)

    def log(line: str) -> None:
        print(line, flush=True)

    results: Result = {}
    samples: dict[str, list[float]] = {}
    began = time.monotonic()
    for name in args.only or BENCHMARKS:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"wanhook-bench-{name}-") as tmp:
            context = Context(Path(tmp), args.smoke, log)
            results.update(BENCHMARKS[name](context))
            samples.update(context.samples)
        log(f"  ({name}: {time.monotonic() - started:.0f} s)\n")
    text = table(results)
    elapsed = time.monotonic() - began
    log(text)
    log(f"\n{len(results)} figures in {elapsed:.0f} s")
    if output:
        if args.only and output.exists():
            # A partial run replaces its own figures and keeps the others of the last run.
            results = {**json.loads(output.read_text()), **results}
        output.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {output}")
    if chart_path:
        missing = chart(samples, chart_path)
        log(f"no chart: {missing}" if missing else f"wrote {chart_path}")
    if readme:
        note = (
            f"Measured by `make bench` on {date.today().isoformat()}, {os.cpu_count()} cores, in "
            f"{elapsed / 60:.1f} minutes; latency distributions in `bench/latency.png`."
        )
        log(f"updated {readme}" if update_readme(readme, f"{text}\n\n{note}") else f"{readme} has no bench markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
