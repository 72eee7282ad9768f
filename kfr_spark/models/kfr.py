"""The KFRCI paper's key frame recommenders (Chen et al., SIGIR 2017), as restated in shared/MODELS.md.

All three are pointwise over (user u, key frame k) pairs, with ŷ_uk = σ(score):

* KFRI (image):  q*_k = q_k ⊙ (W_img v_k),  ŷ = σ(p_u · q*_k),  loss = BCE over O+ ∪ O-.
* KFRC (text):   e0 = p_u ⊙ q_k,  ŷ = σ(p_u · q_k) (= σ(Σ e0)); an LSTM decodes the user's comment on k with input
                 [embed(w_{t-1}) ; e0] at *every* step, p(w_t | ...) = softmax(W_out h_t);
                 loss = −Σ_t log p(w_t | ...) (pairs with a comment) + BCE.
* KFRCI:         e0 = p_u ⊙ q*_k,  e_j = ReLU(W_j e_{j-1}) for j = 1..D (no bias, as in Eq. 10),
                 ŷ = σ(w_out · e_D); the LSTM's extra input at every step is e_init (`init` ∈ {0..D});
                 loss L = α·LM + (1 − α)·BCE.

The LM term follows Eq. 8/12: a comment w_0 … w_{s-1} contributes Σ_{t=1}^{s-1} log p(w_t | e, w_0..w_{t-1}) — the
first word is the decoder's first input, not predicted (`lm_bos=True` instead prepends a learned start symbol so
all s words are predicted, which keeps one-word comments in the LM). The LM runs over every row with a comment,
whatever its label: the paper's sum is over O+ ∪ O-, and O- includes negatively commented frames.

Normalisation (`lm_norm`), with B the batch size:

* "pair" (default): L_batch = −(1/B)·[α Σ_rows Σ_t log p(w_t|…) + (1 − α) Σ_rows (y log ŷ + (1 − y) log(1 − ŷ))],
  i.e. exactly −L3/B of the paper's Eq. 12 on the batch: the paper's balance between the two terms is kept
  (longer comments weigh more, as in the paper's sum).
* "token": L_batch = α·(mean negative log-likelihood per predicted word) + (1 − α)·(mean BCE per row); the LM term
  no longer grows with comment length.

KFRC's loss is the unweighted sum (`alpha=None`), or α-weighted like KFRCI when `alpha` is given.
`reg` adds reg·(‖p_u‖² + ‖q_k‖²)/B over the batch's rows (the paper uses none; default 0).
KFRCI's tower uses leaky ReLU by default, not Eq. 10's ReLU (`activation="relu"` restores it): a bias-free ReLU
tower can die (see ACTIVATIONS). Checkpoints written before the option existed load as "relu", as they were trained.

Initialisation: p_u ~ N(0, init_std²). q_k ~ U(0, 1) by default where it is merged with the image (KFRI, KFRCI: the
paper initialises from U(0, 1); a positive q_k also keeps the sign of W_img v_k for frames never seen in training),
N(0, init_std²) otherwise (KFRC); `item_init="ones"` starts q*_k at exactly W_img v_k. Everything else: torch
defaults. All of it is a function of `seed` only.

Frames never seen in training keep their random q_k, which multiplies the image signal by noise: after training,
`model.fill_unseen_items(seen_frames)` sets them to the mean learned q_k, so a new video's frames are ranked by
W_img v_k through the learned user and tower (on the planted tests: cold-frame NDCG@5 ≈ 0.6–0.75 → 0.9–1.0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import torch
from torch import nn
from torch.nn import functional as F

from kfr_spark.models.base import KeyFrameRecommender, bce_with_logits_sum, l2

PAPER_WIDTHS = (40, 20, 10, 5)  # the paper's tower for d = 100
# The tower's non-linearity. "relu" is Eq. 10's. A bias-free ReLU tower can die: once W_D maps every e_{D-1} to
# ≤ 0, e_D = 0 for every pair, ŷ = σ(0) for every frame and no gradient reaches the tower again, while the LM term
# keeps improving the loss (seen on the benchmark dataset with like_weight 20: NDCG@10 fell to a random ranking's).
# "leaky_relu" (slope 0.01) keeps a gradient through every unit, so a unit pushed below zero can come back.
ACTIVATIONS = {"relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.01)}


def default_widths(dim: int, depth: int) -> list[int]:
    """The paper's widths scaled to d: 0.4·d, 0.2·d, 0.1·d, ... (d = 100 → 40, 20, 10, 5), at least 4."""
    return [max(4, round(dim * 0.4 / 2**j)) for j in range(depth)]


class _KFRModel(KeyFrameRecommender):
    """Shared body of KFRI, KFRC, KFRCI; the subclasses choose the parts."""

    objective = "pointwise"
    item_tables = ("item",)
    learned_output: bool = False  # ŷ = σ(w_out · e_D) (KFRCI) rather than σ(Σ e0) (KFRI, KFRC)

    def _build(self, *, dim: int, layers: Sequence[int], init: int, word_dim: int, hidden: int | None,
               alpha: float | None, lm_norm: str, lm_bos: bool, reg: float, init_std: float, item_init: str,
               activation: str = "relu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {activation!r}")
        self.activation = ACTIVATIONS[activation]
        if lm_norm not in ("pair", "token"):
            raise ValueError(f"lm_norm must be 'pair' or 'token', not {lm_norm!r}")
        if item_init not in ("uniform", "normal", "ones"):
            raise ValueError(f"item_init must be 'uniform', 'normal' or 'ones', not {item_init!r}")
        if not 0 <= init <= len(layers):
            raise ValueError(f"init must be in 0..{len(layers)} (the number of non-linear layers), not {init}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {alpha}")
        self.dim, self.widths, self.init = int(dim), [int(w) for w in layers], int(init)
        self.alpha, self.lm_norm, self.lm_bos, self.reg = alpha, lm_norm, bool(lm_bos), float(reg)
        with self._seeded():
            self.user = nn.Embedding(self.n_users, dim)
            self.item = nn.Embedding(self.n_items, dim)
            nn.init.normal_(self.user.weight, std=init_std)
            if item_init == "uniform":
                nn.init.uniform_(self.item.weight, 0.0, 1.0)
            elif item_init == "ones":
                nn.init.ones_(self.item.weight)
            else:
                nn.init.normal_(self.item.weight, std=init_std)
            self.W_img = nn.Linear(self.feature_dim, dim, bias=False) if self.uses_images else None
            sizes = [dim, *self.widths]
            self.tower = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
            self.w_out = nn.Linear(sizes[-1], 1, bias=False) if self.learned_output else None
            if self.uses_text:
                extra = sizes[self.init]
                self.hidden = int(hidden or dim)
                self.word_emb = nn.Embedding(self.vocab_size + (1 if lm_bos else 0), word_dim, padding_idx=0)
                self.lstm = nn.LSTM(word_dim + extra, self.hidden, batch_first=True)
                self.W_out = nn.Linear(self.hidden, self.vocab_size)

    # -- the preference embeddings -----------------------------------------------------------------------------
    def preference_embeddings(self, user: torch.Tensor, frame: torch.Tensor, features: torch.Tensor | None = None
                              ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """[e0, e1, ..., eD], and the batch's p_u and q_k rows."""
        p, q = self.user(user), self.item(frame)
        if self.W_img is not None and features is None:
            raise ValueError(f"{self.name} needs the key frames' features")
        q_star = q * self.W_img(features) if self.W_img is not None else q
        es = [p * q_star]
        for layer in self.tower:
            es.append(self.activation(layer(es[-1])))
        return es, p, q

    def _logit_from(self, es: list[torch.Tensor]) -> torch.Tensor:
        return self.w_out(es[-1]).squeeze(-1) if self.w_out is not None else es[-1].sum(-1)

    def _score(self, user_idx, item_idx, features):
        es, _, _ = self.preference_embeddings(user_idx, item_idx, features)
        return self._logit_from(es)

    def _frame_side(self, features) -> torch.Tensor:
        """q*_k = q_k ⊙ W_img v_k for every frame (in chunks, from a memory map): what no user changes."""
        import numpy as np

        if self.W_img is not None and features is None:
            raise ValueError(f"{self.name} needs the key frames' features")
        with torch.no_grad():
            if self.W_img is None:
                return self.item.weight.detach()
            n = min(self.n_items, len(features))
            return torch.cat([self.item.weight[a:b] * self.W_img(torch.as_tensor(np.asarray(features[a:b]),
                                                                                 dtype=torch.float32))
                              for a in range(0, n, 65536) for b in [min(n, a + 65536)]])

    def _tower_logit(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.tower:
            x = self.activation(layer(x))
        return self._logit_from([x])

    def frame_scorer(self, features=None):
        """q*_k once per frame, then per pair only p_u ⊙ q*_k and the tower: batch scoring costs O(dim²) per pair
        instead of O(F·dim)."""
        q_star = self._frame_side(features)

        def score(users, frames):
            with torch.no_grad():
                x = self.user(torch.as_tensor(users, dtype=torch.long)) * q_star[torch.as_tensor(frames, dtype=torch.long)]
                return self._tower_logit(x).numpy()

        return score

    def frame_block_scorer(self, features=None):
        """p_u ⊙ q*_k for a block of users × one video's frames as one broadcast product (no per-pair gather)."""
        q_star = self._frame_side(features)

        def score(users, frames):
            with torch.no_grad():
                p = self.user(torch.as_tensor(users, dtype=torch.long))
                q = q_star[torch.as_tensor(frames, dtype=torch.long)]
                return self._tower_logit(p[:, None, :] * q[None, :, :]).numpy()

        return score

    # -- the comment decoder -----------------------------------------------------------------------------------
    def _decoder_io(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder input words, target words) for right-padded `tokens`."""
        if self.lm_bos:
            bos = torch.full_like(tokens[:, :1], self.vocab_size)
            return torch.cat([bos, tokens[:, :-1]], 1), tokens
        return tokens[:, :-1], tokens[:, 1:]

    def decoder_inputs(self, e_init: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The LSTM's input sequence: step t is [embed(w_{t-1}) ; e_init] — e_init at every step."""
        words, _ = self._decoder_io(tokens)
        emb = self.word_emb(words)
        return torch.cat([emb, e_init.unsqueeze(1).expand(-1, emb.shape[1], -1)], -1)

    def decode_hidden(self, e_init: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """h_1 … h_T' (B, T', hidden), from a zero initial state."""
        out, _ = self.lstm(self.decoder_inputs(e_init, tokens))
        return out

    def comment_loglik(self, e_init: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: Σ_t log p(w_t | e_init, w_<t) and the number of predicted words."""
        _, targets = self._decoder_io(tokens)
        valid = targets != 0
        loglik = torch.zeros(tokens.shape[0], device=tokens.device)
        if targets.shape[1] == 0 or not bool(valid.any()):
            return loglik, valid.sum(1)
        h = self.decode_hidden(e_init, tokens)
        rows, steps = valid.nonzero(as_tuple=True)
        nll = F.cross_entropy(self.W_out(h[rows, steps]), targets[rows, steps], reduction="none")
        return loglik.index_add(0, rows, -nll), valid.sum(1)

    # -- the objective -----------------------------------------------------------------------------------------
    def loss_terms(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's sums: "bce" = −Σ [y log ŷ + (1−y) log(1−ŷ)], "lm" = −Σ log p(words), "tokens", "l2"."""
        es, p, q = self.preference_embeddings(batch["user"], batch["frame"], batch.get("features"))
        terms = {"bce": bce_with_logits_sum(self._logit_from(es), batch["label"]), "l2": l2(p, q),
                 "lm": torch.zeros((), device=p.device), "tokens": torch.zeros((), device=p.device)}
        if self.uses_text:
            tokens = batch["tokens"]
            if tokens.shape[1] > 1 and bool(((tokens[:, 1:] != 0) & (tokens[:, :-1] == 0)).any()):
                raise ValueError("tokens must be right-padded with 0 (a word follows a padding position)")
            has_text = batch.get("has_text")
            has_text = tokens[:, 0] != 0 if has_text is None else has_text.bool() & (tokens[:, 0] != 0)
            rows = has_text.nonzero(as_tuple=True)[0]
            if rows.numel():
                loglik, count = self.comment_loglik(es[self.init][rows], tokens[rows])
                terms["lm"], terms["tokens"] = -loglik.sum(), count.sum().to(p.dtype)
        return terms

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        t = self.loss_terms(batch)
        n = batch["user"].shape[0]
        a_lm, a_bce = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        if not self.uses_text:
            a_lm, a_bce = 0.0, 1.0
        if self.lm_norm == "token":
            lm = t["lm"] / t["tokens"].clamp(min=1.0)
        else:
            lm = t["lm"] / n
        return a_lm * lm + (a_bce * t["bce"] + self.reg * t["l2"]) / n


class KFRI(_KFRModel):
    name = "kfri"
    uses_images = True

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, reg: float = 0.0, init_std: float = 0.1, item_init: str = "uniform"
                 ) -> None:
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, dim=dim,
                         reg=reg, init_std=init_std, item_init=item_init)
        self._build(dim=dim, layers=[], init=0, word_dim=0, hidden=None, alpha=None, lm_norm="pair", lm_bos=False,
                    reg=reg, init_std=init_std, item_init=item_init)


class KFRC(_KFRModel):
    name = "kfrc"
    uses_text = True

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, word_dim: int = 32, hidden: int | None = None,
                 alpha: float | None = None, lm_norm: str = "pair", lm_bos: bool = False, reg: float = 0.0,
                 init_std: float = 0.1, item_init: str = "normal") -> None:
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, dim=dim,
                         word_dim=word_dim, hidden=hidden, alpha=alpha, lm_norm=lm_norm, lm_bos=lm_bos, reg=reg,
                         init_std=init_std, item_init=item_init)
        self._build(dim=dim, layers=[], init=0, word_dim=word_dim, hidden=hidden, alpha=alpha, lm_norm=lm_norm,
                    lm_bos=lm_bos, reg=reg, init_std=init_std, item_init=item_init)


class KFRCI(_KFRModel):
    name = "kfrci"
    uses_images = True
    uses_text = True
    learned_output = True
    legacy_hyper = {"activation": "relu"}  # every KFRCI before the option was trained with Eq. 10's ReLU

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None, vocab_size: int | None = None,
                 seed: int = 0, dim: int = 64, depth: int = 3, layers: Sequence[int] | None = None, init: int = 1,
                 alpha: float = 0.4, word_dim: int = 32, hidden: int | None = None, lm_norm: str = "pair",
                 lm_bos: bool = False, reg: float = 0.0, init_std: float = 0.1, item_init: str = "uniform",
                 activation: str = "leaky_relu") -> None:
        widths = default_widths(dim, depth) if layers is None else [int(w) for w in layers]
        super().__init__(n_users, n_items, feature_dim=feature_dim, vocab_size=vocab_size, seed=seed, dim=dim,
                         depth=len(widths), layers=widths, init=init, alpha=alpha, word_dim=word_dim, hidden=hidden,
                         lm_norm=lm_norm, lm_bos=lm_bos, reg=reg, init_std=init_std, item_init=item_init,
                         activation=activation)
        self._build(dim=dim, layers=widths, init=init, word_dim=word_dim, hidden=hidden, alpha=alpha,
                    lm_norm=lm_norm, lm_bos=lm_bos, reg=reg, init_std=init_std, item_init=item_init,
                    activation=activation)

    @property
    def e_init_dim(self) -> int:
        return ([self.dim, *self.widths])[self.init]

