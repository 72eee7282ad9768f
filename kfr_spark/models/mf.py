"""Matrix factorisation baselines of the KFRCI paper: PMF (pointwise) and BPR (pairwise), user × key frame.

PMF (Salakhutdinov & Mnih): r̂_uk = p_u · q_k. KFRCI sets the target to 1 for a positively commented frame and 0
otherwise (the sampled O-). `loss="bce"` (default) fits σ(r̂) with binary cross-entropy, `loss="mse"` fits r̂ with
the squared error of the original PMF. Regularisation `reg`·(‖p_u‖² + ‖q_k‖²) over the batch's rows.

BPR-MF (Rendle et al.): x̂_uk = p_u · q_k (+ b_k with `item_bias=True`), loss −Σ ln σ(x̂_ui − x̂_uj)
+ `reg`·(‖p_u‖² + ‖q_i‖² + ‖q_j‖²). The KFRCI paper samples one negative per positive.

Losses are the papers' sums divided by the batch size B (the mean over rows; pairwise: over positives, each
positive's N negatives summed).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from kfr_spark.models.base import KeyFrameRecommender, bce_with_logits_sum, bpr_loss_sum, l2


class PMF(KeyFrameRecommender):
    name = "pmf"
    item_tables = ("item",)
    objective = "pointwise"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, loss: str = "bce", reg: float = 1e-4, init_std: float = 0.1) -> None:
        if loss not in ("bce", "mse"):
            raise ValueError(f"PMF loss must be 'bce' or 'mse', not {loss!r}")
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed,
                         dim=dim, loss=loss, reg=reg, init_std=init_std)
        self.loss_kind, self.reg = loss, float(reg)
        with self._seeded():
            self.user = nn.Embedding(self.n_users, dim)
            self.item = nn.Embedding(self.n_items, dim)
            nn.init.normal_(self.user.weight, std=init_std)
            nn.init.normal_(self.item.weight, std=init_std)

    def _logits(self, user: torch.Tensor, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p, q = self.user(user), self.item(frame)
        return (p * q).sum(-1), p, q

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits, p, q = self._logits(batch["user"], batch["frame"])
        label = batch["label"].to(logits.dtype)
        if self.loss_kind == "bce":
            data = bce_with_logits_sum(logits, label)
        else:
            data = (logits - label).pow(2).sum()
        return (data + self.reg * l2(p, q)) / logits.shape[0]

    def _score(self, user_idx, item_idx, features):
        return self._logits(user_idx, item_idx)[0]


class BPR(KeyFrameRecommender):
    name = "bpr"
    item_tables = ("item", "bias")
    objective = "pairwise"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, reg: float = 1e-4, item_bias: bool = False,
                 init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed,
                         dim=dim, reg=reg, item_bias=item_bias, init_std=init_std)
        self.reg = float(reg)
        with self._seeded():
            self.user = nn.Embedding(self.n_users, dim)
            self.item = nn.Embedding(self.n_items, dim)
            nn.init.normal_(self.user.weight, std=init_std)
            nn.init.normal_(self.item.weight, std=init_std)
            self.bias = nn.Embedding(self.n_items, 1) if item_bias else None
            if self.bias is not None:
                nn.init.zeros_(self.bias.weight)

    def _pair_score(self, p: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p: (B, d) user rows; item: (B,) or (B, N) → scores of the same shape, and the item rows."""
        q = self.item(item)
        if item.dim() == 2:
            s = (p.unsqueeze(1) * q).sum(-1)
        else:
            s = (p * q).sum(-1)
        if self.bias is not None:
            s = s + self.bias(item).squeeze(-1)
        return s, q

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p = self.user(batch["user"])
        s_pos, q_pos = self._pair_score(p, batch["pos"])
        s_neg, q_neg = self._pair_score(p, batch["neg"])
        reg = l2(p, q_pos, q_neg) + (l2(self.bias(batch["pos"]), self.bias(batch["neg"])) if self.bias is not None else 0)
        return (bpr_loss_sum(s_pos, s_neg) + self.reg * reg) / p.shape[0]

    def _score(self, user_idx, item_idx, features):
        return self._pair_score(self.user(user_idx), item_idx)[0]
