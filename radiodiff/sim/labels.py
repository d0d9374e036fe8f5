"""Per Tx: the few paths to every corner that can still matter ("labels").

A label holds what a path ending at a corner carries forward: unfolded length (m), total
turning (deg), turn loss G and car loss C (gray), and its arrival direction. The Tx seeds
a label at every corner it sees; labels spread along corner edges in Bellman-Ford rounds,
vectorised over the labels that changed in the previous round.

Why several labels per corner: what a path is worth after a corner depends on the
direction it arrived in (passing a corner almost straight costs almost no turn loss) and
on its length (the log law is not additive: a longer path with less turning wins far
away), so the single best path to a corner is not always the best start for what
follows. Label A *dominates* B when no continuation can make B better:

    min(0, H(l_A) - H(l_B)) + (G_B + C_B) - (G_A + C_A) >= M(d_B - d_A),

H the NLOS law without turn loss, M(delta) the most a direction change of delta can save
on the next turn. Both bounds are exact: the length term only shrinks as both paths grow
by the same legs. (A path still in the soft zone, turning < transition, is only dominated
by one arriving the same way that is no worse in any part.) Per corner we keep, in order
of value, up to `LABELS_PER_CORNER` labels that no kept label dominates.

That is what keeps the maps reciprocal: the exhaustive optimum is the same from either
end. With one label per corner about 10% of the searches on shadowed Tx/Rx pairs of
RadioMapSeer map 1 ended more than 1 gray below an exhaustive best-first search (up to
6 gray); with 6 labels, 0.4% (map 1) and 0.7% (map 50) of 1656 random pairs differ by
more than 1 gray between the two directions, by 3 gray at most (4 labels: 1.2% on map 1;
8 labels: 0.36% for 15% more time).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from radiodiff.sim.graph import CornerGraph
from radiodiff.sim.model import SimParams, los_and_gap, turn_tables
from radiodiff.sim.rays import DIRECTION_BINS

LABELS_PER_CORNER = 6
FLOOR_GRAY = -30.0  # paths below this are dropped: all they lead to is below the truncation (gray 0)
SHORTLIST = 2 * LABELS_PER_CORNER  # per corner and round, only the best this many labels compete for the K slots
MAX_ROUNDS = 256  # a safety bound; the search settles in about ten rounds
VALUE, LENGTH, TURNING, TURN_LOSS, CAR_LOSS, REACH = range(6)  # columns of `Labels.numbers`


@dataclass
class Labels:
    """Up to K paths per corner: `numbers [C, K, 6]` float32 and `direction [C, K]` int32.

    Columns: value (gray, -inf marks an empty slot), length (m), turning (deg), turn loss G
    and car loss C (gray), reach H(length) (gray: the value without turn and car loss).
    Flat candidate lists use the same layout with `[n, 6]` and `[n]`.
    """

    numbers: np.ndarray
    direction: np.ndarray

    @classmethod
    def empty(cls, count: int) -> Labels:
        numbers = np.zeros((count, LABELS_PER_CORNER, 6), np.float32)
        numbers[..., VALUE] = -np.inf
        return cls(numbers, np.zeros((count, LABELS_PER_CORNER), np.int32))

    def column(self, index: int) -> np.ndarray:
        return self.numbers[..., index]


@dataclass(frozen=True)
class _Context:
    graph: CornerGraph
    params: SimParams
    near_m: float
    turn_deg: np.ndarray
    turn_gray: np.ndarray
    turn_gain: np.ndarray  # M(delta) per direction difference (gray)


def corner_labels(graph: CornerGraph, tx_flat: int, params: SimParams, near_m: float) -> Labels:
    """`[C, K]` labels of the paths from the Tx at flat pixel `tx_flat` that can matter."""
    context = _Context(graph, params, near_m, *_turn_arrays(params))
    labels = Labels.empty(len(graph.corners))
    seen = graph.pairs_of(tx_flat)
    corners = graph.pair_corner[seen]
    car = graph.pair_car[seen] if graph.pair_car is not None else np.float32(0)
    zeros = np.zeros(len(seen), np.float32)
    labels.numbers[corners, 0] = _numbers(context, graph.pair_length[seen], zeros, zeros, car)
    labels.direction[corners, 0] = (graph.pair_direction[seen].astype(np.int32) + DIRECTION_BINS // 2) % DIRECTION_BINS
    changed = np.zeros(labels.direction.shape, bool)
    changed[corners, 0] = labels.numbers[corners, 0, VALUE] > FLOOR_GRAY
    for _ in range(MAX_ROUNDS):
        if not changed.any():
            break
        changed = _merge(context, labels, *_extend(context, labels, changed))
    return labels


@functools.lru_cache(maxsize=8)
def _turn_arrays(params: SimParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per direction difference: turn angle (deg), g (gray) and M (gray)."""
    turn_deg, turn_gray = turn_tables(DIRECTION_BINS, params)
    bins = np.arange(DIRECTION_BINS)
    # M(delta) = max over outgoing directions of g(turn from d) - g(turn from d + delta)
    shifted = turn_gray[(bins[None, :] - bins[:, None]) % DIRECTION_BINS]
    return turn_deg, turn_gray, (turn_gray[None, :] - shifted).max(axis=1).astype(np.float32)


def _numbers(context: _Context, length, turning, turn_loss, car) -> np.ndarray:
    """`[n, 6]` label numbers from their parts (`model.path_gray`, sharing one log)."""
    numbers = np.empty((len(length), 6), np.float32)
    numbers[:, LENGTH], numbers[:, TURNING] = length, turning
    numbers[:, TURN_LOSS], numbers[:, CAR_LOSS] = turn_loss, car
    los, gap = los_and_gap(numbers[:, LENGTH], context.params, context.near_m)
    shadow = np.minimum(numbers[:, TURNING] * np.float32(1.0 / context.params.transition_deg), np.float32(1))
    numbers[:, VALUE] = los - shadow * (gap + numbers[:, TURN_LOSS]) - numbers[:, CAR_LOSS]
    numbers[:, REACH] = los - gap
    return numbers


def _extend(context: _Context, labels: Labels, changed) -> tuple[Labels, np.ndarray]:
    """Every changed label carried along every edge of its corner: flat candidates and their corners."""
    graph = context.graph
    corner, slot = np.divmod(np.flatnonzero(changed), LABELS_PER_CORNER)
    counts = graph.edge_starts[corner + 1] - graph.edge_starts[corner]
    edge = np.arange(counts.sum()) + np.repeat(graph.edge_starts[corner] - (np.cumsum(counts) - counts), counts)
    source = (np.repeat(corner, counts), np.repeat(slot, counts))
    parts = labels.numbers[source]
    direction = graph.edge_direction[edge].astype(np.int32)
    step = (direction - labels.direction[source]) & (DIRECTION_BINS - 1)
    car = parts[:, CAR_LOSS] if graph.edge_car is None else parts[:, CAR_LOSS] + graph.edge_car[edge]
    numbers = _numbers(context, parts[:, LENGTH] + graph.edge_length[edge], parts[:, TURNING] + context.turn_deg[step],
                       parts[:, TURN_LOSS] + context.turn_gray[step], car)
    candidates, dst = Labels(numbers, direction), graph.edge_dst[edge]
    # a candidate that the corner's best label dominates can never be picked (dominance is transitive)
    best = Labels(labels.numbers[dst, 0], labels.direction[dst, 0])
    keep = (numbers[:, VALUE] > FLOOR_GRAY) & ~_dominates(context, best, candidates)
    return Labels(numbers[keep], direction[keep]), dst[keep]


def _dominates(context: _Context, a: Labels, b: Labels) -> np.ndarray:
    """Elementwise over flat labels: no continuation can make b better than a."""
    x, y = a.numbers, b.numbers
    gap = (b.direction - a.direction) & (DIRECTION_BINS - 1)
    margin = np.minimum(x[:, REACH] - y[:, REACH], 0)
    margin += (y[:, TURN_LOSS] + y[:, CAR_LOSS]) - (x[:, TURN_LOSS] + x[:, CAR_LOSS])
    hard = (margin >= context.turn_gain[gap]) & (y[:, TURNING] >= context.params.transition_deg)
    alike = (gap == 0) & np.all(x[:, LENGTH:REACH] <= y[:, LENGTH:REACH], axis=1)
    return np.isfinite(x[:, VALUE]) & (hard | alike)


def _merge(context: _Context, labels: Labels, candidates: Labels, dst: np.ndarray) -> np.ndarray:
    """Keep per corner the best undominated labels among old and new; return `[C, K]` new slots."""
    changed = np.zeros(labels.direction.shape, bool)
    if len(dst) == 0:
        return changed
    targets, candidate_row = np.unique(dst, return_inverse=True)
    old = Labels(labels.numbers[targets], labels.direction[targets])
    filled = np.isfinite(old.numbers[..., VALUE])
    row = np.concatenate([np.nonzero(filled)[0], candidate_row])
    numbers = np.concatenate([old.numbers[filled], candidates.numbers])
    order = np.lexsort((-numbers[:, VALUE], row))
    row = row[order]
    pool = Labels(numbers[order], np.concatenate([old.direction[filled], candidates.direction])[order])
    position = np.arange(len(row)) - np.searchsorted(row, row)
    shortlist = position < SHORTLIST  # far down a row a label would need many dominated ones above it
    row, pool = row[shortlist], Labels(pool.numbers[shortlist], pool.direction[shortlist])
    slot = _undominated_rank(context, row, pool)
    keep = slot < LABELS_PER_CORNER
    fresh = Labels.empty(len(targets))
    fresh.numbers[row[keep], slot[keep]] = pool.numbers[keep]
    fresh.direction[row[keep], slot[keep]] = pool.direction[keep]
    labels.numbers[targets], labels.direction[targets] = fresh.numbers, fresh.direction
    new_value = fresh.numbers[..., VALUE]
    same = new_value[:, :, None] == old.numbers[:, None, :, VALUE]
    same &= fresh.direction[:, :, None] == old.direction[:, None, :]
    changed[targets] = np.isfinite(new_value) & ~same.any(axis=2)
    return changed


def _undominated_rank(context: _Context, row: np.ndarray, pool: Labels) -> np.ndarray:
    """`[n]` rank of each pool label among the undominated labels of its row (large if dominated).

    The pool is sorted by row, best first within a row. A label counts as dominated when an
    earlier one of its row dominates it; as dominance is transitive, that is the same as
    keeping labels greedily in order of value.
    """
    count = len(row)
    row_start = np.searchsorted(row, row)  # index of the first label of each label's row
    earlier = np.arange(count) - row_start
    later = np.repeat(np.arange(count), earlier)
    first = np.repeat(row_start, earlier) + np.arange(len(later)) - np.repeat(np.cumsum(earlier) - earlier, earlier)
    earlier_label = Labels(pool.numbers[first], pool.direction[first])
    beaten = _dominates(context, earlier_label, Labels(pool.numbers[later], pool.direction[later]))
    dominated = np.bincount(later[beaten], minlength=count) > 0
    undominated = (~dominated).astype(np.int64)
    rank = np.cumsum(undominated) - undominated
    rank -= rank[row_start]
    return np.where(dominated, LABELS_PER_CORNER, rank)
