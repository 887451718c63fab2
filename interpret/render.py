"""Pictures of results (matplotlib, Agg backend): PIL images the app shows and the CLI saves as PNG."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from PIL import Image  # noqa: E402


def figure_to_image(figure) -> Image.Image:
    """Render a matplotlib figure to an RGB PIL image and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def diverging_norm(values: np.ndarray) -> TwoSlopeNorm:
    """A colour scale symmetric about zero, so that white always means 'no contribution'."""
    bound = float(np.abs(values).max()) or 1e-12
    return TwoSlopeNorm(vmin=-bound, vcenter=0.0, vmax=bound)


def head_grid(scores: np.ndarray, title: str = "", layers: list[int] | None = None,
              mlps: np.ndarray | None = None) -> Image.Image:
    """Layer x head heatmap of contributions `[L, H]` (rows: layers, first at the top), optionally with the
    MLPs as an extra column, on a diverging scale centred at zero."""
    scores = np.asarray(scores, dtype=np.float64)
    layers = list(range(scores.shape[0])) if layers is None else list(layers)
    table = scores if mlps is None else np.concatenate([scores, np.asarray(mlps, dtype=np.float64)[:, None]], 1)
    height = 1.2 + 0.32 * len(layers)
    width = 2.2 + 0.42 * table.shape[1]
    figure, axis = plt.subplots(figsize=(max(width, 4.0), max(height, 2.5)))
    picture = axis.imshow(table, cmap="RdBu_r", norm=diverging_norm(table), aspect="auto")
    columns = [str(h) for h in range(scores.shape[1])] + ([] if mlps is None else ["MLP"])
    axis.set_xticks(range(len(columns)), columns, fontsize=8)
    axis.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    if mlps is not None:
        axis.axvline(scores.shape[1] - 0.5, color="black", linewidth=1)
    axis.set_title(title, fontsize=9)
    figure.colorbar(picture, ax=axis, label="contribution to cosine score")
    return figure_to_image(figure)
