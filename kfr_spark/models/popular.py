"""MostPopular: the non-personalised baseline of both papers, and the fallback for users nobody knows.

Score of key frame k = how many positive (polarity 1) comments it received in training, the same for every user.
No gradient: fitted with `fit_counts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kfr_spark.models.base import KeyFrameRecommender


class MostPopular(KeyFrameRecommender):
    name = "most_popular"
    objective = "counts"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed)
        self.register_buffer("popularity", torch.zeros(self.n_items, dtype=torch.float64))

    def fit_counts(self, frame_idx: Any, counts: Any | None = None) -> MostPopular:
        """Add `counts` (default 1 each) to the frames `frame_idx` (repeats accumulate). Call again to add more."""
        frame_idx = torch.as_tensor(frame_idx, dtype=torch.long).reshape(-1)
        if counts is None:
            counts = torch.ones(frame_idx.shape, dtype=torch.float64)
        counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
        if counts.shape != frame_idx.shape:
            raise ValueError(f"{counts.shape[0]} counts for {frame_idx.shape[0]} frames")
        if frame_idx.numel() and (frame_idx.min() < 0 or frame_idx.max() >= self.n_items):
            raise IndexError(f"frame index outside [0, {self.n_items})")
        self.popularity.index_add_(0, frame_idx.to(self.popularity.device), counts.to(self.popularity.device))
        return self

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise TypeError("MostPopular has no training loss: use fit_counts")

    def _score(self, user_idx, item_idx, features):
        return self.popularity[item_idx].to(torch.float32)
