"""Product quantization of a weight matrix: every block of ``block_size`` consecutive input features of a row
is replaced by the nearest of ``n_centroids`` codewords learned by k-means over the layer's blocks.

Stock, Joulin, Gribonval, Graham & Jégou 2020, "And the Bit Goes Down", arXiv:1907.05686 (the iPQ of
Quant-Noise, Fan et al. 2021, arXiv:2004.07320). As fairseq's ``modules/quantization/pq/em.py``: centroids
start at randomly drawn blocks; each EM step assigns every block to its nearest centroid (squared
Euclidean distance) and moves each centroid to the mean of its blocks; an empty cluster takes the centroid
of the most populated one plus a small perturbation ``e ~ eps·N(0, 1)`` (and that one moves by ``−e``), up to
``max_tentatives`` times per step. Defaults: 256 centroids, block size 8, 15 iterations
(``pq/utils.py::quantize_model_``), ``eps = 1e-6``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError


def to_blocks(w: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[rows, cols]`` → ``[rows·cols/block_size, block_size]``: each row cut into consecutive blocks."""
    rows, cols = w.shape
    if cols % block_size:
        raise ConfigError(f"product quantization: {cols} input features are not a multiple of "
                          f"block_size={block_size}: choose a block size that divides them")
    return w.reshape(rows * (cols // block_size), block_size)


@dataclass
class PQResult:
    """Codebook ``[k, block_size]`` and one assignment per block; :meth:`reconstruct` rebuilds the matrix."""

    centroids: torch.Tensor
    assignments: torch.Tensor
    shape: tuple[int, int]

    def reconstruct(self) -> torch.Tensor:
        return self.centroids[self.assignments].reshape(self.shape)


def _assign(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, c).argmin(dim=1)


def kmeans(x: torch.Tensor, n_centroids: int, n_iter: int = 15, *, eps: float = 1e-6, max_tentatives: int = 30,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids, assignments)`` of ``x`` ``[n, d]`` after ``n_iter`` EM steps (see the module docstring)."""
    n = x.shape[0]
    if n_centroids > n:
        raise DataError(f"k-means: {n_centroids} centroids for {n} vectors; give at most as many centroids")
    c = x[torch.randint(0, n, (n_centroids,), generator=generator)].clone()
    a = _assign(x, c)
    for _ in range(n_iter):
        for _ in range(max_tentatives):
            counts = torch.bincount(a, minlength=n_centroids)
            empty = (counts == 0).nonzero().flatten()
            if not len(empty):
                break
            k = int(empty[torch.randint(0, len(empty), (1,), generator=generator)])
            m = int(counts.argmax())
            e = torch.randn(c.shape[1], generator=generator) * eps
            c[k], c[m] = c[m] + e, c[m] - e
            a = _assign(x, c)
        counts = torch.bincount(a, minlength=n_centroids).unsqueeze(1)
        means = torch.zeros_like(c).index_add_(0, a, x) / counts.clamp(min=1).to(x.dtype)
        c = torch.where(counts > 0, means, c)  # a cluster still empty keeps its centroid
        a = _assign(x, c)
    return c, a


def product_quantize(w: torch.Tensor, block_size: int = 8, n_centroids: int = 256, n_iter: int = 15, *,
                     generator: torch.Generator | None = None) -> PQResult:
    """PQ of ``w`` ``[rows, cols]``; a layer with fewer blocks than ``n_centroids`` keeps every block
    (``n_centroids`` becomes the block count: exact, as many codewords as blocks)."""
    blocks = to_blocks(w.detach().float(), block_size)
    if blocks.shape[0] <= n_centroids:
        return PQResult(blocks.clone(), torch.arange(blocks.shape[0]), tuple(w.shape))
    c, a = kmeans(blocks, n_centroids, n_iter, generator=generator)
    return PQResult(c, a, tuple(w.shape))
