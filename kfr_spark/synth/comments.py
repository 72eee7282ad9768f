"""Comments of one video: who comments, on which shot, what, when; and the Bilibili XML file.

Everything is vectorised per video with numpy; strings are assembled from precomputed, already
XML-escaped pieces with ``str.join`` so that ~10^5 comments/s/core are written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import unescape as xml_unescape

import numpy as np

from kfr_spark.synth.config import SynthConfig
from kfr_spark.synth.lexicon import (
    CONCEPTS,
    DANMAKU_COLORS,
    FILLER,
    GREETINGS,
    MODE7_FONTS,
    NEGATIVE_SLANG,
    NEGATIVE_WORDS,
    NEUTRAL_SLANG,
    POSITIVE_SLANG,
    POSITIVE_WORDS,
    PUNCT,
    xml_escape,
)
from kfr_spark.synth.shots import STREAM_COMMENTS, VideoPlan
from kfr_spark.synth.users import UserTable

NEGATIVE, NEUTRAL_SENT, POSITIVE = -1, 0, 1
KIND_REGULAR, KIND_GREETING = 0, 1

# ---------------------------------------------------------------------------------------------
# piece table: index 0 is the empty string; groups are contiguous index ranges


class _Pieces:
    def __init__(self) -> None:
        raw: list[str] = [""]
        self.groups: dict[str, tuple[int, int]] = {}

        def add(name: str, words: tuple[str, ...]) -> None:
            for w in words:
                if not w or any(ch in w for ch in '"\\\r\n\t'):
                    raise ValueError(f"lexicon piece {w!r} must be non-empty, JSON- and line-safe")
            self.groups[name] = (len(raw), len(words))
            raw.extend(words)

        for c in CONCEPTS:
            add(f"concept{c.id}", c.words)
        add("pos", POSITIVE_WORDS)
        add("neg", NEGATIVE_WORDS)
        add("slang+", POSITIVE_SLANG)
        add("slang0", NEUTRAL_SLANG)
        add("slang-", NEGATIVE_SLANG)
        add("filler", FILLER)
        add("punct", PUNCT)
        add("greet", GREETINGS)
        self.raw = np.array(raw, dtype=object)
        self.xml = np.array([xml_escape(w) for w in raw], dtype=object)
        self.length = np.array([len(w) for w in raw], dtype=np.int64)
        self.concept_offset = np.array([self.groups[f"concept{c.id}"][0] for c in CONCEPTS])
        self.concept_size = np.array([self.groups[f"concept{c.id}"][1] for c in CONCEPTS])

    def pick(self, group: str, u: np.ndarray) -> np.ndarray:
        off, size = self.groups[group]
        return off + np.minimum((u * size).astype(np.int64), size - 1)


PIECES = _Pieces()

# word orders over the slots (filler, content1, content2, sentiment, slang); punctuation goes last
_SLOT_ORDERS = np.array([
    (0, 1, 2, 3, 4),  # 这个 大海 海浪 太美了 2333
    (1, 2, 3, 4, 0),  # 火锅 好香 666 啊
    (3, 1, 2, 0, 4),  # 喜欢 猫咪 啊 hhhh
    (4, 0, 1, 2, 3),  # 2333 这个 猫咪 好看
    (0, 3, 1, 2, 4),  # 真的 好喜欢 火锅
    (1, 2, 0, 3, 4),  # 火锅 真的 好香
], dtype=np.int64)

# probabilities of each slot being filled
P_CONTENT, P_CONTENT2, P_FILLER, P_PUNCT = 0.8, 0.15, 0.3, 0.25
P_SENT_WORD = {POSITIVE: 0.85, NEUTRAL_SENT: 0.0, NEGATIVE: 0.9}
P_SLANG = {POSITIVE: 0.35, NEUTRAL_SENT: 0.4, NEGATIVE: 0.3}


def compose_comments(
    concept: np.ndarray,
    sentiment: np.ndarray,
    greeting: np.ndarray,
    rng: np.random.Generator,
    *,
    raw: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Texts for n comments about shots of ``concept`` with ``sentiment`` (-1/0/1).

    Returns (texts, n_chars). Texts are XML-escaped unless ``raw``; n_chars counts characters of
    the unescaped text. Draws a fixed number of random numbers per comment.
    """
    n = len(concept)
    u = rng.random((11, n))
    concept = np.asarray(concept, dtype=np.int64)
    sentiment = np.asarray(sentiment, dtype=np.int64)
    greeting = np.asarray(greeting, dtype=bool)

    off = PIECES.concept_offset[concept]
    size = PIECES.concept_size[concept]
    content_word = off + np.minimum((u[0] * size).astype(np.int64), size - 1)
    content_word2 = off + np.minimum((u[1] * size).astype(np.int64), size - 1)
    c1 = np.where(u[2] < P_CONTENT, content_word, 0)
    c2 = np.where(u[3] < P_CONTENT2, content_word2, 0)

    sent_word = np.zeros(n, dtype=np.int64)
    slang = np.zeros(n, dtype=np.int64)
    for s, wgroup, sgroup in ((POSITIVE, "pos", "slang+"), (NEUTRAL_SENT, None, "slang0"),
                              (NEGATIVE, "neg", "slang-")):
        m = sentiment == s
        if wgroup is not None:
            sent_word = np.where(m & (u[4] < P_SENT_WORD[s]), PIECES.pick(wgroup, u[5]), sent_word)
        slang = np.where(m & (u[6] < P_SLANG[s]), PIECES.pick(sgroup, u[7]), slang)
    filler = np.where(u[8] < P_FILLER, PIECES.pick("filler", u[8] / P_FILLER), 0)
    punct = np.where(u[9] < P_PUNCT, PIECES.pick("punct", u[9] / P_PUNCT), 0)

    empty = (c1 == 0) & (sent_word == 0) & (slang == 0)
    c1 = np.where(empty, content_word, c1)

    # greetings replace everything
    if greeting.any():
        c1 = np.where(greeting, PIECES.pick("greet", u[0]), c1)
        keep = ~greeting
        c2, sent_word, slang, filler, punct = (x * keep for x in (c2, sent_word, slang, filler, punct))

    slots = np.stack([filler, c1, c2, sent_word, slang])  # (5, n)
    order = _SLOT_ORDERS[np.minimum((u[10] * len(_SLOT_ORDERS)).astype(np.int64),
                                    len(_SLOT_ORDERS) - 1)]  # (n, 5)
    arranged = slots[order.T, np.arange(n)[None, :]]  # (5, n)
    table = PIECES.raw if raw else PIECES.xml
    cols = [table[arranged[j]].tolist() for j in range(5)] + [table[punct].tolist()]
    texts = list(map("".join, zip(*cols)))
    n_chars = PIECES.length[arranged].sum(axis=0) + PIECES.length[punct]
    return texts, n_chars


def compose_comment(concept: int, sentiment: int, rng: np.random.Generator, *,
                    greeting: bool = False) -> str:
    """One unescaped comment text (convenience wrapper of :func:`compose_comments`)."""
    texts, _ = compose_comments(np.array([concept]), np.array([sentiment]), np.array([greeting]),
                                rng, raw=True)
    return texts[0]


# ---------------------------------------------------------------------------------------------
# one video's comments


@dataclass
class VideoComments:
    """Comments of one video in posting order (= row id order = XML order)."""

    row_id: np.ndarray  # int64
    user_idx: np.ndarray  # int64 index into UserTable
    shot_idx: np.ndarray  # int32
    moment_s: np.ndarray  # float64: the moment the user reacted to
    typing_delay_s: np.ndarray  # float64
    time_s: np.ndarray  # float64: as written to the XML (rounded to 5 decimals)
    unix_ts: np.ndarray  # int64 posting time
    sentiment: np.ndarray  # int8 -1/0/1
    kind: np.ndarray  # int8 KIND_REGULAR / KIND_GREETING
    mode: np.ndarray  # int8 1/4/5/7
    font_size: np.ndarray  # int16
    color: np.ndarray  # int64
    n_chars: np.ndarray  # int32
    xml_text: list[str]  # escaped element content (mode 7: the JSON payload)
    raw_text: list[str] | None  # unescaped displayed text (only when requested)

    def __len__(self) -> int:
        return len(self.row_id)


def _sample_sessions(plan: VideoPlan, users: UserTable, config: SynthConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(session user indices, comments per session) summing to plan.n_comments."""
    n = plan.n_comments
    # session sizes: 1 + floor(lognormal), a long tail with mean ~comments_per_session
    sigma = config.session_size_sigma
    mu = np.log(max(config.comments_per_session - 0.5, 0.5)) - sigma**2 / 2
    sizes_parts: list[np.ndarray] = []
    total = 0
    while total < n:
        k = int((n - total) / config.comments_per_session * 1.3) + 8
        s = 1 + np.floor(rng.lognormal(mu, sigma, size=k)).astype(np.int64)
        sizes_parts.append(s)
        total += int(s.sum())
    sizes = np.concatenate(sizes_parts) if sizes_parts else np.zeros(0, dtype=np.int64)
    csum = np.cumsum(sizes)
    n_sessions = int(np.searchsorted(csum, n, side="left")) + 1 if n > 0 else 0
    sizes = sizes[:n_sessions]
    if n_sessions:
        sizes[-1] -= int(csum[n_sessions - 1]) - n

    # users: drawn by activity, accepted by taste for this video's concept mix
    lut = np.array([config.dislike_weight, 1.0, config.like_weight])  # code + 1
    mix = plan.concept_mix(config.n_concepts)
    wmax = max(config.like_weight, 1.0, config.dislike_weight)
    chosen: list[np.ndarray] = []
    have = 0
    while have < n_sessions:
        k = (n_sessions - have) * 3 + 16
        cand = np.searchsorted(users.cdf, rng.random(k), side="right")
        cand = np.minimum(cand, users.n - 1)
        appeal = lut[users.taste[cand].astype(np.int64) + 1] @ mix
        acc = rng.random(k) < (appeal / wmax) ** config.video_taste_strength
        got = cand[acc]
        chosen.append(got)
        have += len(got)
    session_users = (np.concatenate(chosen)[:n_sessions] if chosen
                     else np.zeros(0, dtype=np.int64))
    return session_users.astype(np.int64), sizes


def generate_video_comments(plan: VideoPlan, users: UserTable, config: SynthConfig, *,
                            raw_text: bool = False) -> VideoComments:
    """All comments of one video, from the video's own seed stream."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_COMMENTS,
                                                        plan.video_idx]))
    n = plan.n_comments
    duration = plan.duration_s
    session_users, sizes = _sample_sessions(plan, users, config, rng)
    n_sessions = len(sizes)
    session_of = np.repeat(np.arange(n_sessions), sizes)
    user_idx = session_users[session_of]

    starts, ends = plan.shot_bounds_s()
    shot_concept = np.array([s.concept for s in plan.shots], dtype=np.int64)
    base = (ends - starts) * np.array([s.popularity for s in plan.shots])
    lut = np.array([config.dislike_weight, 1.0, config.like_weight])

    # shot choice: weights per session (user), cumulative, then one uniform per comment
    taste_sessions = users.taste[session_users][:, shot_concept].astype(np.int64)  # (S, shots)
    cw = np.cumsum(base[None, :] * lut[taste_sessions + 1], axis=1)
    u_shot = rng.random(n)
    shot_idx = np.empty(n, dtype=np.int64)
    chunk = 65536
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        rows = cw[session_of[a:b]]
        shot_idx[a:b] = (rows < (u_shot[a:b] * rows[:, -1])[:, None]).sum(axis=1)
    shot_idx = np.minimum(shot_idx, len(plan.shots) - 1)

    greeting = rng.random(n) < config.greeting_fraction
    u_moment = rng.random(n)
    moment = starts[shot_idx] + u_moment * (ends[shot_idx] - starts[shot_idx])
    g_moment = u_moment * min(config.greeting_window_s, duration)
    moment = np.where(greeting, g_moment, moment)
    g_shot = np.searchsorted(starts, g_moment, side="right") - 1
    shot_idx = np.where(greeting, g_shot, shot_idx)

    code = users.taste[user_idx, shot_concept[shot_idx]].astype(np.int64)
    sent_table = np.array([config.sentiment_disliked, config.sentiment_neutral,
                           config.sentiment_liked])  # (3 codes, P(neg, neu, pos))
    cum = np.cumsum(sent_table, axis=1)[code + 1]
    u_sent = rng.random(n)
    sentiment = (u_sent[:, None] >= cum[:, :2]).sum(axis=1) - 1
    sentiment = np.where(greeting, NEUTRAL_SENT, sentiment)

    texts, n_chars = compose_comments(shot_concept[shot_idx], sentiment, greeting, rng)

    # display attributes
    mode_codes = np.array([1, 4, 5, 7], dtype=np.int64)
    mode = mode_codes[np.searchsorted(np.cumsum(config.mode_probs)[:-1], rng.random(n),
                                      side="right")]
    u_style = rng.random((2, n))
    font = np.where(u_style[0] < 0.9, 25, np.where(u_style[0] < 0.97, 18, 36))
    palette = np.array(DANMAKU_COLORS, dtype=np.int64)
    pick = np.clip(((u_style[1] - 0.75) / 0.25 * len(palette)).astype(np.int64), 0,
                   len(palette) - 1)
    color = np.where(u_style[1] < 0.75, 16777215, palette[pick])

    # typing delay and written time
    jitter = np.exp(config.typing_jitter * rng.standard_normal(n))
    cpm = users.typing_cpm[user_idx].astype(np.float64) * jitter
    delay = n_chars * 60.0 / cpm
    time_s = np.round(np.minimum(moment + delay, duration - 1e-3), 5)
    time_s = np.maximum(time_s, 0.0)

    # posting time: a session starts some time after upload; comments as the user watches
    latest = max(config.crawl_end - plan.upload_ts - int(duration) - 2, 0)
    session_start = plan.upload_ts + np.minimum(
        np.floor(rng.lognormal(mean=11.5, sigma=1.6, size=n_sessions)), latest).astype(np.int64)
    unix_ts = session_start[session_of] + np.floor(time_s).astype(np.int64)

    # posting order -> row id
    order = np.lexsort((np.arange(n), time_s, unix_ts))
    row_id = plan.row_id_start + np.arange(n, dtype=np.int64)

    xml_text = [texts[i] for i in order.tolist()]
    mode_o = mode[order]
    font_o = font[order]
    m7 = np.nonzero(mode_o == 7)[0]
    if len(m7):
        u7 = rng.random((6, len(m7)))
        for j, i in enumerate(m7.tolist()):
            x, y = int(u7[0, j] * plan.width), int(u7[1, j] * plan.height)
            dur = round(2.0 + 4.0 * float(u7[2, j]), 1)
            font_name = MODE7_FONTS[int(u7[3, j] * len(MODE7_FONTS)) % len(MODE7_FONTS)]
            payload = json.dumps([x, y, "1-1", dur], ensure_ascii=False, separators=(",", ":"))
            # the text piece is already XML-escaped and has no JSON-special characters
            xml_text[i] = (f'{payload[:-1]},"{xml_text[i]}",0,0,{x},{y},500,0,true,'
                           f'"{xml_escape(font_name)}",1]')
            font_o[i] = int(20 + 30 * u7[4, j])

    raw_texts = [xml_unescape(texts[i]) for i in order.tolist()] if raw_text else None

    return VideoComments(
        row_id=row_id,
        user_idx=user_idx[order],
        shot_idx=shot_idx[order].astype(np.int32),
        moment_s=moment[order],
        typing_delay_s=delay[order],
        time_s=time_s[order],
        unix_ts=unix_ts[order],
        sentiment=sentiment[order].astype(np.int8),
        kind=np.where(greeting, KIND_GREETING, KIND_REGULAR)[order].astype(np.int8),
        mode=mode_o.astype(np.int8),
        font_size=font_o.astype(np.int16),
        color=color[order],
        n_chars=n_chars[order].astype(np.int32),
        xml_text=xml_text,
        raw_text=raw_texts,
    )


# ---------------------------------------------------------------------------------------------
# XML

_LINE = '<d p="%.5f,%d,%d,%d,%d,0,%08x,%d">%s</d>'
_SEP = "\r\n    "


def maxlimit_for(n: int) -> int:
    for cap in (1000, 1500, 3000, 6000, 8000):
        if n <= cap:
            return cap
    return n


def video_xml(plan: VideoPlan, comments: VideoComments, users: UserTable) -> bytes:
    """The Bilibili classic XML of one video, in the exact shape of a real file."""
    header = (
        '<?xml version="1.0" encoding="UTF-8"?><i><chatserver>chat.bilibili.com</chatserver>'
        f"<chatid>{plan.chatid}</chatid><mission>0</mission>"
        f"<maxlimit>{maxlimit_for(len(comments))}</maxlimit><source>k-v</source>"
    )
    lines = map(_LINE.__mod__, zip(
        comments.time_s.tolist(),
        comments.mode.tolist(),
        comments.font_size.tolist(),
        comments.color.tolist(),
        comments.unix_ts.tolist(),
        users.user_hash[comments.user_idx].tolist(),
        comments.row_id.tolist(),
        comments.xml_text,
    ))
    body = _SEP.join(lines)
    return (header + body + "\r\n</i>").encode("utf-8")
