"""Readable reports from validate/bench JSON: a console table (rich) and a markdown table (tabulate)."""
from __future__ import annotations

import os
from pathlib import Path

from tabulate import tabulate

__all__ = ["MAIN_COLUMNS", "main_rows", "markdown_table", "plot_latency_bars", "print_table"]

# (header, key, format) for the main job's table
MAIN_COLUMNS = [
    ("artifact", "artifact", "{}"), ("runtime", "runtime", "{}"), ("batch", "batch", "{}"),
    ("threads", "threads", "{}"), ("p50 ms", "p50_ms", "{:.2f}"), ("p90 ms", "p90_ms", "{:.2f}"),
    ("max abs diff", "max_abs", "{:.1e}"), ("top-1 agreement", "top1_agreement", "{:.0%}"),
    ("size MB", "size_mb", "{:.2f}"),
]


def main_rows(validation: dict, bench: dict, name: str) -> dict:
    """One row of the main table from a validate result and a bench result (Python or C++) of one artifact."""
    return {"artifact": name, "runtime": bench["runtime"], "batch": bench["batch"], "threads": bench["threads"],
            "p50_ms": bench["latency_ms"]["p50"], "p90_ms": bench["latency_ms"]["p90"],
            "max_abs": validation["metrics"]["max_abs"], "top1_agreement": validation["metrics"]["top1_agreement"],
            "size_mb": bench["artifact_mb"]}


def _cells(rows, columns):
    return [[fmt.format(r[key]) if r.get(key) is not None else "-" for _, key, fmt in columns] for r in rows]


def markdown_table(rows: list[dict], columns=MAIN_COLUMNS) -> str:
    """GitHub-flavoured markdown table of ``rows`` (dicts) with ``columns`` (header, key, format)."""
    return tabulate(_cells(rows, columns), headers=[h for h, _, _ in columns], tablefmt="github")


def print_table(rows: list[dict], title: str, columns=MAIN_COLUMNS) -> None:
    """Print ``rows`` as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for h, _, _ in columns:
        t.add_column(h, justify="left" if h in ("artifact", "runtime") else "right")
    for cells in _cells(rows, columns):
        t.add_row(*cells)
    Console(width=160).print(t)


PRECISION_COLOURS = {"fp32": "tab:blue", "int8": "tab:orange", "bf16": "tab:green", "fp16": "tab:olive"}


def plot_latency_bars(panels: list[tuple[str, list[dict]]], path, *, title: str, xlabel: str,
                      goal_ms: dict[str, float] | None = None, goal_label: str = "goal",
                      max_drop: float | None = None) -> None:
    """Write one PNG: a panel per group (e.g. preset), a horizontal bar per row, fastest at the top.

    ``panels``: ``[(panel title, rows)]``; each row has ``label`` (str), ``p50_ms`` (float, ms), ``precision``
    (fp32 | int8 | bf16 | fp16: the bar's colour), ``drop_points`` (top-1 drop in points, or None), and optionally
    ``hatched`` (drawn hatched and unfilled: a by-hand peer) and ``picked`` (outlined in black, "picked").
    Each bar is labelled with its p50 and drop; names sit on the y axis, so labels never overlap however many rows.
    ``goal_ms``: panel title -> a latency drawn as a dashed line (``goal_label`` names it in the panel title).
    ``max_drop``: rows whose drop exceeds it are drawn grey ("over --max-drop").
    The file is written to a temporary name and renamed (atomic). matplotlib (Agg) does the drawing.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    path = Path(path)
    panels = [(name, sorted(rows, key=lambda r: r["p50_ms"])) for name, rows in panels]
    heights = [max(2, len(rows)) for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.28 * sum(heights) + 1.2 * len(panels) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], panels):
        for y, r in enumerate(rows):
            drop = r.get("drop_points")
            over = max_drop is not None and drop is not None and drop > max_drop
            colour = "lightgrey" if over else PRECISION_COLOURS.get(r["precision"], "grey")
            ax.barh(y, r["p50_ms"], color="white" if r.get("hatched") else colour, edgecolor=
                    "black" if r.get("picked") else colour, hatch="///" if r.get("hatched") else None,
                    linewidth=2.0 if r.get("picked") else 1.2)
            note = f"{r['p50_ms']:.2f} ms" + ("" if drop is None else f"   drop {drop:+.2f} pts")
            note += "   over --max-drop" if over else ""
            note += "   << picked" if r.get("picked") else ""
            ax.text(r["p50_ms"], y, "  " + note, va="center", fontsize=7,
                    fontweight="bold" if r.get("picked") else "normal")
        ax.set_yticks(list(range(len(rows))), [r["label"] for r in rows], fontsize=7.5)
        ax.invert_yaxis()
        heading = name
        goal = (goal_ms or {}).get(name)
        if goal is not None:
            ax.axvline(goal, color="k", linestyle="--", linewidth=0.8)
            heading += f": {goal_label} {goal:.2f} ms (dashed)"
        ax.set_xlim(0, max((r["p50_ms"] for r in rows), default=1.0) * 1.5)  # room for the labels
        ax.set_title(heading, fontsize=9, loc="left")
        ax.grid(axis="x", linewidth=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    used = {r["precision"] for _, rows in panels for r in rows}
    handles = [Patch(facecolor=c, edgecolor=c, label=p) for p, c in PRECISION_COLOURS.items() if p in used]
    if any(r.get("hatched") for _, rows in panels for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch="///", label="by hand (peer)"))
    if any(r.get("picked") for _, rows in panels for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.0, label="picked"))
    fig.suptitle(title, fontsize=10, y=0.998)
    fig.legend(handles=handles, loc="upper center", ncol=max(1, len(handles)), fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.982))
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
