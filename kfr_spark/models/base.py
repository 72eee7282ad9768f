"""The one interface every recommender implements, checkpoint files, and a plain single-process training loop.

Pure torch (no Spark). The distributed loop (Petastorm → Horovod) calls the same `model.loss(batch)`; it can build
its optimizer with `make_optimizer` so both loops train with the same settings.

Batch conventions (`dict[str, torch.Tensor]`; `as_batch` converts a dict of numpy arrays, e.g. from Petastorm):

Frame-level, pointwise (`objective == "pointwise"`: PMF, KFRI, KFRC, KFRCI), one row per (user, key frame) pair:

    user      (B,)   long   user index
    frame     (B,)   long   key frame index (< n_items)
    label     (B,)   float  1.0 = positive (commented, polarity 1); 0.0 = sampled negative (O-)
    features  (B, F) float  the key frame's CNN vector            (uses_images: KFRI, KFRCI)
    tokens    (B, T) long   the user's comment words on that frame, right-padded with 0 (text.PAD_ID);
                            an all-zero row = no comment            (uses_text: KFRC, KFRCI)
    has_text  (B,)   bool   the row has a comment; optional, default `tokens[:, 0] != 0`

Pairwise (`objective == "pairwise"`: BPR, VBPR at frame level; JIFR, JIFR_NA at item level):

    user          (B,)                long
    pos           (B,)                long   an observed positive
    neg           (B,) or (B, N)      long   sampled negatives (N per positive: JIFR samples 10)
    pos_features  (B, F)              float  VBPR only: the positive's feature vector
    neg_features  (B, F) or (B, N, F) float  VBPR only: the negatives' feature vectors

JIFR's items are made of frames: the model holds every item's frames as buffers set once with
`model.set_item_frames(...)`, so its batches carry indices only.

MostPopular (`objective == "counts"`) has no gradient: `model.fit_counts(frame_idx, counts)`.

`score(user_idx, item_idx, features)` is vectorised and broadcasts `user_idx` against `item_idx` (one user against
many frames: a 0-d or 1-element `user_idx`; a users × frames grid: (U, 1) and (1, I), with `features` (I, F));
it runs under `torch.no_grad()` and returns logits (higher = better; `sigmoid(score)` is ŷ for the pointwise
models). Frames never seen in training: see `fill_unseen_items`.

Checkpoints: `model.save(path)` writes `torch.save({"state_dict", "hyper", "meta"})` holding only tensors and plain
Python values; `KeyFrameRecommender.load(path)` reads it with `torch.load(weights_only=True)`, so a file that
carries any other pickled object is refused before anything in it runs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from kfr_spark.models.optim import DeferredAdam, clip_grad_norm_, flush, use_sparse_gradients, watch

CHECKPOINT_FORMAT = 1


def _check_plain(value: Any, where: str) -> Any:
    """Hyper-parameters must survive `torch.load(weights_only=True)`: plain scalars, lists and str-keyed dicts."""
    if value is None:
        return None
    for kind in (bool, int, float, str):  # subclasses (torch's TorchVersion, numpy scalars…) become the plain type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _check_plain(v, where) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{where}: {value!r} ({type(value).__name__}) is not a plain value (int/float/str/bool/None/list/dict)")


class KeyFrameRecommender(nn.Module):
    """Base class: see the module docstring for batch conventions."""

    name: ClassVar[str] = "base"
    uses_images: ClassVar[bool] = False
    uses_text: ClassVar[bool] = False
    level: ClassVar[Literal["frame", "item"]] = "frame"
    objective: ClassVar[Literal["pointwise", "pairwise", "counts"]] = "pointwise"
    # Values of hyper-parameters added after checkpoints were written, as those checkpoints were trained: a
    # checkpoint whose hyper lacks a key loads with this value, not with a default that has since changed.
    legacy_hyper: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_users: int, n_items: int, *, feature_dim: int | None = None,
                 vocab_size: int | None = None, seed: int = 0, **hyper: Any) -> None:
        super().__init__()
        if n_users < 1 or n_items < 1:
            raise ValueError(f"{self.name}: n_users and n_items must be positive (got {n_users}, {n_items})")
        if self.uses_images and not feature_dim:
            raise ValueError(f"{self.name} uses image features: feature_dim is required")
        if self.uses_text and not vocab_size:
            raise ValueError(f"{self.name} uses comment text: vocab_size is required")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.feature_dim = None if feature_dim is None else int(feature_dim)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.seed = int(seed)
        self.hyper: dict[str, Any] = _check_plain(
            {"n_users": self.n_users, "n_items": self.n_items, "feature_dim": self.feature_dim,
             "vocab_size": self.vocab_size, "seed": self.seed, **hyper}, f"{self.name} hyper")

    # -- the interface -------------------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, user_idx: torch.Tensor, item_idx: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def score(self, user_idx: torch.Tensor, item_idx: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores for (user, item) pairs, higher = better. `user_idx` and `item_idx` broadcast: one user against many
        frames (0-d or (1,) users), or a (U, 1) × (1, I) grid → (U, I). `features` has one row per entry of
        `item_idx` as given (before broadcasting), e.g. (I, F) for the grid."""
        device = self._device()
        user_idx = torch.as_tensor(user_idx, dtype=torch.long, device=device)
        items_given = torch.as_tensor(item_idx, dtype=torch.long, device=device)
        user_idx, item_idx = torch.broadcast_tensors(user_idx, items_given)
        shape = item_idx.shape
        if features is not None:
            features = torch.as_tensor(features, dtype=torch.float32, device=device)
            features = features.reshape(-1, features.shape[-1])
            if features.shape[0] != items_given.numel():
                raise ValueError(f"features has {features.shape[0]} rows for {items_given.numel()} items")
            if items_given.shape != shape:  # repeat the rows along the broadcast
                rows = torch.arange(items_given.numel(), device=device).reshape(items_given.shape)
                features = features[rows.expand(shape).reshape(-1)]
        elif self.uses_images and self.level == "frame":
            raise ValueError(f"{self.name}.score needs the frames' features")
        with torch.no_grad():
            out = self._score(user_idx.reshape(-1), item_idx.reshape(-1), features)
        return out.reshape(shape)

    def frame_scorer(self, features: Any | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A function (users (N,), frames (N,)) → scores (N,) for batch scoring of many pairs, where `features` is
        the (n_frames, F) key frame matrix (row = frame index; a memory map is fine). Models override it to compute
        what does not depend on the user once per frame instead of once per pair (the item tower)."""

        def score(users: np.ndarray, frames: np.ndarray) -> np.ndarray:
            feats = np.asarray(features[frames]) if self.uses_images and features is not None else None
            return self.score(users, frames, feats).numpy()

        return score

    def frame_block_scorer(self, features: Any | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A function (users (U,), frames (K,)) → scores (U, K): many users against the same key frames (one
        video's), the shape batch scoring has. This default scores the grid as pairs; models whose score is a
        product of a user side and a frame side override it with one broadcast product or matrix product."""
        pairs = self.frame_scorer(features)

        def score(users: np.ndarray, frames: np.ndarray) -> np.ndarray:
            grid = pairs(np.repeat(users, len(frames)), np.tile(frames, len(users)))
            return np.asarray(grid).reshape(len(users), len(frames))

        return score

    item_tables: ClassVar[tuple[str, ...]] = ()  # per-item embedding tables (attribute names), for fill_unseen_items

    def fill_unseen_items(self, seen: Any) -> int:
        """Give every item outside `seen` (item indices, or a bool mask of length n_items) the mean of the seen
        items' rows in each per-item table (latent factors, item biases). A row that training never touched holds
        its random initial value; the mean is the neutral guess, so a frame of a new video is then ranked by what
        the model knows of its content (the image pathway) instead of by noise — or tied with the other unseen
        frames where the model has no content input. Call after training, before scoring/saving. Returns the number
        of items filled."""
        mask = torch.zeros(self.n_items, dtype=torch.bool)
        seen_t = torch.as_tensor(np.asarray(seen))
        if seen_t.dtype == torch.bool:
            if seen_t.shape != (self.n_items,):
                raise ValueError(f"a seen mask must have n_items={self.n_items} entries")
            mask = seen_t.clone()
        else:
            mask[seen_t.long().reshape(-1)] = True
        if not bool(mask.any()):
            raise ValueError("no seen items")
        with torch.no_grad():
            for name in self.item_tables:
                table = getattr(self, name, None)
                if table is None:
                    continue
                w = table.weight
                m = mask.to(w.device)
                w[~m] = w[m].mean(0)
        return int((~mask).sum())

    # -- helpers for subclasses ----------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _seeded(self):
        """A context in which parameter initialisation is a function of `self.seed` only (global RNG untouched)."""
        return seeded(self.seed)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hyper.items())

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _extra_meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def resolve_hyper(cls, hyper: Mapping[str, Any]) -> dict[str, Any]:
        """`hyper` with every hyper-parameter the constructor would default filled in, so that a training's
        identity (its run key) changes when a default does. Raises ValueError naming a key the model lacks."""
        shape = {"feature_dim", "vocab_size", "seed"}  # keyword-only too, but passed apart from the hyper-parameters
        params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
                  if name not in shape and p.kind is inspect.Parameter.KEYWORD_ONLY}
        unknown = sorted(set(hyper) - set(params))
        if unknown:
            raise ValueError(f"{cls.name} has no hyper-parameter {', '.join(unknown)} (it has {', '.join(params)})")
        return {**{name: p.default for name, p in params.items()}, **hyper}

    def _prepare_load(self, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Resize data buffers (e.g. JIFR's item frames) to the saved shapes before `load_state_dict`."""

    def save(self, path: str | os.PathLike) -> None:
        meta = _check_plain({"name": self.name, "format": CHECKPOINT_FORMAT, "torch": torch.__version__,
                             **self._extra_meta()}, f"{self.name} meta")
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"state_dict": state, "hyper": dict(self.hyper), "meta": meta}, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> KeyFrameRecommender:
        """Rebuild a saved model. Refuses (pickle.UnpicklingError) a file holding anything but tensors/plain data."""
        ckpt = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        if not isinstance(ckpt, dict) or set(ckpt) != {"state_dict", "hyper", "meta"}:
            raise ValueError(f"{path}: not a kfr_spark model checkpoint")
        meta, hyper = ckpt["meta"], ckpt["hyper"]
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        from kfr_spark.models import MODELS

        try:
            klass = MODELS[meta["name"]]
        except KeyError:
            raise ValueError(f"{path}: unknown model {meta.get('name')!r}") from None
        if not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {meta['name']!r} model, not a {cls.name!r}")
        model = klass(**{**klass.legacy_hyper, **hyper})
        model._prepare_load(ckpt["state_dict"], meta)
        model.load_state_dict(ckpt["state_dict"], strict=True)
        return model


# -- batches ---------------------------------------------------------------------------------------------------------
def as_batch(arrays: Mapping[str, Any], device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """numpy (or lists) → tensors with the batch conventions' dtypes: integers → long, floats → float32
    (`label` included), booleans → bool."""
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if t.dtype == torch.bool:
            pass
        elif key == "label" or t.is_floating_point():
            t = t.to(torch.float32)
        else:
            t = t.to(torch.long)
        out[key] = t if device is None else t.to(device)
    return out


def l2(*tensors: torch.Tensor) -> torch.Tensor:
    """Σ‖t‖² over the given tensors (the batch's embedding rows)."""
    return torch.stack([t.pow(2).sum() for t in tensors]).sum()


@contextlib.contextmanager
def seeded(seed: int):
    """torch's CPU RNG and numpy's global one seeded for the block and restored after it. numpy's matters because
    Petastorm's row shuffling buffer draws from `np.random` itself, so a run's batches follow the seed only so."""
    numpy_state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)


# -- training --------------------------------------------------------------------------------------------------------
OPTIMIZERS = ("adam", "dense_adam", "sgd", "adagrad")


def make_optimizer(model: nn.Module, name: str = "adam", lr: float = 1e-2, weight_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """The optimizer `fit` and the distributed trainer use. "adam" switches the model's embedding tables to sparse
    gradients and trains with `DeferredAdam`, Adam's rule at the cost of the rows a batch touches rather than of the
    whole user and frame tables (see `kfr_spark.models.optim`; with `weight_decay`, which reaches every row every
    step, it is torch's dense Adam). "dense_adam" is torch's Adam over whole tables, the reference it is measured
    against. Prefer the models' own `reg` (L2 on the batch's embedding rows, as in the papers) to `weight_decay`,
    which decays every row, also those of frames never seen in training. Call `optim.flush(optimizer)` before the
    parameters are read."""
    deferred = name == "adam" and not weight_decay
    use_sparse_gradients(model, deferred)
    params = [p for p in model.parameters() if p.requires_grad]
    if deferred:
        optimizer = DeferredAdam(params, lr=lr)
    elif name in ("adam", "dense_adam"):
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    elif name == "adagrad":
        optimizer = torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    watch(optimizer, model)  # DeferredAdam hooks the lookups; any other removes an earlier optimizer's hooks
    return optimizer


def fit(model: KeyFrameRecommender, batches: Iterable[Mapping[str, Any]] | Callable[[int], Iterable[Mapping[str, Any]]],
        *, epochs: int = 10, lr: float = 1e-2, optimizer: str = "adam", weight_decay: float = 0.0,
        on_epoch_end: Callable[[int, KeyFrameRecommender, dict[str, float]], bool | None] | None = None,
        seed: int = 0, grad_clip: float | None = None) -> list[dict[str, float]]:
    """Plain single-process training. `batches` is re-iterated every epoch (a list, or any re-iterable), or is a
    callable `epoch -> iterable` (to draw fresh negatives per epoch). Batches may hold numpy arrays (converted by
    `as_batch`). `on_epoch_end(epoch, model, record)` may return True to stop early.
    Returns one record per epoch: {"epoch", "loss" (mean over batches), "batches", "examples"}."""
    if model.objective == "counts":
        raise TypeError(f"{model.name} has no gradient: use fit_counts")
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    device = model._device()
    history: list[dict[str, float]] = []
    with seeded(seed):
        model.train()
        for epoch in range(epochs):
            total, n_batches, n_examples = 0.0, 0, 0
            for raw in (batches(epoch) if callable(batches) else batches):
                batch = as_batch(raw, device)
                opt.zero_grad(set_to_none=True)
                loss = model.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{model.name}: loss became {loss.item()} at epoch {epoch}")
                loss.backward()
                if grad_clip is not None:
                    clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                total += float(loss.detach())
                n_batches += 1
                n_examples += int(batch["user"].shape[0])
            if n_batches == 0:
                raise ValueError(f"epoch {epoch} got no batches (a generator is spent after one epoch: pass a list "
                                 "or a callable epoch -> batches)")
            flush(opt)  # the epoch's deferred row updates, before anyone reads the model
            record = {"epoch": epoch, "loss": total / n_batches, "batches": n_batches, "examples": n_examples}
            history.append(record)
            if on_epoch_end is not None and on_epoch_end(epoch, model, record):
                break
        model.eval()
    return history


def bce_with_logits_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−Σ [y log σ(x) + (1 − y) log(1 − σ(x))], numerically stable."""
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="sum")


def bpr_loss_sum(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """−Σ ln σ(pos − neg) over all (positive, negative) pairs; `pos` (B,) broadcasts against `neg` (B,) or (B, N)."""
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)
    return -nn.functional.logsigmoid(pos - neg).sum()

