"""Owen values of parts nested in groups (a two-level Owen hierarchy: coarse groups of fine
parts, e.g. the 8 blocks of a scan, each split into 8), exact or sampled, with a standard
error and a ``resolved`` mark per part.

A drill-down's game U(T) gives the modality's (Shapley-weighted) output for a subset T of
the item's parts (:mod:`toolkit.explain.drilldown`). With the parts grouped, the Owen value
of part j in group B is

    phi_j = sum_{Q subset of the other groups} w_g(|Q|)
            sum_{T subset of B - j} w_b(|T|) (U(Q + T + j) - U(Q + T)),

the Shapley value of j inside B, averaged over the coalitions Q of whole other groups with
Shapley weights. The parts of a group add up to the group's Shapley value in the coarse
game (the groups as players), and all parts add up to U(all) - U(none). It needs only the
subsets in which at most one group is partly kept: 2^g + sum_B 2^(g-1) (2^|B| - 2) of them
(464 for 4 groups of 4 image cells, against 65,536 for 16 cells without the hierarchy).

Above a budget the values are sampled: random orders of the parts that keep each group
together (the groups in a random order, the parts of a group in a random order inside it),
in antithetic pairs, each walked from no part to all parts, so every walk gives one
marginal contribution of every part at the cost of d - 1 masked items: 4 walks of a scan's
64 blocks cost 252 items, about the 254 of the exact values of its 8 coarse blocks. The
values add up exactly to U(all) - U(none) in every walk. A part's standard error
is the spread of its antithetic-pair means over sqrt(pairs); it is ``resolved`` when its
interval (value +- t_{0.975, pairs - 1} x s.e.) excludes 0. Exactly computed parts have
s.e. 0 and are resolved when their value is not 0.
"""

from __future__ import annotations

import numpy as np

from toolkit.explain.shapley import coalition_sizes, coalition_weights, exact_shapley


def check_groups(groups, d: int) -> list[list[int]]:
    """The groups as lists of part positions; None gives one group of all ``d`` parts (flat
    Shapley values). Each part must be in exactly one group."""
    if groups is None:
        return [list(range(d))]
    out = [[int(j) for j in group] for group in groups]
    seen = sorted(j for group in out for j in group)
    if seen != list(range(d)) or any(not group for group in out):
        raise ValueError(
            f"the groups of a masker's parts must hold each of the {d} parts exactly once and "
            f"no group may be empty, got {[len(g) for g in out]} parts in {len(out)} groups"
        )
    return out


def exact_cost(sizes) -> int:
    """Masked items to encode for exact Owen values of groups of these sizes (the subsets
    with at most one group partly kept, less the empty and the full one)."""
    g = len(sizes)
    partial = sum((1 << (g - 1)) * ((1 << b) - 2) for b in sizes)
    return (1 << g) + partial - 2


def _group_masks(groups, d: int) -> np.ndarray:
    masks = np.zeros((len(groups), d), dtype=bool)
    for k, group in enumerate(groups):
        masks[k, group] = True
    return masks


def _unions(masks: np.ndarray) -> np.ndarray:
    """Every union of the rows of ``masks``, in bitmask order, shape (2^rows, d)."""
    n = len(masks)
    bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1 == 1
    return (bits[:, :, None] & masks[None]).any(axis=1)


def group_unions(groups, d: int) -> np.ndarray:
    """Every union of whole groups (the coarse game's coalitions), in bitmask order (bit k:
    group k), shape (2^g, d)."""
    return _unions(_group_masks(groups, d))


def _inside(groups, b: int, d: int):
    """(Q unions of the other groups (2^(g-1), d), T subsets of group b (2^|b|, d))."""
    masks = _group_masks(groups, d)
    others = np.delete(masks, b, axis=0)
    inner = np.eye(d, dtype=bool)[groups[b]]
    return _unions(others), _unions(inner)


def exact_subsets(groups, d: int) -> np.ndarray:
    """The subsets exact Owen values need, boolean (n_subsets, d), without repeats."""
    found = [group_unions(groups, d)]
    for b in range(len(groups)):
        Q, T = _inside(groups, b, d)
        found.append((Q[:, None, :] | T[None, :, :]).reshape(-1, d))
    return np.unique(np.concatenate(found), axis=0)


def index_of(subsets: np.ndarray) -> dict:
    """Subset (as packed bytes) -> its row in ``subsets``."""
    return {np.packbits(s).tobytes(): k for k, s in enumerate(subsets)}


def _look(U, index: dict, subsets: np.ndarray) -> np.ndarray:
    rows = [index[np.packbits(s).tobytes()] for s in subsets.reshape(-1, subsets.shape[-1])]
    return U[rows].reshape(subsets.shape[:-1] + U.shape[1:])


def exact_owen(U, index: dict, groups, d: int) -> np.ndarray:
    """Exact Owen values, shape (d, ...), from the game's values ``U`` on the subsets of
    :func:`exact_subsets` (rows found through ``index``)."""
    g = len(groups)
    outer = coalition_weights(g)[coalition_sizes(g - 1)]
    phi = np.zeros((d,) + U.shape[1:])
    for b, members in enumerate(groups):
        Q, T = _inside(groups, b, d)
        V = _look(U, index, T[:, None, :] | Q[None, :, :])  # (2^|B|, 2^(g-1), ...)
        inner = exact_shapley(V, len(members))  # (|B|, 2^(g-1), ...)
        phi[members] = np.tensordot(inner, outer, axes=([1], [0]))
    return phi


def group_orders(groups, n_pairs: int, rng) -> np.ndarray:
    """``2 n_pairs`` orders of the parts that keep each group together (the groups in a
    random order, each group's parts in a random order), as antithetic pairs: an order and
    its reverse (itself such an order). Shape (2 n_pairs, d)."""
    orders = []
    for _ in range(n_pairs):
        order = np.concatenate(
            [rng.permutation(groups[k]) for k in rng.permutation(len(groups))]
        ).astype(int)
        orders += [order, order[::-1]]
    return np.array(orders)


def walk_subsets(orders: np.ndarray) -> np.ndarray:
    """The distinct prefixes of the walks, boolean (n_subsets, d) (the empty and the full
    subset included)."""
    P, d = orders.shape
    prefixes = np.zeros((P, d + 1, d), dtype=bool)
    for p, order in enumerate(orders):
        for k, part in enumerate(order):
            prefixes[p, k + 1 :, part] = True
    return np.unique(prefixes.reshape(-1, d), axis=0)


def walk_marginals(U, index: dict, orders: np.ndarray) -> np.ndarray:
    """Each walk's marginal contribution of each part, shape (P, d, ...)."""
    P, d = orders.shape
    marginals = np.zeros((P, d) + U.shape[1:])
    for p, order in enumerate(orders):
        kept = np.zeros(d, dtype=bool)
        previous = U[index[np.packbits(kept).tobytes()]]
        for part in order:
            kept[part] = True
            current = U[index[np.packbits(kept).tobytes()]]
            marginals[p, part] = current - previous
            previous = current
    return marginals


def pair_estimate(marginals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, standard errors) from walks in antithetic pairs: the mean, and the spread of
    the pair means over sqrt(pairs)."""
    P = len(marginals)
    pairs = marginals.reshape((P // 2, 2) + marginals.shape[1:]).mean(axis=1)
    return pairs.mean(axis=0), pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))


def t_quantile(n_pairs: int) -> float:
    """The 97.5% quantile of Student's t with ``n_pairs - 1`` degrees of freedom (the
    interval of a value estimated from ``n_pairs`` antithetic-pair means)."""
    from scipy.stats import t

    return float(t.ppf(0.975, max(int(n_pairs) - 1, 1)))


def resolved(values, errors, n_pairs: int | None) -> np.ndarray:
    """Whether each part's interval excludes 0: ``|value| > t x s.e.`` for sampled values
    (``n_pairs`` pairs), ``value != 0`` for exact ones (``n_pairs`` None)."""
    values, errors = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    if n_pairs is None:
        return values != 0
    return np.abs(values) > t_quantile(n_pairs) * errors


#: A part below this share of its row's total |value| is negligible: however small its
#: standard error, it never ranks above a part that carries the contribution.
MIN_SHARE = 0.01


def material(values, min_share: float = MIN_SHARE) -> np.ndarray:
    """Whether each part carries at least ``min_share`` of the row's total |value| (all
    False when the parts carry nothing)."""
    magnitude = np.abs(np.asarray(values, dtype=float))
    total = magnitude.sum()
    return magnitude >= min_share * total if total > 0 else np.zeros(magnitude.shape, bool)


def rank(values, resolved_mask) -> np.ndarray:
    """Part positions: the parts that are resolved and material first (their interval
    excludes 0 and they carry >= ``MIN_SHARE`` of the row's total |value|), then the rest,
    each set by decreasing |value| (ties by position): what is resolved ranks above what
    may be noise, and a negligible part with a tiny error never tops one that matters."""
    values = np.asarray(values, dtype=float)
    lower = ~(np.asarray(resolved_mask, dtype=bool) & material(values))
    return np.lexsort((np.arange(len(values)), -np.abs(values), lower))
