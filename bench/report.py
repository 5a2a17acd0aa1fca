"""The results as a Markdown table (printed, and kept in docs/benchmarks.md), and the latency chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def number(value: float, unit: str) -> str:
    if unit in ("429s", "reads/s"):
        text = f"{value:,.2f}".rstrip("0").rstrip(".") if value < 100 else f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}"


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| figure | wanhook | baseline | ratio | goal |", "|---|---|---|---|---|"]
    for row in results.values():
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:,.2f}"
        goal = row.get("goal") or ""
        if goal and row.get("met") is not None:
            goal += ": **met**" if row["met"] else ": **not met**"
        baseline = f"{row['against']}: {number(row['baseline'], row['unit'])}"
        lines.append(f"| {row['label']} | {number(row['value'], row['unit'])} | {baseline} | {ratio} | {goal} |")
    return "\n".join(lines)


def update_readme(readme: Path, text: str) -> bool:
    """Replace what stands between the bench markers, and nothing else; False when the markers are missing."""
    content = readme.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(content):
        return False
    readme.write_text(pattern.sub(lambda _: f"{START}\n{text}\n{END}", content, count=1))
    return True


def chart(samples: dict[str, list[float]], path: Path) -> str | None:
    """One panel per measurement (the part of each key before ":"), a cumulative distribution per series.

    Returns why no chart was drawn, or None once it is written.
    """
    panels: dict[str, dict[str, list[float]]] = {}
    for key, values in samples.items():
        if values:
            panel, _, series = key.partition(": ")
            panels.setdefault(panel, {})[series or panel] = values
    if not panels:
        return "no latency samples in this run"
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: write the file only
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter
    except ImportError:
        return "matplotlib is not installed"
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels.items(), strict=True):
        for name, values in series.items():
            ordered = sorted(values)
            fractions = [(n + 1) / len(ordered) for n in range(len(ordered))]
            axis.step(ordered, fractions, where="post", label=f"{name} (n={len(ordered)})")
        axis.set_xscale("log")
        # Plain numbers at 1, 2 and 5 of each decade: matplotlib's own minor labels run into each other.
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("milliseconds (log scale)")
        axis.set_ylabel("fraction of requests or tasks")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    figure.suptitle("wanhook latency distributions against their baselines (same run)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
