"""Accuracy with a percentile-bootstrap 95% interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Accuracy:
    n: int
    accuracy: float
    ci_low: float
    ci_high: float

    def __str__(self) -> str:
        return f"{self.accuracy:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


def accuracy(correct: Sequence[bool], n_boot: int = 1000, seed: int = 0) -> Accuracy:
    """Mean of ``correct`` and its percentile-bootstrap 95% interval (``n_boot`` resamples)."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        raise ValueError("accuracy of an empty set")
    mean = float(values.mean())
    if n_boot <= 0:
        return Accuracy(int(values.size), mean, mean, mean)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Accuracy(int(values.size), mean, float(low), float(high))


@dataclass(frozen=True)
class Difference:
    """``after - before`` on the same questions, with a paired-bootstrap 95% interval."""

    n: int
    delta: float
    ci_low: float
    ci_high: float

    def __str__(self) -> str:
        return f"{self.delta:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] (n={self.n})"


def paired_difference(
    before: Sequence[float], after: Sequence[float], n_boot: int = 1000, seed: int = 0
) -> Difference:
    """Mean of ``after - before`` per question; questions are resampled together, so the
    interval is much tighter than comparing two independent accuracy intervals."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape or b.size == 0:
        raise ValueError(f"paired scores must be non-empty and aligned ({b.size} vs {a.size})")
    diff = a - b
    mean = float(diff.mean())
    if n_boot <= 0:
        return Difference(int(diff.size), mean, mean, mean)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(int(diff.size), mean, float(low), float(high))
