"""Learned execution time per batch size, the table the batch policy predicts with."""

from __future__ import annotations

import numpy as np

#: weight of the newest observation in the per-size moving average
ALPHA = 0.2
#: an observation counts as at most this many times the current mean (a preempted run on a busy
#: machine must not make the model look slow; a model that really slows down still converges)
SPIKE_CAP = 4.0
#: observations between two refits of the sizes not seen yet (a new size refits at once)
REFIT_EVERY = 32


class RuntimeModel:
    """Execution time by batch size: a moving average where observed, a linear fit elsewhere.

    ``table[n]`` is the predicted nanoseconds for a batch of *n* rows (``table[0]`` is 0). Before
    anything is observed every prediction is 0, so nothing is refused or closed early on a guess.
    Observing is O(1) on the request path; the fit for unseen sizes is redone when a size is seen
    for the first time and every :data:`REFIT_EVERY` observations.
    """

    def __init__(self, max_batch_size: int) -> None:
        self.table = np.zeros(max_batch_size + 1, dtype=np.int64)
        # plain lists: one element at a time, on every batch, is what they are used for
        self._mean = [0.0] * (max_batch_size + 1)
        self._seen = [False] * (max_batch_size + 1)
        self._since_fit = 0

    def observe(self, rows: int, ns: int) -> None:
        """Learn from one execution of *rows* rows that took *ns* nanoseconds."""
        if not 0 < rows < len(self.table):
            return
        if self._seen[rows]:
            mean = self._mean[rows]
            mean += ALPHA * (min(ns, SPIKE_CAP * mean) - mean)
            self._mean[rows] = mean
            self.table[rows] = int(mean)
            self._since_fit += 1
            if self._since_fit >= REFIT_EVERY:
                self._refit()
        else:
            self._mean[rows] = ns
            self._seen[rows] = True
            self._refit()

    def _refit(self) -> None:
        """Least-squares line through the observed sizes' means, for the sizes not observed."""
        self._since_fit = 0
        seen = np.array(self._seen)
        sizes = np.flatnonzero(seen).astype(np.float64)
        means = np.array(self._mean)[seen]
        rows = np.arange(len(self.table), dtype=np.float64)
        if len(sizes) == 1:
            # one size seen: scale per row, which overestimates small batches' cost a little
            fitted = rows * (means[0] / sizes[0])
        else:
            x_mean, y_mean = sizes.mean(), means.mean()
            spread = ((sizes - x_mean) ** 2).sum()
            slope = max(((sizes - x_mean) * (means - y_mean)).sum() / spread, 0.0)
            fitted = np.maximum(y_mean + slope * (rows - x_mean), 0.0)
        fitted[seen] = means
        fitted[0] = 0.0
        self.table[:] = fitted.astype(np.int64)
