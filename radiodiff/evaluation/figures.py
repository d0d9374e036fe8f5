"""Figures of the evaluate stage: accuracy against time with its Pareto front, and latent
similarity over the trajectory."""

from __future__ import annotations

import numpy as np
import pandas as pd

FAMILY_STYLE = {  # marker, colour
    "full": ("s", "black"), "ddim": ("o", "tab:blue"), "flux": ("^", "tab:orange"),
    "flux_tuned": ("v", "tab:red"), "flux_nearest": ("P", "tab:purple"), "control": ("x", "tab:gray"),
    "baseline": ("D", "tab:green"), "decoupled": ("h", "tab:cyan"), "flux_kc": ("<", "tab:olive"),
    "flux_tuned_kc": (">", "tab:pink"), "control_kc": ("+", "tab:gray"), "reference": ("*", "tab:brown"),
    "flux_nearest_any": ("X", "plum"), "flux_cell": ("d", "gold"), "flux_cell_tuned": ("d", "darkgoldenrod"),
    "flow": ("p", "tab:olive"), "flux_flow": ("8", "teal"),
}


def pareto_front(time_ms: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both time and error, by increasing time."""
    order = np.lexsort((error, time_ms))
    front, best = [], np.inf
    for i in order:
        if error[i] < best:
            front.append(i)
            best = error[i]
    return np.asarray(front, dtype=np.int64)


def tradeoff_figure(table: pd.DataFrame):
    """NMSE (mean, 95% interval over seeds) against batch-1 ms per map (log), one marker per
    family, the Pareto front across all methods drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for family, group in table.groupby("family"):
        marker, colour = FAMILY_STYLE.get(family, ("o", "tab:brown"))
        axis.errorbar(group["ms_per_map_b1"], group["nmse"], yerr=group["nmse_ci95"], fmt=marker, color=colour,
                      label=family, capsize=2, markersize=5, linestyle="none")
    front = pareto_front(table["ms_per_map_b1"].to_numpy(), table["nmse"].to_numpy())
    axis.plot(table["ms_per_map_b1"].to_numpy()[front], table["nmse"].to_numpy()[front], "k--", lw=0.8,
              label="Pareto front")
    for i in front:
        axis.annotate(table["method"].iloc[i], (table["ms_per_map_b1"].iloc[i], table["nmse"].iloc[i]), fontsize=6,
                      xytext=(3, 3), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("ms per map at batch 1 (median of interleaved rounds)")
    axis.set_ylabel("test NMSE (mean over seeds, 95% CI)")
    axis.set_title("Accuracy vs time, every method on the same maps")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def consistency_figure(rows: pd.DataFrame, time_range: tuple[float, float]):
    """Cosine similarity of latents, same scene vs other scenes, against the time landed on;
    `time_range` (pure noise, clean) of the sampler's own time sets the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.plot(rows["t"], rows["same_scene"], "o-", label="same scene, other Tx")
    axis.plot(rows["t"], rows["other_scene"], "s-", label="other scenes")
    axis.set_xlim(*time_range)
    axis.set_xlabel("diffusion time t (noise -> clean)")
    axis.set_ylabel("mean cosine similarity of latents")
    axis.set_title("Trajectories from one shared noise latent")
    axis.legend()
    figure.tight_layout()
    return figure


def new_layout_figure(distances: np.ndarray, own_nmse: np.ndarray, nearest_nmse: np.ndarray, bound: float,
                      edited: np.ndarray | None = None):
    """Per evaluated map: NMSE change of serving the nearest banked layout's midpoint instead of
    the layout's own, against the layout-embedding distance to that neighbour; the serving
    bound (`flux.nearest_max_distance`) as a vertical line, beyond which the cold path is taken.
    `edited` (bool per map) marks the banked layouts with buildings removed apart from the test
    layouts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    change = 100.0 * (nearest_nmse / np.maximum(own_nmse, 1e-12) - 1.0)
    edited = np.zeros(len(distances), bool) if edited is None else np.asarray(edited, bool)
    axis.scatter(distances[~edited], change[~edited], s=14, color="tab:purple", alpha=0.7, label="test layouts")
    if edited.any():
        axis.scatter(distances[edited], change[edited], s=18, marker="^", color="tab:orange", alpha=0.8,
                     label="banked layouts, buildings removed")
    axis.axvline(bound, color="black", linestyle="--", linewidth=1, label=f"bound {bound:g}: cold path beyond")
    axis.axhline(0.0, color="gray", linewidth=0.8)
    axis.set_xlabel("distance to the nearest banked layout (layout embedding, RMS)")
    axis.set_ylabel("NMSE change vs own midpoint (%)")
    axis.set_title("new_layout: where nearest-layout reuse holds")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def nmse_histogram_figure(rows: list[dict]):
    """Per-map NMSE histograms (log-spaced bins of `distribution.histogram_rows`), one step line
    per method: where the mean hides a tail of bad maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    table = pd.DataFrame(rows)
    for method, group in table.groupby("method", sort=False):
        edges = np.append(group["nmse_bin_low"].to_numpy(), group["nmse_bin_high"].to_numpy()[-1])
        axis.stairs(group["maps"].to_numpy(), edges, label=method, linewidth=1.4)
    axis.set_xscale("log")
    axis.set_xlabel("per-map NMSE (mean over seeds)")
    axis.set_ylabel("maps")
    axis.set_title("evaluate: per-map NMSE distribution")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def traffic_figure(static_truth: np.ndarray, cars_truth: np.ndarray, cars: np.ndarray,
                   static_pred: dict[str, np.ndarray], cars_pred: dict[str, np.ndarray]):
    """What the vehicles change, in truth and per method. Arrays `[B, H, W]` (gain in [0, 1];
    `cars` bool): per row the cars, the truth with them, the truth's change (cars minus the
    static twin), then per method its map with cars and its change. A model that ignores the
    cars shows a blank change panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(cars_truth)
    columns = 3 + 2 * len(cars_pred)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.5), squeeze=False)
    scale = max(float(np.abs(cars_truth - static_truth).max()), 1e-3)
    for row in range(rows):
        panels = [("cars", cars[row].astype(float), "gray_r", 0, 1), ("truth, cars", cars_truth[row], "viridis", 0, 1),
                  ("truth change", cars_truth[row] - static_truth[row], "coolwarm", -scale, scale)]
        for name in cars_pred:
            panels.append((name, cars_pred[name][row], "viridis", 0, 1))
            panels.append((f"{name} change", cars_pred[name][row] - static_pred[name][row], "coolwarm", -scale, scale))
        for column, (name, image, cmap, low, high) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, cmap=cmap, vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=7)
    figure.suptitle("traffic: cars added to a banked layout, same Tx (change = with cars - static twin)", fontsize=9)
    figure.tight_layout()
    return figure


def no_data_figure(title: str, reason: str):
    """A figure that states why a plot has no data (a DVC output must still exist)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 2))
    axis.axis("off")
    axis.set_title(title)
    axis.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
    return figure
