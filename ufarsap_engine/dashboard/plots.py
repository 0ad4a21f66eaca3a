"""Line plots as inline SVG (matplotlib), so pages need no JavaScript or image files."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402


def line_svg(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str = "step",
             max_lines: int = 12, max_points: int = 400) -> str:
    """An ``<svg>`` with one line per series (non-finite points left out, long series thinned to
    about ``max_points``, keeping the last); "" without data."""
    series = {k: [(x, y) for x, y in v if math.isfinite(y)] for k, v in list(series.items())[:max_lines]}
    series = {k: v[::max(1, len(v) // max_points)] + ([v[-1]] if len(v) > max_points else []) for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=96)
    try:
        for name, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name, marker="o" if len(points) < 3 else None, linewidth=1.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    finally:
        plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog: it is inlined into HTML
