"""A tiny lakehouse with a planted answer, written straight into the silver tables the dataset stage reads.

Forty videos of eight shots; every key frame shows concept 0 or 1 (its vector says which, plus noise); each user likes
one concept, comments positively on frames of it and, now and then, negatively on frames of the other. Users
`light*` comment too little to be kept. A model that uses the images, or even only the users' history, must rank
the liked concept's frames first.

`item_taste=True` plants the same taste at item level too (JIFR's input): a video mostly shows one concept (six
shots of eight) and users pick the videos of the concept they like, so which videos a user comments on tells a
model which frames that user likes.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from kfr_spark import delta_io
from kfr_spark.catalog import SILVER_FRAME_FEATURES, SILVER_SHOTS, SILVER_TSC_ALIGNED, SILVER_TSC_TOKENS

N_VIDEOS, N_SHOTS, DIM = 40, 8, 16
N_USERS = 24
BACKBONE = "efficientnet_lite0"


def concept(video: int, shot: int, item_taste: bool = False) -> int:
    if item_taste:  # the video's concept, but for shots 3 and 7
        return video % 2 if shot % 4 != 3 else 1 - video % 2
    return (video + shot) % 2


def build(spark, lake, seed: int = 3, item_taste: bool = False) -> dict:

    rng = np.random.default_rng(seed)
    shots, feats = [], []
    for v in range(N_VIDEOS):
        for k in range(N_SHOTS):
            shots.append((f"v{v}", k, k * 5.0, (k + 1) * 5.0, None, None, k * 5.0 + 1, None, b"jpeg", 8, 8, False,
                          "test", "p", "r"))
            vec = rng.normal(0, 0.3, DIM)
            vec[concept(v, k, item_taste)] += 3.0
            vec = vec / np.linalg.norm(vec)
            feats.append((f"v{v}", k, BACKBONE, DIM, [float(x) for x in vec], "p", "sha", None, "r"))
    aligned, tokens = [], []
    n = 0

    def comment(user: str, v: int, k: int, positive: bool) -> None:
        nonlocal n
        n += 1
        cid = f"c{n}"
        aligned.append(("bilibili", f"v{v}", cid, user, k * 5.0 + 2, 0.5, k * 5.0 + 1.5, k, 1, False, "t",
                        datetime(2024, 1, 1), "r"))
        word = 2 + concept(v, k, item_taste) if positive else 4
        tokens.append(("bilibili", f"v{v}", cid, user, "t", ["w"], [word, 6], False, None, False,
                       1 if positive else 0, 0.9 if positive else 0.1, "lexicon", "r"))

    for u in range(N_USERS):
        user, likes = f"u{u:02d}", u % 2
        pool = [v for v in range(N_VIDEOS) if v % 2 == likes] if item_taste else N_VIDEOS  # an int: the same
        for v in rng.choice(pool, size=5, replace=False):  # draws as before item_taste existed
            for k in range(N_SHOTS):
                if concept(v, k, item_taste) == likes and rng.random() < 0.8:
                    comment(user, int(v), k, True)
                elif concept(v, k, item_taste) != likes and rng.random() < 0.15:
                    comment(user, int(v), k, False)
    for u in range(3):  # too few comments to be kept
        comment(f"light{u}", 0, 0, True)
    noisy = aligned[0]  # a noise comment is never an interaction
    n += 1
    aligned.append((*noisy[:2], f"c{n}", "u00", *noisy[4:]))
    tokens.append(("bilibili", noisy[1], f"c{n}", "u00", "t", [], [], True, "greeting", False, 1, 0.5, "lexicon", "r"))

    for spec, rows in ((SILVER_SHOTS, shots), (SILVER_FRAME_FEATURES, feats), (SILVER_TSC_ALIGNED, aligned),
                       (SILVER_TSC_TOKENS, tokens)):
        delta_io.merge_upsert(spark, lake, spec.name, spark.createDataFrame(rows, schema=spec.schema))
    # vocabulary: ids 0..6
    from kfr_spark.catalog import SILVER_VOCABULARY

    vocab = [(t, i, 1, "r") for i, t in enumerate(["<pad>", "<unk>", "c0", "c1", "bad", "x", "y"])]
    delta_io.merge_upsert(spark, lake, SILVER_VOCABULARY.name, spark.createDataFrame(vocab, SILVER_VOCABULARY.schema))
    return {"comments": len(aligned)}
