"""Shapley arithmetic over coalitions written as bitmasks (bit m set = player m present)."""

from __future__ import annotations

import math

import numpy as np


def coalition_weights(n_players: int) -> np.ndarray:
    """Shapley weight of a coalition by its size: ``w[k] = k! (M - k - 1)! / M!``.

    ``phi_m = sum over S not containing m of w[|S|] (v(S + m) - v(S))``.

    Returns
    -------
    ndarray of shape (n_players,)
        ``w[k]`` for coalition sizes k = 0 .. n_players - 1.

    Examples
    --------
    >>> coalition_weights(3).tolist() == [1 / 3, 1 / 6, 1 / 3]
    True
    """
    M = n_players
    return np.array(
        [math.factorial(k) * math.factorial(M - k - 1) / math.factorial(M) for k in range(M)]
    )


def coalition_sizes(n_players: int) -> np.ndarray:
    """Number of players in each coalition 0 .. 2**n_players - 1, shape (2**n_players,)."""
    return np.array([bin(s).count("1") for s in range(1 << n_players)])


def shapley_weights(n_players: int) -> np.ndarray:
    """Matrix W of shape (n_players, 2**n_players) with phi = W @ v for exact Shapley values.

    Coalitions are bitmasks (bit m set = player m present); ``v[S]`` is the value of
    coalition S. ``phi_m = sum_{S not containing m} |S|! (M-|S|-1)! / M! (v[S+m] - v[S])``.
    """
    M = n_players
    sizes, w = coalition_sizes(M), coalition_weights(M)
    W = np.zeros((M, 1 << M))
    for m in range(M):
        bit = 1 << m
        without = np.array([s for s in range(1 << M) if not s & bit])
        W[m, without | bit] += w[sizes[without]]
        W[m, without] -= w[sizes[without]]
    return W


def exact_shapley(V: np.ndarray, n_players: int) -> np.ndarray:
    """Exact Shapley values from the coalition values ``V`` of shape (2**M, ...).

    Computed as weighted *paired* differences v(S + m) - v(S), so a player that changes
    nothing gets exactly 0 (not a rounding residue).

    Returns
    -------
    ndarray of shape (n_players, ...)
    """
    M = n_players
    coalitions = np.arange(1 << M)
    sizes, w = coalition_sizes(M), coalition_weights(M)
    phi = np.empty((M,) + V.shape[1:])
    for m in range(M):
        without = coalitions[(coalitions >> m) & 1 == 0]
        diffs = V[without | (1 << m)] - V[without]
        phi[m] = np.tensordot(w[sizes[without]], diffs, axes=(0, 0))
    return phi


def permutation_shapley(value, n_players: int, n_permutations: int, rng):
    """Shapley values estimated from random permutations of the players.

    Antithetic pairs (a permutation and its reverse), each walked from the empty to the
    full coalition, so efficiency holds exactly. ``value(s)`` gives the value of bitmask
    ``s``; each coalition is evaluated once.

    Returns
    -------
    phi : ndarray of shape (n_players, ...)
    empty, full : ndarray
        The values of the empty and the full coalition.
    """
    M = n_players
    cache: dict[int, np.ndarray] = {}

    def v(s):
        if s not in cache:
            cache[s] = value(s)
        return cache[s]

    phi = None
    n_perm = max(2, n_permutations + n_permutations % 2)
    for _ in range(n_perm // 2):
        perm = rng.permutation(M)
        for order in (perm, perm[::-1]):  # antithetic pair
            s, prev = 0, v(0)
            for m in order:
                s |= 1 << m
                cur = v(s)
                if phi is None:
                    phi = np.zeros((M,) + cur.shape)
                phi[m] += cur - prev
                prev = cur
    return phi / n_perm, v(0), v((1 << M) - 1)


def interaction_weights(n_players: int) -> np.ndarray:
    """Weight of the Shapley interaction index by coalition size:
    ``w[s] = s! (M - s - 2)! / (M - 1)!`` for s = 0 .. M - 2 (Grabisch and Roubens, 1999).

    ``I_ij = sum over S not containing i, j of w[|S|] (v(S+i+j) - v(S+i) - v(S+j) + v(S))``.

    Examples
    --------
    >>> interaction_weights(3).tolist()
    [0.5, 0.5]
    """
    M = n_players
    return np.array(
        [math.factorial(s) * math.factorial(M - s - 2) / math.factorial(M - 1) for s in range(M - 1)]
    )


def exact_interactions(V: np.ndarray, n_players: int) -> np.ndarray:
    """Exact pairwise Shapley interaction values from the coalition values ``V`` (2**M, ...).

    The off-diagonal entries split the Shapley interaction index I_ij equally between the
    two players (``Phi[i, j] = Phi[j, i] = I_ij / 2``); the diagonal holds each player's
    main effect, ``Phi[i, i] = phi_i - sum_{j != i} Phi[i, j]``, so every row adds up to the
    player's Shapley value and the whole matrix to v(full) - v(empty) (the convention of
    shap's TreeExplainer interaction values). The second differences are taken as
    differences of *paired* differences, ``(v(S+i+j) - v(S+j)) - (v(S+i) - v(S))``, so a
    player that changes nothing gets exactly 0 in its row and column.

    Returns
    -------
    ndarray of shape (n_players, n_players, ...)

    Examples
    --------
    >>> V = np.array([0.0, 0.0, 0.0, 1.0])  # v = 1 only when both players are present
    >>> exact_interactions(V, 2).tolist()
    [[0.0, 0.5], [0.5, 0.0]]
    """
    M = n_players
    phi = exact_shapley(V, M)
    out = np.zeros((M, M) + V.shape[1:])
    if M >= 2:
        coalitions = np.arange(1 << M)
        sizes, w = coalition_sizes(M), interaction_weights(M)
        for i in range(M):
            for j in range(i + 1, M):
                without = coalitions[((coalitions >> i) & 1 == 0) & ((coalitions >> j) & 1 == 0)]
                bi, bj = 1 << i, 1 << j
                second = (V[without | bi | bj] - V[without | bj]) - (V[without | bi] - V[without])
                half = np.tensordot(w[sizes[without]], second, axes=(0, 0)) / 2
                out[i, j] = out[j, i] = half
    for i in range(M):  # out[i, i] is still 0 here
        out[i, i] = phi[i] - out[i].sum(axis=0)
    return out
