"""The three queries RadioDiff-Flux serves, as `evaluate` measures them on one set of layouts.

- `tx_moved`: a banked layout, a new Tx. The layout's cached static midpoint serves it.
- `traffic`: a banked layout, the same Tx, new vehicles. The static midpoint (cars are dynamic
  channels, zero in the static condition) serves it; each query is paired with its static twin
  (same map and Tx, no cars) so the car-response ratio can say whether the model sees the cars.
- `new_layout`: a layout the bank has never seen. The nearest banked layout's midpoint serves
  it when within `flux.nearest_max_distance`, else the layout computes its own (the cold path).

The reuse ratio R of the paper is the share of the sampler's steps served from the cached
midpoint. Its sampler runs one uniform grid of T = 100 steps, so there R = 1 - t_mid / T; ours
jumps from t_mid to the clean end in a few calls of a grid of its own, so the row gives both
`reuse_ratio` = 1 - t_mid / T (the paper's axis) and `reuse_calls` (the share of this plan's
network calls that the cache saves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from radiodiff.data.dataset import RadioMapDataset
from radiodiff.evaluation.methods import (
    MapSet, Method, Toolkit, control, flux_cold, flux_hit, flux_nearest, from_noise, supervised,
)
from radiodiff.generation import LatentDiffusion
from radiodiff.metrics import car_response_ratio, nmse, psnr, rmse, ssim, tx_response_ratio

SCENARIOS = ("tx_moved", "traffic", "new_layout")
EDITED_FAMILIES = ("flux_cold", "flux_nearest_any", "flux_nearest")  # own midpoint, nearest at any distance, served
MIN_CAR_RESPONSE = 0.5  # a Flux row counts only where the reference trajectory sees the cars this much


def chosen_layouts(index: pd.DataFrame, scenes: int) -> list[int]:
    """`scenes` layouts spread evenly over a split's index (ordered by map id; its first
    layouts need not be typical)."""
    layouts = index["map_id"].drop_duplicates()
    picks = np.unique(np.linspace(0, len(layouts) - 1, min(scenes, len(layouts))).round().astype(int))
    return [int(m) for m in layouts.iloc[picks]]


def static_rows(index: pd.DataFrame, layouts: Sequence[int], per_scene: int) -> list[int]:
    """Dataset rows of the first `per_scene` static (car-free) samples of each of `layouts`."""
    static = index[~index["cars"]]
    position = static.groupby("map_id", sort=False).cumcount()
    return static.index[(position < per_scene) & static["map_id"].isin(layouts)].tolist()


def traffic_rows(index: pd.DataFrame, layouts: Sequence[int], per_scene: int) -> tuple[list[int], list[int]]:
    """(static twins, traffic samples): dataset rows of up to `per_scene` traffic samples of
    each of `layouts` and, in the same order, the static sample of the same map and Tx."""
    static = index[~index["cars"]].set_index(["map_id", "tx_id"])["sample"]
    row_of_sample = pd.Series(index.index, index=index["sample"])
    cars = index[index["cars"] & index["map_id"].isin(layouts)]
    cars = cars[cars.groupby("map_id", sort=False).cumcount() < per_scene]
    twins, traffic = [], []
    for row, sample in zip(cars.index, cars.itertuples()):
        key = (sample.map_id, sample.tx_id)
        if key in static.index:  # always, for a dataset `prepare` made
            twins.append(int(row_of_sample[static[key]]))
            traffic.append(int(row))
    return twins, traffic


def load_rows(dataset: RadioMapDataset, rows: Sequence[int]) -> MapSet:
    """The samples at dataset `rows` as a `MapSet`."""
    items = [dataset[i] for i in rows]
    return MapSet(torch.stack([it["cond"] for it in items]), torch.stack([it["gain"] for it in items]),
                  tuple(it["map_id"] for it in items))


def select_traffic(dataset: RadioMapDataset, layouts: Sequence[int], per_scene: int) -> MapSet | None:
    """The traffic pairs of `layouts`: rows `[0, P)` the static twins, `[P, 2P)` the same Tx
    with the cars; None when the dataset has no traffic samples there (`prepare.dynamic` 0)."""
    twins, traffic = traffic_rows(dataset.index, layouts, per_scene)
    return load_rows(dataset, twins + traffic) if traffic else None


def traffic_scores(pred: torch.Tensor, maps: MapSet) -> dict[str, float]:
    """Scores of the traffic queries (rows `[P, 2P)` of `select_traffic`'s set): mean NMSE,
    RMSE, SSIM, PSNR, the Tx-response over them (NaN with fewer than two per layout) and the
    car-response ratio against their static twins."""
    pairs = len(maps.maps) // 2
    pred_cars, target = pred[pairs:], maps.gain[pairs:]
    try:
        tx_response = tx_response_ratio(pred_cars, target, maps.maps[pairs:])
    except ValueError:
        tx_response = math.nan
    return {"nmse": float(nmse(pred_cars, target).mean()), "rmse": float(rmse(pred_cars, target).mean()),
            "ssim": float(ssim(pred_cars, target).mean()), "psnr": float(psnr(pred_cars, target).mean()),
            "tx_response": tx_response,
            "car_response": car_response_ratio(pred_cars, pred[:pairs], target, maps.gain[:pairs])}


def autoencoder_car_response(model: LatentDiffusion, maps: MapSet) -> float:
    """The car-response of the autoencoder's own reconstruction of the truth, on a
    `select_traffic` set: the most that a method decoding a latent can reach, since its cars
    must pass the same encoder-decoder bottleneck."""
    with torch.no_grad():
        recon = model.decode(model.encode(maps.gain.to(model.device)), maps.cond[:, 0].to(model.device)).cpu()
    return traffic_scores(recon, maps)["car_response"]


def traffic_methods(kit: Toolkit, reference_steps: int, few_steps: Sequence[int], tail_steps: int, baseline,
                    *, full_reference: Method | None = None) -> list[Method]:
    """What the traffic scenario compares, on `kit` (whose maps are a `select_traffic` set):
    the T = `reference_steps` reference, the few-step samplers from noise under the full
    condition (cars included), Flux from the static midpoint at every t_mid (plain and tuned
    tail) with `tail_steps` calls, the full-condition control and the baseline."""
    model = kit.model
    methods = [full_reference] if full_reference is not None else []
    methods.append(from_noise(kit, model, reference_steps, family="reference"))
    methods += [from_noise(kit, model, n, family=model.process.name) for n in few_steps]
    for t_mid in kit.flux.t_mids:
        if tail_steps > t_mid + 1:
            continue
        methods.append(flux_hit(kit, t_mid, tail_steps, tuned=False))
        if kit.tail is not None:
            methods.append(flux_hit(kit, t_mid, tail_steps, tuned=True))
    methods.append(control(kit, kit.flux.t_mid, tail_steps))
    methods.append(supervised("baseline", baseline, kit))
    return methods


def reuse_columns(method: Method, num_train_steps: int, prefix_calls: int) -> dict[str, float]:
    """The reuse ratio of a Flux row (NaN for the others): `reuse_ratio` = 1 - t_mid / T, the
    paper's R, and `reuse_calls` = prefix calls / (prefix + tail calls) of this plan."""
    if method.t_mid is None or not method.family.startswith(("flux", "control")):
        return {"reuse_ratio": math.nan, "reuse_calls": math.nan}
    reused = 0 if method.family.startswith("control") else prefix_calls
    return {"reuse_ratio": 1.0 - method.t_mid / num_train_steps,
            "reuse_calls": reused / (prefix_calls + method.tail_steps)}


def nearest_distances(kit: Toolkit, t_mid: int, seed: int) -> np.ndarray:
    """`[N]`: per evaluated map, the layout-embedding distance to the nearest banked layout
    other than the evaluated ones (`kit.exclude`); inf when the bank holds none."""
    from radiodiff.bank import layout_embedding

    bank = kit.bank(t_mid)
    by_scene: dict[int, float] = {}
    for row, scene in enumerate(kit.maps.maps):
        if scene not in by_scene:
            found = bank.nearest(layout_embedding(kit.maps.buildings([row])[0]), math.inf, seed=seed,
                                 exclude=kit.exclude)
            by_scene[scene] = math.inf if found is None else found[1]
    return np.array([by_scene[scene] for scene in kit.maps.maps])


def edited_methods(kit: Toolkit) -> list[Method]:
    """What `new_layout` runs on layouts the bank does not hold (`kit.maps` of
    `edited_layouts.edited_maps`), at the served t_mid and tail: the layout's own midpoint computed
    now, the nearest banked layout's at any distance, and the served policy (the nearest within
    `flux.nearest_max_distance`, else the cold path), in the order of `EDITED_FAMILIES`."""
    flux = kit.flux
    tuned = kit.tail is not None and flux.use_tuned_tail
    return [flux_cold(kit, flux.t_mid, flux.tail_steps, tuned=tuned),
            flux_nearest(kit, flux.t_mid, flux.tail_steps, tuned=tuned, any_distance=True),
            flux_nearest(kit, flux.t_mid, flux.tail_steps, tuned=tuned)]


def nmse_score(pred: torch.Tensor, maps: MapSet) -> dict[str, float]:
    """Mean NMSE of `pred` against `maps`: the one score of maps that are each their layout's only one."""
    return {"nmse": float(nmse(pred, maps.gain).mean())}


def new_layout_summary(distances: np.ndarray, own_nmse: np.ndarray, nearest_nmse: np.ndarray,
                       served_nmse: np.ndarray, bound: float, edited: np.ndarray | None = None
                       ) -> tuple[dict[str, float], pd.DataFrame]:
    """Where nearest-layout reuse holds and where it breaks, from per-map NMSE (mean over seeds)
    of the layout's own midpoint, the nearest layout's at any distance, and the served policy
    (nearest within `bound`, else the cold path). Returns headline figures and one row per
    distance band (within half the bound, within the bound, within twice, beyond), with how many
    of its maps are `edited` ones (bool per map: banked layouts with buildings removed)."""
    edited = np.zeros(len(distances), bool) if edited is None else np.asarray(edited, bool)
    within = distances <= bound
    summary = {"new_layout_bound": bound, "new_layout_maps": float(len(distances)),
               "new_layout_maps_within_bound": float(within.sum()),
               "new_layout_maps_beyond_bound": float((~within).sum())}
    if within.any():
        own, near = float(own_nmse[within].mean()), float(nearest_nmse[within].mean())
        summary |= {"new_layout_own_nmse_within": own, "new_layout_nearest_nmse_within": near,
                    "new_layout_nearest_vs_own_within": near / own - 1.0}
    if (~within).any():
        summary |= {"new_layout_nearest_nmse_beyond": float(nearest_nmse[~within].mean()),
                    "new_layout_own_nmse_beyond": float(own_nmse[~within].mean()),
                    # the cold path computes the layout's own midpoint: its maps equal the own row's
                    "new_layout_served_vs_own_beyond": float(served_nmse[~within].mean() / own_nmse[~within].mean()
                                                             - 1.0)}
    edges = [0.0, bound / 2, bound, 2 * bound, math.inf]
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        band = (distances > low if low else distances >= 0) & (distances <= high)
        if not band.any():
            continue
        rows.append({"distance_from": low, "distance_to": high, "maps": int(band.sum()),
                     "edited_maps": int((band & edited).sum()),
                     "own_nmse": float(own_nmse[band].mean()), "nearest_nmse": float(nearest_nmse[band].mean()),
                     "served_nmse": float(served_nmse[band].mean()),
                     "nearest_vs_own": float(nearest_nmse[band].mean() / own_nmse[band].mean() - 1.0)})
    return summary, pd.DataFrame(rows)
