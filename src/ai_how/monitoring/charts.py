"""Charts of a run report as ``data:image/png;base64`` URIs, drawn with matplotlib (Agg, no display).

matplotlib comes with the ``serve`` extra (``ai-how bench serve`` draws its plot the same way);
without it these raise ``ModuleNotFoundError`` and the page says so in place of the chart.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ai_how.monitoring.report import Curve, LatencyPoint

MISSING = "charts need matplotlib: pip install 'ai-how[serve]'"


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def curve_png(curve: Curve) -> str:
    """One metric against its step."""
    figure, axes = _figure(5.2, 3.0)
    axes.plot(curve.steps, curve.values, "o-" if len(curve.values) <= 50 else "-", markersize=3)
    axes.set_xlabel("step")
    axes.set_title(curve.metric)
    axes.grid(True, alpha=0.3)
    return _png(figure)


def histogram_png(samples_ms: Sequence[float]) -> str:
    """How many requests took how long."""
    figure, axes = _figure(6.4, 3.2)
    axes.hist(samples_ms, bins=min(30, max(5, len(samples_ms) // 2)), color="#4c72b0", edgecolor="white")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.grid(True, axis="y", alpha=0.3)
    return _png(figure)


def percentiles_png(points: Sequence[LatencyPoint]) -> str:
    """P50, P95 and P99 of each load point, side by side."""
    figure, axes = _figure(max(6.4, 0.9 * len(points) + 2), 3.4)
    labels = [
        p.point if len({q.endpoint for q in points}) == 1 else f"{p.endpoint}\n{p.point}" for p in points
    ]
    width = 0.27
    for offset, (name, values) in enumerate(
        (
            ("P50", [p.p50 for p in points]),
            ("P95", [p.p95 for p in points]),
            ("P99", [p.p99 for p in points]),
        )
    ):
        axes.bar([i + (offset - 1) * width for i in range(len(points))], values, width, label=name)
    axes.set_xticks(range(len(points)), labels, fontsize=8)
    axes.set_xlabel("load point")
    axes.set_ylabel("end-to-end latency (ms)")
    axes.set_ylim(0, 1.25 * max((p.p99 for p in points), default=1.0))
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(ncols=3, loc="upper left")
    return _png(figure)
