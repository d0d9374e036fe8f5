"""Figures of the prepared dataset, for people to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiodiff.data.assemble import read_index


def sample_figure(dataset_dir: Path, *, split: str = "train", count: int = 4, seed: int = 0):
    """A grid of `count` samples: buildings with the Tx marked, and the gain map (gray/255).

    Returns a matplotlib Figure (Agg backend, no display needed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = read_index(dataset_dir)
    rows = index[index["split"] == split]
    picks = rows.sample(n=min(count, len(rows)), random_state=seed).sort_values("sample")
    gains = np.load(Path(dataset_dir) / f"{split}_gain.npy", mmap_mode="r")
    scenes = np.load(Path(dataset_dir) / f"{split}_scenes.npy", mmap_mode="r")
    figure, axes = plt.subplots(2, len(picks), figsize=(2.6 * len(picks), 5.4), squeeze=False)
    for column, row in enumerate(picks.itertuples()):
        scene = scenes[row.scene_offset]
        layout = np.where(scene[0] > 0, 0.35, 1.0) - 0.25 * (scene[1] > 0) * bool(row.cars)
        axes[0, column].imshow(layout, cmap="gray", vmin=0, vmax=1)
        axes[0, column].plot(row.tx_col, row.tx_row, marker="*", color="red", markersize=10)
        axes[0, column].set_title(f"map {row.map_id}, Tx {row.tx_id}", fontsize=9)
        shown = axes[1, column].imshow(gains[row.offset], cmap="viridis", vmin=0, vmax=1)
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    axes[0, 0].set_ylabel("buildings, Tx")
    axes[1, 0].set_ylabel("gain (gray/255)")
    figure.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.8)
    return figure
