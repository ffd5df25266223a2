"""The card's chart: file size against mean KL divergence, one point per GGUF type and MLX folder.

It is how community GGUF repos show what each quantization costs: down and to the left is better.
matplotlib is an optional extra (`pip install "mythos-convert[plot]"`); without it the card shows
the table alone and says how to get the chart.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from mythos_convert.support.atomic import atomic_file

CHART_FILE = "gguf-quality.png"
INSTALL_HINT = 'pip install "mythos-convert[plot]"'


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """PNG bytes of size (MiB, x) against mean KL divergence (y, log scale); rows: type, size, mean_kl,
    optionally format ("GGUF", the default, or "MLX") and `searched` for a GGUF whose types were chosen
    by measurement (labelled by its target): each kind its own colour and marker, with a legend when
    there are several.

    A KL of exactly 0 (an F32 file) cannot sit on a log axis: it is drawn on the axis floor and
    labelled "0".
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    from matplotlib import pyplot as plt

    points = [r for r in rows if isinstance(r.get("mean_kl"), (int, float)) and math.isfinite(r["mean_kl"])]
    positive = [r["mean_kl"] for r in points if r["mean_kl"] > 0]
    floor = min(positive) / 10 if positive else 1e-8
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for r in points:
            y = r["mean_kl"] if r["mean_kl"] > 0 else floor
            x = r["size"] / 2**20
            ax.scatter([x], [y], zorder=3, **point_style(r))
            label = r["type"] if r["mean_kl"] > 0 else f"{r['type']} (0)"
            # a searched file sits beside the mix of its size: its label goes below left, the mix's above right
            offset, align = ((-6, -12), "right") if r.get("searched") else ((5, 4), "left")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, ha=align, fontsize=9)
        ax.set_yscale("log")
        if any(r.get("searched") for r in points):
            ax.margins(x=0.15)  # room for a searched file's label, which goes to the left of its point
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel("mean KL divergence from float32 (nats)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        add_format_legend(ax, points)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same rows, same bytes
        return buffer.getvalue()
    finally:
        plt.close(fig)


FORMAT_STYLES = {
    "GGUF": {"color": "tab:blue", "marker": "o"},
    "GGUF, types searched": {"color": "tab:orange", "marker": "D"},
    "MLX": {"color": "tab:green", "marker": "s"},
}


def point_style(row: dict[str, Any]) -> dict[str, str]:
    """Colour and marker of a row's kind (a fixed GGUF mix's when nothing else is said)."""
    return FORMAT_STYLES.get(point_kind(row), FORMAT_STYLES["GGUF"])


def point_kind(row: dict[str, Any]) -> str:
    """The legend's name for a row: its format, and for a GGUF whether its types were searched."""
    kind = row.get("format") or "GGUF"
    return f"{kind}, types searched" if row.get("searched") and kind == "GGUF" else kind


def add_format_legend(ax: Any, points: list[dict[str, Any]]) -> None:
    """A legend naming each format's marker, drawn only when more than one format is plotted."""
    formats = sorted({point_kind(r) for r in points})
    if len(formats) < 2:
        return
    handles = [ax.scatter([], [], label=f, **FORMAT_STYLES.get(f, FORMAT_STYLES["GGUF"])) for f in formats]
    ax.legend(handles=handles, loc="upper right", fontsize=9)


def write_chart(folder: Path, rows: list[dict[str, Any]], title: str) -> Path | None:
    """Write the chart into `folder` (atomically) when matplotlib is there and some row has a KL;
    otherwise remove a chart left from an earlier run (it would show figures the card no longer backs)."""
    path = Path(folder) / CHART_FILE
    if not have_matplotlib() or not any(isinstance(r.get("mean_kl"), (int, float)) for r in rows):
        if path.is_file() and not path.is_symlink():
            path.unlink()
        return None
    data = render_png(rows, title)
    if path.is_file() and path.read_bytes() == data:
        return path
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path
