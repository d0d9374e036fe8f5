"""Figures of the evaluate stage: accuracy against time with its Pareto front, and latent
similarity over the trajectory."""

from __future__ import annotations

import numpy as np
import pandas as pd

FAMILY_STYLE = {  # marker, colour
    "full": ("s", "black"), "ddim": ("o", "tab:blue"), "flux": ("^", "tab:orange"),
    "flux_tuned": ("v", "tab:red"), "flux_nearest": ("P", "tab:purple"), "control": ("x", "tab:gray"),
    "baseline": ("D", "tab:green"), "decoupled": ("h", "tab:cyan"), "flux_kc": ("<", "tab:olive"),
    "flux_tuned_kc": (">", "tab:pink"), "control_kc": ("+", "tab:gray"),
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
