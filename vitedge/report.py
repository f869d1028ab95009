"""Readable reports from validate/bench JSON: a console table (rich) and a markdown table (tabulate)."""
from __future__ import annotations

from tabulate import tabulate

__all__ = ["MAIN_COLUMNS", "main_rows", "markdown_table", "print_table"]

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
