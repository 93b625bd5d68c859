"""PNG plots for asset metadata and reports (matplotlib, no display)."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def line_plot_png(series: dict[str, tuple], *, title: str, xlabel: str, ylabel: str, logy: bool = False) -> bytes:
    """One line per entry of ``series`` (label -> (x, y))."""
    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
    for label, (x, y) in series.items():
        axes.plot(x, y, label=label)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return figure_png(figure)


def bar_plot_png(labels, values, *, title: str, ylabel: str) -> bytes:
    figure, axes = plt.subplots(figsize=(max(6, 0.18 * len(labels)), 3.6), dpi=100)
    axes.bar(range(len(values)), values)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axes.set(title=title, ylabel=ylabel)
    figure.tight_layout()
    return figure_png(figure)


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
