"""Side-by-side figures of predicted and true radio maps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def spread_indices(total: int, count: int = 6) -> list[int]:
    """Up to `count` sample indices spread evenly over `total` (over maps and Tx alike)."""
    return list(range(0, total, max(1, total // count)))[:count]


def comparison_figure(target: torch.Tensor, predictions: Mapping[str, torch.Tensor], *,
                      cond: torch.Tensor | None = None, title: str = ""):
    """Rows: samples. Columns: layout + Tx (if `cond` `[B, C, H, W]` is given), truth, then each
    prediction with its absolute-error map. Maps `[B, 1, H, W]` in [0, 1]. Returns a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = target.shape[0]
    columns = (cond is not None) + 1 + 2 * len(predictions)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.4), squeeze=False)
    for row in range(rows):
        panels = []
        if cond is not None:
            panels.append(("layout + Tx", _layout(cond[row]), "gray"))
        panels.append(("truth", target[row, 0].numpy(), "viridis"))
        for name, pred in predictions.items():
            panels.append((name, pred[row, 0].numpy(), "viridis"))
            panels.append((f"|error| {name}", np.abs(pred[row, 0].numpy() - target[row, 0].numpy()), "magma"))
        for column, (name, image, cmap) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, cmap=cmap, vmin=0, vmax=1 if "error" not in name else 0.3)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _layout(cond: torch.Tensor) -> np.ndarray:
    """Buildings dark, free space light, the Tx pixel black on a white cross."""
    image = np.where(cond[0].numpy() > 0, 0.3, 0.9)
    row, col = np.unravel_index(int(cond[1].argmax()), cond[1].shape)
    image[max(row - 1, 0) : row + 2, col] = 0.0
    image[row, max(col - 1, 0) : col + 2] = 0.0
    return image
