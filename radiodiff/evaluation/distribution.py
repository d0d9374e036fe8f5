"""How per-map NMSE spreads, not only its mean: median, pooled, p90 and the dark maps.

The mean NMSE of a map set is dominated by a few maps: NMSE divides each map's squared error by
its own energy (sum gt^2), so a dark map (a Tx boxed in by buildings, little received power)
turns a small absolute error into a large NMSE. The pooled NMSE (sum of all squared errors over
the sum of all energies) weighs each map by its energy instead, and the dark-map mean isolates
the maps the mean is most sensitive to.
"""

from __future__ import annotations

import numpy as np
import torch

DARK_SHARE = 0.1  # the darkest tenth of the maps, by energy
HISTOGRAM_BINS = 24


def map_energy(gain: torch.Tensor) -> np.ndarray:
    """sum gt^2 per map `[N]` float64 of gains `[N, 1, H, W]` (the NMSE denominator)."""
    return gain.double().flatten(1).pow(2).sum(dim=1).numpy()


def dark_maps(energy: np.ndarray, share: float = DARK_SHARE) -> np.ndarray:
    """Boolean mask `[N]` of the `share` of maps with the least energy (at least one map)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    count = max(1, int(round(share * len(energy))))
    mask = np.zeros(len(energy), dtype=bool)
    mask[np.argsort(energy, kind="stable")[:count]] = True
    return mask


def nmse_distribution(per_map: np.ndarray, energy: np.ndarray, share: float = DARK_SHARE) -> dict[str, float]:
    """Per-map NMSE `[seeds, N]` -> the median, pooled, p90 and dark-map NMSE, each computed per
    seed and then averaged over seeds. Pooled is sum(NMSE_i E_i) / sum(E_i), the NMSE of all
    maps as one: equal to every map's NMSE when they agree."""
    per_map = np.atleast_2d(np.asarray(per_map, dtype=np.float64))
    if per_map.shape[1] != len(energy):
        raise ValueError(f"{per_map.shape[1]} maps of NMSE but {len(energy)} energies")
    dark = dark_maps(energy, share)
    weights = energy / energy.sum()
    return {"nmse_median": float(np.median(per_map, axis=1).mean()),
            "nmse_pooled": float((per_map @ weights).mean()),
            "nmse_p90": float(np.percentile(per_map, 90, axis=1).mean()),
            "nmse_dark": float(per_map[:, dark].mean())}


def histogram_rows(per_map: dict[str, np.ndarray], methods: list[str], bins: int = HISTOGRAM_BINS) -> list[dict]:
    """A shared log-spaced NMSE histogram of the seed-mean per-map NMSE of each of `methods`:
    rows (method, nmse_bin_low, nmse_bin_high, nmse_bin, maps), `nmse_bin` the bin's geometric
    centre. Plot data for DVC (one line per method)."""
    means = {name: np.asarray(per_map[name], dtype=np.float64).mean(axis=0) for name in methods}
    values = np.concatenate(list(means.values()))
    positive = values[values > 0]
    low, high = (positive.min(), positive.max()) if len(positive) else (1e-6, 1.0)
    edges = np.geomspace(low, high * (1 + 1e-9), bins + 1) if high > low else np.array([low * 0.5, low * 2.0])
    rows = []
    for name, value in means.items():
        counts, _ = np.histogram(np.clip(value, edges[0], edges[-1]), bins=edges)
        rows += [{"method": name, "nmse_bin_low": float(a), "nmse_bin_high": float(b),
                  "nmse_bin": float(np.sqrt(a * b)), "maps": int(c)} for a, b, c in zip(edges, edges[1:], counts)]
    return rows
