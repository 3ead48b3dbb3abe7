"""Heat-maps of what each student layer learns: rows are student layers, columns teacher layers.

Written at every checkpoint of LAD (from the gate values) and ALP-KD (from the attention weights) as
``layer-map-{step}.png`` plus ``layer-map-{step}.json`` (the numbers) in the experiment folder, and as a
TensorBoard image.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .io_utils import atomic_write, atomic_write_json


def render_layer_map(matrix: np.ndarray, title: str, caption: str, row_labels: list[str]) -> tuple[bytes, np.ndarray]:
    """PNG bytes and the RGB image [H, W, 3] of the heat-map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ls, lt = matrix.shape
    fig = Figure(figsize=(max(4.0, 0.5 * lt + 2.5), max(2.5, 0.45 * ls + 2.0)), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(np.max(matrix))), aspect="auto")
    ax.set_xticks(range(lt), [str(i) for i in range(1, lt + 1)])
    ax.set_yticks(range(ls), row_labels)
    ax.set_xlabel("teacher layer")
    ax.set_ylabel("student layer (target)")
    ax.set_title(title, fontsize=10)
    if ls * lt <= 400:
        for j in range(ls):
            for i in range(lt):
                if matrix[j, i] >= 0.005:
                    ax.text(
                        i,
                        j,
                        f"{matrix[j, i]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if matrix[j, i] > 0.6 * np.max(matrix) else "white",
                    )
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.text(0.01, 0.01, caption, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return buf.getvalue(), rgb


def write_layer_map(
    folder: Path,
    step: int,
    matrix: np.ndarray,
    title: str,
    caption: str,
    row_labels: list[str],
    reporter=None,
    tag: str | None = None,
) -> Path:
    """The heat-map as ``layer-map-{step}.png`` and ``.json`` in ``folder``, and with a ``reporter``
    (engine/reporting.py) as the image ``tag`` (TensorBoard's; trackers without images skip it)."""
    png, rgb = render_layer_map(matrix, title, caption, row_labels)
    path = Path(folder) / f"layer-map-{step}.png"
    with atomic_write(path) as f:
        f.write(png)
    atomic_write_json(
        Path(folder) / f"layer-map-{step}.json",
        {"step": step, "rows": row_labels, "matrix": matrix.round(6).tolist(), "caption": caption},
    )
    if reporter is not None and tag:
        reporter.log_image(tag, rgb, step)
    return path
