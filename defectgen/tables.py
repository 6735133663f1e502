"""Tables and figures of the evaluation: CSV, Markdown and PNG, written one way.

ablate, the steps curve, compare, the quality report and ``report.html`` all turn results into a
CSV file, a Markdown table and a few matplotlib figures; the cells are formatted here, so a number
reads the same in every report (``12.3 ± 0.4`` per cent, ``–`` where it is undefined).

    csv_text([{"model": "unet-small", "miou": 0.41}])          # "model,miou\\nunet-small,0.41\\n"
    markdown_table(["model", "mIoU"], [["unet-small", pct(0.41, 0.02)]])
    plt = pyplot(); fig, ax = plt.subplots(); ...; png = png_bytes(fig)
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Sequence

MISSING = "–"  # an undefined number in a table


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as CSV with a header line; columns default to the first row's keys ("" for no rows)."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns or rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def markdown_row(cells: Iterable[Any]) -> str:
    """One Markdown table line: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the head, the rule line and one line per row, each ending in a newline."""
    lines = [markdown_row(head), "|" + "---|" * len(head), *(markdown_row(r) for r in rows)]
    return "\n".join(lines) + "\n"


def _defined(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def fmt(v: Any, digits: int = 4) -> str:
    """A value for a table: floats with ``digits`` significant digits, ``–`` when undefined."""
    if not _defined(v):
        return MISSING
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def pct(mean: float | None, std: float | None = None, missing: str = MISSING) -> str:
    """A fraction as per cent with one decimal, ``± std`` when given: ``41.2 ± 1.3``."""
    if not _defined(mean):
        return missing
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def pct_stat(stat: dict[str, Any], missing: str = MISSING) -> str:
    """A ``mean_std`` dict (``defectgen.seg.stats``) as :func:`pct` writes it."""
    return pct(stat.get("mean"), stat.get("std"), missing)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 120) -> bytes:
    """The figure as PNG bytes; the figure is closed (its memory freed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
