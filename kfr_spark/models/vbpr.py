"""VBPR (He & McAuley, AAAI 2016), the KFRCI paper's strongest baseline, over key frames.

x̂_uk = β_k + γ_u · γ_k + θ_u · (E f_k) + β' · f_k

(the global offset α and user bias β_u of the paper cancel in the pairwise loss and are left out; `item_bias=False`
drops β_k too). Loss −Σ ln σ(x̂_ui − x̂_uj) + `reg`·(‖γ_u‖² + ‖θ_u‖² + ‖γ_i‖² + ‖γ_j‖² + β_i² + β_j²)
+ `reg_visual`·(‖E‖² + ‖β'‖²), divided by the batch size. A frame never seen in training keeps γ_k at its small
initial value and β_k = 0, so it is ranked by the visual terms: that is what serves new videos.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from kfr_spark.models.base import KeyFrameRecommender, bpr_loss_sum, l2


class VBPR(KeyFrameRecommender):
    name = "vbpr"
    item_tables = ("gamma_item", "bias")
    uses_images = True
    objective = "pairwise"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, visual_dim: int | None = None, reg: float = 1e-4,
                 reg_visual: float = 0.0, item_bias: bool = True, init_std: float = 0.1) -> None:
        visual_dim = dim if visual_dim is None else visual_dim
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, dim=dim,
                         visual_dim=visual_dim, reg=reg, reg_visual=reg_visual, item_bias=item_bias,
                         init_std=init_std)
        self.reg, self.reg_visual = float(reg), float(reg_visual)
        with self._seeded():
            self.gamma_user = nn.Embedding(self.n_users, dim)
            self.gamma_item = nn.Embedding(self.n_items, dim)
            self.theta_user = nn.Embedding(self.n_users, visual_dim)
            for emb in (self.gamma_user, self.gamma_item, self.theta_user):
                nn.init.normal_(emb.weight, std=init_std)
            self.E = nn.Linear(self.feature_dim, visual_dim, bias=False)
            self.beta_visual = nn.Linear(self.feature_dim, 1, bias=False)
            nn.init.zeros_(self.beta_visual.weight)
            self.bias = nn.Embedding(self.n_items, 1) if item_bias else None
            if self.bias is not None:
                nn.init.zeros_(self.bias.weight)

    def _item_score(self, gu: torch.Tensor, tu: torch.Tensor, item: torch.Tensor, feats: torch.Tensor):
        """gu, tu: (B, ·) user rows; item (B,) or (B, N); feats (B, F) or (B, N, F)."""
        if item.dim() == 2:
            gu, tu = gu.unsqueeze(1), tu.unsqueeze(1)
        gi = self.gamma_item(item)
        s = (gu * gi).sum(-1) + (tu * self.E(feats)).sum(-1) + self.beta_visual(feats).squeeze(-1)
        rows = [gi]
        if self.bias is not None:
            b = self.bias(item).squeeze(-1)
            s = s + b
            rows.append(b)
        return s, rows

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        user = batch["user"]
        gu, tu = self.gamma_user(user), self.theta_user(user)
        s_pos, rows_pos = self._item_score(gu, tu, batch["pos"], batch["pos_features"])
        s_neg, rows_neg = self._item_score(gu, tu, batch["neg"], batch["neg_features"])
        total = bpr_loss_sum(s_pos, s_neg) + self.reg * l2(gu, tu, *rows_pos, *rows_neg)
        if self.reg_visual:
            total = total + self.reg_visual * l2(self.E.weight, self.beta_visual.weight)
        return total / user.shape[0]

    def _score(self, user_idx, item_idx, features):
        return self._item_score(self.gamma_user(user_idx), self.theta_user(user_idx), item_idx, features)[0]
