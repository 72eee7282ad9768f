"""Key frame recommenders as small torch modules behind one interface (`base.KeyFrameRecommender`) — no Spark.

    from kfr_spark.models import MODELS, build_model, fit
    model = build_model("kfrci", n_users=40, n_items=11_000, feature_dim=4096, vocab_size=20_000, dim=100)

Registry names: most_popular, pmf, bpr, vbpr (baselines), kfri, kfrc, kfrci (KFRCI paper), jifr, jifr_na (JIFR paper).

torch is imported on first use of a model name here: `kfr_spark.models.metrics` and `kfr_spark.models.sampling`
stay numpy-only, so evaluation code can import them without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_CLASSES = {
    "most_popular": ("popular", "MostPopular"),
    "pmf": ("mf", "PMF"),
    "bpr": ("mf", "BPR"),
    "vbpr": ("vbpr", "VBPR"),
    "kfri": ("kfr", "KFRI"),
    "kfrc": ("kfr", "KFRC"),
    "kfrci": ("kfr", "KFRCI"),
    "jifr": ("jifr", "JIFR"),
    "jifr_na": ("jifr", "JIFR_NA"),
}
_BASE = {"KeyFrameRecommender", "fit", "make_optimizer", "as_batch"}

__all__ = ["MODELS", "build_model", "model_names", *sorted(_BASE), *sorted(c for _, c in _CLASSES.values())]


def model_names() -> list[str]:
    return list(_CLASSES)


_REGISTRY: dict[str, type] | None = None


def _models() -> dict[str, type]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = {name: getattr(import_module(f"kfr_spark.models.{mod}"), cls)
                     for name, (mod, cls) in _CLASSES.items()}
    return _REGISTRY


def build_model(name: str, **params: Any):
    """A model by registry name (case-insensitive; "KFRCI", "JIFR_NA" work): `build_model(name, n_users=...,
    n_items=..., feature_dim=..., vocab_size=..., **hyper)`. Unknown hyper-parameters raise TypeError."""
    key = name.lower()
    if key not in _CLASSES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_CLASSES)}")
    return _models()[key](**params)


def __getattr__(attr: str) -> Any:
    if attr == "MODELS":
        return _models()
    if attr in _BASE:
        return getattr(import_module("kfr_spark.models.base"), attr)
    for mod, cls in _CLASSES.values():
        if attr == cls:
            return getattr(import_module(f"kfr_spark.models.{mod}"), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
