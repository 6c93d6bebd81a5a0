"""Helpers for the index tests: a brute-force reference and a Fashion-MNIST slice."""

from __future__ import annotations

import numpy as np
import pytest

from annrec.bench.datasets import FASHION_MNIST_DIR as FMNIST
from annrec.bench.datasets import read_idx


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``x`` for each query with numpy (float64), as (indices, scores)."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        d = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        d = q @ x.T
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def fashion_mnist(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The first rows of Fashion-MNIST's train and test images as float32 (784-d, pixel values 0-255)."""
    if not FMNIST.exists():
        pytest.skip("Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")

    def read(name: str, n: int) -> np.ndarray:
        return read_idx(FMNIST / name)[:n].reshape(n, 784).astype(np.float32)

    return read("train-images-idx3-ubyte.gz", n_train), read("t10k-images-idx3-ubyte.gz", n_test)
