"""JIFR — joint item and key frame recommendation (Wu et al., IJCAI 2019), as restated in shared/MODELS.md.

Trained on item-level feedback only (user a liked / commented on video i); scores key frames without any user–frame
data, through the user's visual profile w_a.

* Collaborative space: u_a, v_i ∈ R^d1 (`dim`). Visual space: w_a ∈ R^d2 (`visual_dim`), frame P c_k ∈ R^d2.
* Visual content attention over the frames S_i of item i: a_ik = w1 · f(W1 [v_i ; W0 c_k]), α_ik = softmax over
  k ∈ S_i (masked), x_i = Σ_k α_ik P c_k. W0 reduces c_k to `reduce_dim` (default d2); W1 has `att_dim` outputs
  (default d1) and a bias; f = ReLU.
* Hybrid rating attention: b1 = w2 · f(W2 [u_a ; v_i]), b2 = w2 · f(W2 [w_a ; x_i]) (one W2, w2 shared, so d1 = d2),
  (β1, β2) = softmax(b1, b2), r̂_ai = β1 u_a·v_i + β2 w_a·x_i.
* Loss: −Σ ln σ(r̂_ai − r̂_aj) + λ(‖u_a‖² + ‖w_a‖² + ‖v_i‖² + ‖v_j‖²) over the batch, divided by the batch size
  (λ = `reg`, paper 0.001; the paper samples 10 negatives per positive: batch["neg"] of shape (B, 10)).
* Key frame score: l̂_ak = w_a · (P c_k) — `score_frames(user_idx, frame_features)`.

JIFR_NA: no attention — x_i = mean of P c_k over the item's frames, β1 = β2 = 1/2 (VBPR with item visuals averaged
from frames). `content_attention` / `rating_attention` switch the two attentions separately (the paper's Table 2).

Items' frames are model buffers, set once with `set_item_frames` (and saved with the model): a flat frame matrix
`frame_features` (n_frames, F), `item_frames` (n_items, max_frames) indices into it, and `item_mask`. A batch's
cost is O(distinct items in the batch × max_frames × F).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from kfr_spark.models.base import KeyFrameRecommender, bpr_loss_sum, l2

_FRAME_BUFFERS = ("frame_features", "item_frames", "item_mask")


class JIFR(KeyFrameRecommender):
    name = "jifr"
    item_tables = ("V",)
    uses_images = True
    level = "item"
    objective = "pairwise"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 32, visual_dim: int | None = None, att_dim: int | None = None,
                 reduce_dim: int | None = None, reg: float = 1e-3, content_attention: bool = True,
                 rating_attention: bool = True, init_std: float = 0.1) -> None:
        visual_dim = dim if visual_dim is None else visual_dim
        att_dim = dim if att_dim is None else att_dim
        reduce_dim = visual_dim if reduce_dim is None else reduce_dim
        if rating_attention and visual_dim != dim:
            raise ValueError("the rating attention shares W2 between [u_a; v_i] and [w_a; x_i]: visual_dim must "
                             f"equal dim (got {visual_dim} and {dim})")
        hyper = dict(dim=dim, visual_dim=visual_dim, att_dim=att_dim, reduce_dim=reduce_dim, reg=reg,
                     content_attention=content_attention, rating_attention=rating_attention, init_std=init_std)
        if type(self) is not JIFR:  # subclasses fix the attention switches and do not take them as arguments
            hyper.pop("content_attention"), hyper.pop("rating_attention")
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, **hyper)
        self.dim, self.visual_dim, self.reg = int(dim), int(visual_dim), float(reg)
        self.content_attention, self.rating_attention = bool(content_attention), bool(rating_attention)
        with self._seeded():
            self.U = nn.Embedding(self.n_users, dim)
            self.V = nn.Embedding(self.n_items, dim)
            self.Wv = nn.Embedding(self.n_users, visual_dim)  # w_a, the user's visual profile
            for emb in (self.U, self.V, self.Wv):
                nn.init.normal_(emb.weight, std=init_std)
            self.P = nn.Linear(self.feature_dim, visual_dim, bias=False)
            if self.content_attention:
                self.W0 = nn.Linear(self.feature_dim, reduce_dim, bias=False)
                self.W1 = nn.Linear(dim + reduce_dim, att_dim)
                self.w1 = nn.Linear(att_dim, 1, bias=False)
            if self.rating_attention:
                self.W2 = nn.Linear(2 * dim, att_dim)
                self.w2 = nn.Linear(att_dim, 1, bias=False)
        self.register_buffer("frame_features", torch.zeros(0, self.feature_dim))
        self.register_buffer("item_frames", torch.zeros(self.n_items, 0, dtype=torch.long))
        self.register_buffer("item_mask", torch.zeros(self.n_items, 0, dtype=torch.bool))

    # -- data ----------------------------------------------------------------------------------------------------
    def set_item_frames(self, frame_features: Any, mask: Any | None = None, *, frame_index: Any | None = None) -> JIFR:
        """Every item's frames. Either `frame_features` (n_items, max_frames, F) padded, with `mask`
        (n_items, max_frames) bool (None: all valid); or a flat `frame_features` (n_frames, F) with
        `frame_index` (n_items, max_frames) long into it and `mask` (None: frame_index >= 0)."""
        device = self._device()
        feats = torch.as_tensor(frame_features, dtype=torch.float32)
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"frame features are {feats.shape[-1]}-d, the model takes {self.feature_dim}")
        if frame_index is None:
            if feats.dim() != 3 or feats.shape[0] != self.n_items:
                raise ValueError(f"frame_features must be (n_items={self.n_items}, max_frames, F), got {tuple(feats.shape)}")
            mask = torch.ones(feats.shape[:2], dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
            if mask.shape != feats.shape[:2]:
                raise ValueError(f"mask {tuple(mask.shape)} does not match frame_features {tuple(feats.shape[:2])}")
            index = torch.zeros(mask.shape, dtype=torch.long)
            index[mask] = torch.arange(int(mask.sum()))
            flat = feats[mask]
        else:
            if feats.dim() != 2:
                raise ValueError("with frame_index, frame_features must be (n_frames, F)")
            index = torch.as_tensor(frame_index, dtype=torch.long)
            if index.dim() != 2 or index.shape[0] != self.n_items:
                raise ValueError(f"frame_index must be (n_items={self.n_items}, max_frames)")
            mask = index >= 0 if mask is None else torch.as_tensor(mask).bool()
            if mask.shape != index.shape:
                raise ValueError("mask does not match frame_index")
            index = torch.where(mask, index, torch.zeros_like(index))
            if index.numel() and (index.max() >= feats.shape[0] or index.min() < 0):
                raise IndexError("frame_index points outside frame_features")
            flat = feats
        self.frame_features = flat.to(device)
        self.item_frames = index.to(device)
        self.item_mask = mask.to(device)
        return self

    def _prepare_load(self, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        for name in _FRAME_BUFFERS:
            setattr(self, name, torch.empty_like(state_dict[name]))

    # -- the model -----------------------------------------------------------------------------------------------
    def item_visual(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_i for `items` (any shape) → (x (..., d2), the attention weights α (distinct items, max_frames) and the
        distinct items they belong to)."""
        if self.item_frames.shape[1] == 0:
            raise RuntimeError(f"{self.name}: call set_item_frames before training or scoring")
        uniq, inverse = torch.unique(items.reshape(-1), return_inverse=True)
        idx, mask = self.item_frames[uniq], self.item_mask[uniq]
        c = self.frame_features[idx]  # (I, M, F)
        pc = self.P(c)  # (I, M, d2)
        if self.content_attention:
            v = self.V(uniq).unsqueeze(1).expand(-1, c.shape[1], -1)
            a = self.w1(F.relu(self.W1(torch.cat([v, self.W0(c)], -1)))).squeeze(-1)  # (I, M)
            alpha = torch.softmax(a.masked_fill(~mask, -1e30), -1) * mask  # an item without frames: all zero
        else:
            alpha = mask.to(pc.dtype) / mask.sum(-1, keepdim=True).clamp(min=1)
        x = (alpha.unsqueeze(-1) * pc).sum(1)
        return x[inverse].reshape(*items.shape, -1), alpha, uniq

    def _rate(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """user (B,), item (B,) or (B, N) → r̂ of item's shape, and the item's v rows."""
        u, w, v = self.U(user), self.Wv(user), self.V(item)
        x = self.item_visual(item)[0]
        if item.dim() == user.dim() + 1:
            u, w = u.unsqueeze(1).expand_as(v), w.unsqueeze(1).expand_as(x)
        cf, vis = (u * v).sum(-1), (w * x).sum(-1)
        if self.rating_attention:
            b1 = self.w2(F.relu(self.W2(torch.cat([u, v], -1)))).squeeze(-1)
            b2 = self.w2(F.relu(self.W2(torch.cat([w, x], -1)))).squeeze(-1)
            beta = torch.softmax(torch.stack([b1, b2], -1), -1)
            return beta[..., 0] * cf + beta[..., 1] * vis, v
        return 0.5 * (cf + vis), v

    def rating_weights(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """(β1, β2) per (user, item) pair, shape (..., 2); (1/2, 1/2) without the rating attention."""
        with torch.no_grad():
            u, w, v = self.U(user), self.Wv(user), self.V(item)
            x = self.item_visual(item)[0]
            if not self.rating_attention:
                return torch.full((*item.shape, 2), 0.5, device=x.device)
            b1 = self.w2(F.relu(self.W2(torch.cat([u, v], -1)))).squeeze(-1)
            b2 = self.w2(F.relu(self.W2(torch.cat([w, x], -1)))).squeeze(-1)
            return torch.softmax(torch.stack([b1, b2], -1), -1)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        user = batch["user"]
        r_pos, v_pos = self._rate(user, batch["pos"])
        r_neg, v_neg = self._rate(user, batch["neg"])
        reg = l2(self.U(user), self.Wv(user), v_pos, v_neg)
        return (bpr_loss_sum(r_pos, r_neg) + self.reg * reg) / user.shape[0]

    def _score(self, user_idx, item_idx, features):
        if features is not None:
            raise ValueError(f"{self.name} scores items from its own item frames: pass no features "
                             "(score_frames scores key frames)")
        return self._rate(user_idx, item_idx)[0]

    def score_frames(self, user_idx: Any, frame_features: Any) -> torch.Tensor:
        """l̂_ak = w_a · (P c_k): `user_idx` (N,) or a single user, `frame_features` (N, F) or (M, F) → (N,)/(M,)."""
        device = self._device()
        user_idx = torch.as_tensor(user_idx, dtype=torch.long, device=device).reshape(-1)
        feats = torch.as_tensor(frame_features, dtype=torch.float32, device=device).reshape(-1, self.feature_dim)
        with torch.no_grad():
            w = self.Wv(user_idx)
            return (w * self.P(feats)).sum(-1)


    def _frame_side(self) -> torch.Tensor:
        with torch.no_grad():
            return self.P(self.frame_features)

    def frame_scorer(self, features: Any | None = None):
        """l̂_ak = w_a · (P c_k) with P c_k computed once for every frame the model holds; `features` is not needed
        (the frames travel inside the model) and is ignored."""
        projected = self._frame_side()

        def score(users, frames):
            with torch.no_grad():
                w = self.Wv(torch.as_tensor(users, dtype=torch.long, device=projected.device))
                return (w * projected[torch.as_tensor(frames, dtype=torch.long)]).sum(-1).cpu().numpy()

        return score

    def frame_block_scorer(self, features: Any | None = None):
        """W_users (U, d) @ (P c_frames)ᵀ (d, K): one matrix product per block."""
        projected = self._frame_side()

        def score(users, frames):
            with torch.no_grad():
                w = self.Wv(torch.as_tensor(users, dtype=torch.long, device=projected.device))
                return (w @ projected[torch.as_tensor(frames, dtype=torch.long)].T).cpu().numpy()

        return score


class JIFR_NA(JIFR):  # noqa: N801 (the paper's name)
    name = "jifr_na"

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 32, visual_dim: int | None = None, att_dim: int | None = None,
                 reduce_dim: int | None = None, reg: float = 1e-3, init_std: float = 0.1) -> None:
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, dim=dim,
                         visual_dim=visual_dim, att_dim=att_dim, reduce_dim=reduce_dim, reg=reg,
                         content_attention=False, rating_attention=False, init_std=init_std)
