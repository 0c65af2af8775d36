"""The order of windows, as a pure function: sample ``k`` of epoch ``e`` from ``(seed, e, k)`` alone.

- ``shuffle``: the data is cut into ``N // (T+1)`` non-overlapping windows of ``T+1`` tokens;
  epoch ``e`` visits them in the order of a keyed bijection on ``[0, n)`` (a 4-round Feistel
  network on the next even power of two, cycle-walking back into range: at most 4 expected
  walks, no permutation table — 100M windows would otherwise cost 800 MB per worker).
- ``random``: with replacement; start ``k`` is a counter-based hash of ``(seed, e, k)``, so
  any position can be jumped to. An epoch has as many samples as ``shuffle`` has windows.
- ``sequential``: window ``k`` starts at ``k*T``; every token is a target exactly once.
- ``block_shuffle``: every window once per epoch, shuffled within pools of blocks (see
  ``BlockLocalPermutation`` at the end of this module), for object storage.

Each is O(1) time and memory per sample, vectorised over arrays of sample indices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError

MODES = ("shuffle", "random", "sequential")
# Window samplers also take "block_shuffle" (BlockLocalPermutation, below); document orders do not.
WINDOW_MODES = (*MODES, "block_shuffle")
_MASK64 = (1 << 64) - 1


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array: a fast, well-mixed keyed hash (a new array)."""
    if not isinstance(z, np.ndarray) or z.ndim == 0:  # one value
        return np.uint64(_mix64_int(int(z)))
    z = z + _C0
    t = z >> _S30
    z ^= t
    z *= _C1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _C2
    np.right_shift(z, _S31, out=t)
    z ^= t
    return z


# mix64's constants as numpy scalars, made once (its ops then allocate two arrays, not nine).
_C0, _C1, _C2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix64_int(z: int) -> int:
    """:func:`mix64` of one value, in Python ints (the same bits)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


_SCALAR_WALK = 16  # values still walking below which the walk goes on in Python ints


def hash_key(*parts: int) -> int:
    """A 64-bit key from small integers (seed, epoch, round...)."""
    z = np.zeros(1, dtype=np.uint64)
    for p in parts:
        z = mix64(z ^ np.uint64(p & _MASK64))
    return int(z[0])


class KeyedPermutation:
    """A bijection on ``[0, n)`` chosen by ``key``, evaluated pointwise in O(1) memory.

    Args:
        n: size of the domain.
        key: any integer; different keys give unrelated orders.
    """

    ROUNDS = 4

    def __init__(self, n: int, key: int):
        if n < 1:
            raise ConfigError(f"a permutation needs a non-empty domain, got n={n}")
        self.n = n
        bits = max(2, int(n - 1).bit_length())
        self._half = np.uint64((bits + 1) // 2)
        self._mask = np.uint64((1 << int(self._half)) - 1)
        self._keys = [np.uint64(hash_key(key, r)) for r in range(self.ROUNDS)]
        self._int_keys = [int(k) for k in self._keys]  # for the walk's last values, in Python ints

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for k in self._keys:
            f = mix64(right ^ k)
            f &= self._mask
            f ^= left
            left, right = right, f
        left <<= self._half
        left |= right
        return left

    def __call__(self, k: np.ndarray | int) -> np.ndarray:
        shape = np.shape(k)
        if self.n == 1:
            return np.zeros(shape, dtype=np.int64)
        n = np.uint64(self.n)
        x = self._feistel(np.array(k, dtype=np.uint64, ndmin=1).reshape(-1))
        walk = np.flatnonzero(x >= n)
        # Cycle-walk (stays a bijection on [0, n)). A batch's longest walk grows with its size,
        # and its last steps move a handful of values: those finish in Python ints, where a
        # numpy pass would cost ~20 µs each.
        while len(walk) > _SCALAR_WALK:
            y = self._feistel(x[walk])
            x[walk] = y
            walk = walk[y >= n]
        for i in walk.tolist():
            x[i] = self._walk_scalar(int(x[i]))
        return x.astype(np.int64).reshape(shape)

    def _walk_scalar(self, v: int) -> int:
        """:meth:`_feistel` applied to ``v`` until it falls in ``[0, n)``, in Python ints."""
        half, mask, keys = int(self._half), int(self._mask), self._int_keys
        while True:
            left, right = v >> half, v & mask
            for k in keys:
                left, right = right, left ^ (_mix64_int(right ^ k) & mask)
            v = (left << half) | right
            if v < self.n:
                return v


class WindowOrder:
    """Token starts of the windows of ``seq_len + 1`` tokens over ``n_tokens``, per mode and seed.

    Args:
        mode: ``"shuffle"``, ``"random"``, ``"sequential"`` or ``"block_shuffle"``.
        seed: selects the order.
        seq_len: tokens per input row ``T`` (a window is ``T + 1`` tokens).
        n_tokens: tokens of the data.
    """

    def __init__(self, mode: str, seed: int, seq_len: int, n_tokens: int):
        if mode not in WINDOW_MODES:
            raise ConfigError(f"mode must be one of {WINDOW_MODES}, not {mode!r}")
        self.mode, self.seed, self.seq_len, self.n_tokens = mode, int(seed), int(seq_len), int(n_tokens)
        window = self.seq_len + 1
        self.n_samples = (n_tokens - 1) // self.seq_len if mode == "sequential" else n_tokens // window
        self._perm: tuple[int, Any] | None = None

    def starts(self, epoch: int, samples: np.ndarray) -> np.ndarray:
        """Token starts of sample indices ``samples`` (each in ``[0, n_samples)``) of ``epoch``."""
        k = np.asarray(samples, dtype=np.int64)
        if self.mode == "sequential":
            return k * self.seq_len
        if self.mode == "shuffle":
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, KeyedPermutation(self.n_samples, hash_key(self.seed, epoch)))
            return self._perm[1](k) * (self.seq_len + 1)
        if self.mode == "block_shuffle":
            if self._perm is None or self._perm[0] != epoch:
                group = max(1, BLOCK_TOKENS // (self.seq_len + 1))
                self._perm = (epoch, BlockLocalPermutation(self.n_samples, group, POOL_BLOCKS, hash_key(self.seed, epoch, 0xB10C)))
            return self._perm[1](k) * (self.seq_len + 1)
        h = mix64(mix64(k.astype(np.uint64) ^ np.uint64(hash_key(self.seed, epoch, 0x5EED))))
        return (h % np.uint64(self.n_tokens - self.seq_len)).astype(np.int64)


# -- block_shuffle ---------------------------------------------------------------------------
# ``block_shuffle``: a shuffle local to blocks of the data, for stores where requests cost.
#
# The ``N`` windows of an epoch are cut into groups of ``G`` consecutive windows (about
# ``BLOCK_TOKENS`` tokens: one 8 MiB cache block of uint16 tokens), and the groups are put in a
# keyed order. Consecutive runs of ``POOL_BLOCKS`` groups in that order form a pool; the epoch
# visits pool after pool, and within a pool the ``G * POOL_BLOCKS`` windows come in a second
# keyed order. Sample ``k`` is therefore found in O(1), from ``(seed, epoch, k)`` alone:
#
#     pool p = k // (G*M),  slot s = perm_{seed,e,p}(k % (G*M)),
#     group  = perm_{seed,e}(p*M + s // G),  window = group*G + s % G.
#
# A reader then needs only ``M`` blocks at a time (each downloaded once or twice per epoch
# with a cache of ``M`` blocks: a group usually straddles two blocks), against one block per
# window for the exact shuffle. What it costs in shuffle quality: two windows of a batch come from the same
# block with probability ~1/M (1/64) instead of ~G/N, and a pool spans only ``M*G`` windows of
# the epoch (benchmarks/RESULTS.md measures both). The ``N % G`` windows of a short last group
# always sit in the epoch's last pool (at most ``G - 1`` windows out of ``N``).
BLOCK_TOKENS = 1 << 22
POOL_BLOCKS = 64


class BlockLocalPermutation:
    """A bijection on ``[0, n)`` that keeps each stretch of ``group*pool`` samples within ``pool`` groups.

    Args:
        n: windows in the epoch.
        group: consecutive windows per group ``G``.
        pool: groups per pool ``M``.
        key: selects the order (seed and epoch).
    """

    def __init__(self, n: int, group: int, pool: int, key: int):
        self.n, self.group, self.pool, self.key = int(n), max(1, int(group)), max(1, int(pool)), key
        self.n_full = self.n // self.group
        self.pool_size = self.group * self.pool
        self._groups = KeyedPermutation(self.n_full, hash_key(key, 1)) if self.n_full else None
        self._pools: dict[int, KeyedPermutation] = {}

    def _pool_perm(self, p: int) -> KeyedPermutation:
        perm = self._pools.get(p)
        if perm is None:
            if len(self._pools) > 8:
                self._pools.clear()
            size = min(self.pool_size, self.n - p * self.pool_size)
            perm = self._pools[p] = KeyedPermutation(size, hash_key(self.key, 2, p))
        return perm

    def __call__(self, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k, dtype=np.int64)
        pools, j = np.divmod(k, self.pool_size)
        out = np.empty_like(k)
        for p in np.unique(pools):
            mask = pools == p
            s = self._pool_perm(int(p))(j[mask])
            pos = int(p) * self.pool + s // self.group
            full = pos < self.n_full
            grp = np.full_like(pos, self.n_full)  # the short last group keeps the last position
            if full.any():
                grp[full] = self._groups(pos[full])
            out[mask] = grp * self.group + s % self.group
        return out
