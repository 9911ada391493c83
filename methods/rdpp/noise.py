"""RD++'s simplex-noise pseudo-anomalies (official ``dataset.MVTecDataset_train.__getitem__``).

For each training image (RGB in [0, 1], size x size) the official draws a patch, in this order,
height h and width w with ``np.random.randint(10, size // 8)`` and its top-left corner with
``np.random.randint(1, size - h)`` and ``np.random.randint(1, size - w)``, then adds 0.2 times a
3-D fractal simplex noise field of shape (3, h, w) to the patch, channel c taking slice z = c:
six octaves, frequency 32 halving each octave, amplitude 1 times 0.6 each octave, evaluated at
the integer grid points (x / frequency, y / frequency, z / frequency) counted from 0. The noisy
image is not clipped before normalisation.

The noise comes from the PyPI package ``opensimplex`` (0.4.5.1), whose permutation seeding and
3-D noise are what the official ``dataset/noise.py`` vendors (with numba): for the same seed the
fields agree bit for bit (checked for several seeds and shapes, with and without numba).

Kept official quirk: the simplex permutation is seeded once per dataset and the grid always
starts at 0, so a given (h, w) always gets the same field; only the patch's size and place are
random. Fields are therefore cached per (seed, h, w): without numba opensimplex runs in pure
Python (~40 us a point, ~0.7 s for a 31 x 31 patch), but there are only 21 x 21 shapes at
size 256, each computed once per process (a DataLoader worker fills its own cache).

The default seed is the one official ``main.py`` gives the first class it trains:
``setup_seed(111)`` then ``Simplex_CLASS()`` draws ``np.random.randint(-10**10, 10**10)``,
which is 7698519916. (The official treats seed 0 as "draw one"; here every int is a seed.)
"""

from __future__ import annotations

import functools

import numpy as np
import opensimplex
import torch

OFFICIAL_SEED = 7698519916
MIN_SIDE = 10
OCTAVES = 6
PERSISTENCE = 0.6
FREQUENCY = 32.0
AMPLITUDE = 0.2

Rng = np.random.Generator | np.random.RandomState | None


@functools.cache
def _generator(seed: int) -> opensimplex.OpenSimplex:
    return opensimplex.OpenSimplex(seed)


@functools.cache
def octave_field(seed: int, h: int, w: int, octaves: int = OCTAVES,
                 persistence: float = PERSISTENCE, frequency: float = FREQUENCY) -> np.ndarray:
    """The official ``rand_3d_octaves((3, h, w), octaves, persistence)`` for this seed,
    transposed to (h, w, 3), float64, read-only (it is shared by the cache)."""
    gen = _generator(seed)
    z, y, x = np.arange(3), np.arange(h), np.arange(w)
    field = np.zeros((3, h, w))
    amplitude = 1.0
    for _ in range(octaves):  # accumulated in the official order, so the sums match exactly
        field += amplitude * gen.noise3array(x / frequency, y / frequency, z / frequency)
        frequency /= 2
        amplitude *= persistence
    out = np.ascontiguousarray(field.transpose(1, 2, 0))
    out.flags.writeable = False
    return out


def _randint(rng: Rng, low: int, high: int) -> int:
    """One draw from [low, high): ``np.random.randint`` (global state) when rng is None,
    ``RandomState.randint`` or ``Generator.integers``."""
    if rng is None:
        return int(np.random.randint(low, high))
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


class SimplexPseudoAnomaly:
    """Adds one simplex-noise patch to a size x size RGB image in [0, 1].

    Pass a ``np.random.RandomState`` seeded like the official's global numpy state (or None
    for the global state itself) to reproduce the official draws; a ``np.random.Generator``
    works too (a different stream)."""

    def __init__(self, size: int = 256, seed: int = OFFICIAL_SEED, amplitude: float = AMPLITUDE):
        if size // 8 <= MIN_SIDE:
            raise ValueError(f"size {size}: the official side draw randint({MIN_SIDE}, "
                             f"size // 8) needs size // 8 > {MIN_SIDE}, i.e. size >= 88")
        self.size, self.seed, self.amplitude = int(size), int(seed), float(amplitude)

    def draw_patch(self, rng: Rng = None) -> tuple[int, int, int, int]:
        """(top, left, h, w), drawn in the official order h, w, top, left."""
        h = _randint(rng, MIN_SIDE, self.size // 8)
        w = _randint(rng, MIN_SIDE, self.size // 8)
        top = _randint(rng, 1, self.size - h)
        left = _randint(rng, 1, self.size - w)
        return top, left, h, w

    def field(self, h: int, w: int) -> np.ndarray:
        """The (h, w, 3) noise added to an h x w patch, before the 0.2 amplitude."""
        return octave_field(self.seed, h, w)

    def patch(self, rng: Rng = None) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """A drawn patch box and the (h, w, 3) values added inside it."""
        box = self.draw_patch(rng)
        return box, self.amplitude * self.field(box[2], box[3])

    def __call__(self, image01: np.ndarray, rng: Rng = None) -> np.ndarray:
        """A float64 copy of the (size, size, 3) image with one noise patch added."""
        image = np.asarray(image01)
        if image.shape != (self.size, self.size, 3):
            raise ValueError(f"expected a ({self.size}, {self.size}, 3) image, got {image.shape}")
        (top, left, h, w), values = self.patch(rng)
        out = image.astype(np.float64, copy=True)
        out[top:top + h, left:left + w, :] += values
        return out

    def apply_batch(self, images01: torch.Tensor, rng: Rng = None) -> torch.Tensor:
        """(B, 3, size, size) tensor in [0, 1] (before normalisation) -> a noised copy, same
        dtype and device, one patch per sample drawn in batch order (as consecutive official
        ``__getitem__`` calls would); the addition happens in the tensor's dtype."""
        if images01.dim() != 4 or tuple(images01.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"expected (B, 3, {self.size}, {self.size}), "
                             f"got {tuple(images01.shape)}")
        out = images01.clone()
        for i in range(out.shape[0]):
            (top, left, h, w), values = self.patch(rng)
            add = torch.from_numpy(values.transpose(2, 0, 1).copy())
            out[i, :, top:top + h, left:left + w] += add.to(out.device, out.dtype)
        return out
