"""Bad-input and security sweep: hostile bytes in every input format, hostile file names, ids, configs and
flags. Whatever comes in, the outcome is a reject row with a reason (or a one-line error and exit code 2),
never a stack trace, a failed batch, an expanded entity, a fetched resource or a file written outside the
lakehouse or the export folder.

The corpus is tests/data/bad_inputs (README.md there says what each file attacks); files too big to commit
or with names a checkout cannot hold are made here, in a temporary folder. The parser meets every case
directly (no Spark); then the whole corpus, with good files beside it, goes through one ingest.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfr_spark.config import KfrConfig, load_config
from kfr_spark.tsc_formats import ParsedFile, ParseLimits, RejectReason, parse_tsc_file

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
NOT_CORPUS = {"README.md", "generate.py"}
MAX_FILE_BYTES = 4 * 1024 * 1024  # the sweep's ingest.max_file_bytes, so that one oversized file stays small
LIMITS = ParseLimits(max_file_bytes=MAX_FILE_BYTES)
ESCAPE = Path("/tmp/kfr-sweep-escape")  # where the corpus's traversing ids point
PASSWD_LINE = "root:x:0:0"  # what an entity or XInclude that read /etc/passwd would leak


@dataclass(frozen=True)
class Case:
    """One input file: what the parser makes of it, and whether ingest then refuses its video id."""

    name: str
    fmt: str
    kept: int
    rejects: tuple[tuple[int, str], ...] = ()  # (record_no, reason), in file order
    bad_video_id: bool = False  # the comments parse, but the id from the file's metadata is refused whole


def r(*pairs: tuple[int, str]) -> tuple[tuple[int, str], ...]:
    return pairs


BV, BT, BM, BE = "bad_value", "bad_time", "bad_mode", "bad_encoding"

CASES = [
    # good files in the same batch: they land whole, whatever their neighbours hold
    Case("good_bilibili.xml", "bilibili_xml", 3),
    Case("good_niconico.xml", "niconico_xml", 2),
    Case("good_niconico.json", "niconico_json", 2),
    Case("good_generic.jsonl", "jsonl", 2),
    Case("good_generic.parquet", "parquet", 2),
    # Bilibili XML
    Case("bili_quadratic_blowup.xml", "bilibili_xml", 0, r((0, "xml_forbidden"))),
    Case("bili_parameter_entity.xml", "bilibili_xml", 0, r((0, "xml_forbidden"))),
    Case("bili_xinclude.xml", "bilibili_xml", 1),
    Case("bili_char_ref_nul.xml", "bilibili_xml", 1, r((2, "malformed_xml"))),
    Case("bili_char_ref_surrogate.xml", "bilibili_xml", 1, r((2, "malformed_xml"))),
    Case("bili_chatid_traversal.xml", "bilibili_xml", 1, bad_video_id=True),
    Case("bili_chatid_slash.xml", "bilibili_xml", 1, bad_video_id=True),
    Case("bili_chatid_newline.xml", "bilibili_xml", 1, bad_video_id=True),
    Case("bili_chatid_10k.xml", "bilibili_xml", 1, bad_video_id=True),
    Case("bili_record_ids.xml", "bilibili_xml", 2, r((2, BV), (3, BV), (4, BV))),
    Case("bili_huge_numbers.xml", "bilibili_xml", 1, r((1, BV), (2, BT), (3, BV), (4, BM))),
    # Niconico XML
    Case("nico_billion_laughs.xml", "niconico_xml", 0, r((0, "xml_forbidden"))),
    Case("nico_xxe.xml", "niconico_xml", 0, r((0, "xml_forbidden"))),
    Case("nico_thread_traversal.xml", "niconico_xml", 1, bad_video_id=True),
    Case("nico_truncated.xml", "niconico_xml", 2, r((3, "malformed_xml"))),
    Case("nico_record_ids.xml", "niconico_xml", 1, r((1, BV), (3, BV))),
    # Niconico JSON
    Case("nico_v1_thread_traversal.json", "niconico_json", 1, bad_video_id=True),
    Case("nico_v1_truncated.json", "niconico_json", 0, r((0, "malformed_json"))),
    Case("nico_v1_not_threads.json", "niconico_json", 0, r((0, "unknown_format"))),
    Case("nico_wrong_types.json", "niconico_json", 1,
         r((1, BT), (2, BV), (3, BV), (4, BV), (5, BV), (6, BV), (7, BV), (8, BT), (10, "malformed_json"))),
    Case("nico_lone_surrogate.json", "niconico_json", 1, r((2, BE), (3, BE))),
    # JSONL
    Case("jsonl_video_id_traversal.jsonl", "jsonl", 1, bad_video_id=True),
    Case("jsonl_video_id_nul.jsonl", "jsonl", 0, r((1, BV))),
    Case("jsonl_video_id_newline.jsonl", "jsonl", 0, r((1, BV))),
    Case("jsonl_wrong_types.jsonl", "jsonl", 1,
         r((1, BT), (2, BT), (3, BT), (4, BT), (5, BT), (6, "malformed_json"), (7, BV), (8, "missing_field"),
           (9, BM), (10, BV), (11, BV), (12, BV), (13, BV), (14, BV))),
    Case("jsonl_invalid_utf8.jsonl", "jsonl", 6, r((4, BE), (5, BE), (6, BE))),
    Case("jsonl_truncated.jsonl", "jsonl", 2, r((3, "malformed_json"))),
    # CSV
    Case("csv_video_id_slash.csv", "csv", 1, bad_video_id=True),
    Case("csv_truncated.csv", "csv", 1, r((2, "malformed_csv"))),
    # Parquet
    Case("parquet_text_not_string.parquet", "parquet", 0, r((1, BV), (2, BV))),
    Case("parquet_time_as_string.parquet", "parquet", 1, r((2, BT), (3, BT), (4, "missing_field"))),
    Case("parquet_nested_columns.parquet", "parquet", 1, r((1, BV), (2, BM), (3, BV))),
    Case("parquet_video_id_traversal.parquet", "parquet", 1, bad_video_id=True),
    Case("parquet_video_id_nul.parquet", "parquet", 0, r((1, BV))),
    Case("parquet_invalid_utf8.parquet", "parquet", 2, r((2, BE))),
    Case("parquet_duplicate_columns.parquet", "parquet", 0, r((0, "malformed_parquet"))),
    Case("parquet_truncated.parquet", "parquet", 0, r((0, "malformed_parquet"))),
]


def _d(time_s: float, cid: str, text: str, p: str | None = None) -> bytes:
    p = p or f"{time_s},1,25,16777215,1600000000,0,u,{cid}"
    return f'<d p="{p}">{text}</d>'.encode()


def _bili(chatid: str, *records: bytes) -> bytes:
    return f"<i><chatid>{chatid}</chatid>".encode() + b"".join(records) + b"</i>"


# Too big to commit: made at test time. (name -> bytes, and what comes out of it)
GENERATED = {
    "huge_text.xml": lambda: _bili("4101", _d(1.0, "1", "x" * 2_000_000), _d(2.0, "2", "kept")),
    "huge_file.xml": lambda: _bili("4102", *[_d(1.0, str(i), "y" * 1000) for i in range(4300)]),
    "huge_jsonl_line.jsonl": lambda: b'{"video_time_s": 1, "text": "' + b"z" * 1_000_000 + b'"}\n'
                                     b'{"video_time_s": 2, "text": "kept"}\n',
    "huge_csv_cell.csv": lambda: b"video_time_s,text\n1.0," + b"w" * 200_000 + b"\n2.0,kept\n",
    "huge_field_count.xml": lambda: _bili("4105", _d(1.0, "1", "x", p="1," * 100_000), _d(2.0, "2", "kept")),
}
GENERATED_CASES = [
    Case("huge_text.xml", "bilibili_xml", 1, r((1, "oversized_text"))),
    Case("huge_file.xml", "unknown", 0, r((0, "oversized_file"))),
    Case("huge_jsonl_line.jsonl", "jsonl", 1, r((1, "oversized_text"))),
    Case("huge_csv_cell.csv", "csv", 1, r((1, "malformed_csv"))),  # over the csv module's field limit
    Case("huge_field_count.xml", "bilibili_xml", 1, r((1, "bad_field_count"))),
]
ALL_CASES = CASES + GENERATED_CASES


def case_bytes(case: Case) -> bytes:
    return GENERATED[case.name]() if case.name in GENERATED else (CORPUS / case.name).read_bytes()


# ------------------------------------------------------------------------------------------------
# The parser, case by case (no Spark)
# ------------------------------------------------------------------------------------------------


def test_every_corpus_file_has_a_case_and_a_line_in_the_readme():
    files = {p.name for p in CORPUS.iterdir()} - NOT_CORPUS
    assert files == {c.name for c in CASES}
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    assert listed == {c.name for c in ALL_CASES} | {name.replace("\n", "\\n") for name, _, _ in HOSTILE_NAMES}
    assert all(len((CORPUS / name).read_bytes()) < 50_000 for name in files)


def assert_nothing_leaks(parsed: ParsedFile) -> None:
    """What every outcome must hold, however hostile the input: known codes, bounded UTF-8 rows, clean ids,
    nothing read from elsewhere, nothing expanded."""
    assert {x.reason for x in parsed.rejects} <= {x.value for x in RejectReason} - {"internal_error"}
    for reject in parsed.rejects:
        assert len(reject.raw) <= 1024 and len(reject.detail) <= 300
        (reject.raw + reject.detail).encode("utf-8")
        assert PASSWD_LINE not in reject.raw + reject.detail
    for comment in parsed.comments:
        for key in (comment.comment_id, comment.user_id or "x"):
            assert 0 < len(key) <= 128 and not re.search("[\x00-\x1f\x7f]", key), key
        assert len(comment.text) <= LIMITS.max_text_chars and PASSWD_LINE not in comment.text


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_the_parser_keeps_the_good_records_and_rejects_each_bad_one_with_its_reason(case):
    started = time.perf_counter()
    parsed = parse_tsc_file(case_bytes(case), case.name, limits=LIMITS)
    assert time.perf_counter() - started < 5, "a hostile file must cost no more than a normal one"
    assert parsed.format == case.fmt
    assert len(parsed.comments) == case.kept
    assert [(x.record_no, x.reason) for x in parsed.rejects] == list(case.rejects)
    assert_nothing_leaks(parsed)


def test_path_like_user_and_comment_ids_are_kept_verbatim_as_opaque_keys():
    """They never name a file (exports are content-addressed, users pseudonymised), so there is nothing to
    escape; rewriting them would merge or split users."""
    parsed = parse_tsc_file((CORPUS / "bili_record_ids.xml").read_bytes(), "x.xml")
    assert (parsed.comments[0].comment_id, parsed.comments[0].user_id) == ("../../etc/passwd", "../../etc/passwd")
    parsed = parse_tsc_file((CORPUS / "jsonl_wrong_types.jsonl").read_bytes(), "x.jsonl")
    assert [(c.comment_id, c.user_id) for c in parsed.comments] == [("a/b", "../../etc/passwd")]


def test_parquet_with_invalid_utf8_loses_only_the_rows_holding_it():
    parsed = parse_tsc_file((CORPUS / "parquet_invalid_utf8.parquet").read_bytes(), "x.parquet")
    assert [c.text for c in parsed.comments] == ["kept", "kept too"]
    assert "\ufffd" in parsed.rejects[0].raw


# ------------------------------------------------------------------------------------------------
# One ingest of everything, through Spark
# ------------------------------------------------------------------------------------------------

# File names no checkout can hold (or that Hadoop treats specially): made in the inbox at test time.
# (name, content, comments landed): a name with metadata is read whatever its characters; one without becomes
# the video id, so it must pass the id check or be refused whole as bad_video_id.
HOSTILE_NAMES = [
    ("colon:name.xml", _bili("5101", _d(1.0, "1", "a")), 1),
    ("glob[1].xml", _bili("5102", _d(1.0, "1", "b")), 1),
    ("glob*star.xml", _bili("5103", _d(1.0, "1", "c")), 1),
    ("glob{a,b}.xml", _bili("5104", _d(1.0, "1", "d")), 1),
    ("query?hash#.xml", _bili("5105", _d(1.0, "1", "e")), 1),
    ("pct%2F..%2Fetc.xml", b"<i>" + _d(1.0, "1", "f") + b"</i>", 0),
    ("new\nline.xml", b"<i>" + _d(1.0, "1", "g") + b"</i>", 0),
    ("v..x.xml", b"<i>" + _d(1.0, "1", "h") + b"</i>", 1),  # ".." inside one name component is no traversal
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            stat = path.lstat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def swept(spark, base_config, tmp_path_factory):
    """The whole corpus, the generated files and the hostile names in one inbox, ingested once (--only-new,
    as the nightly runs it), with the tmp tree snapshotted before and after. The inbox's own name is a glob
    pattern that matches nothing, so it is found only if paths are taken literally."""
    from pyspark.sql import functions as F

    from kfr_spark import delta_io
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.ingest import ingest_files
    from kfr_spark.ledger import JobRun

    root = tmp_path_factory.mktemp("sweep")
    inbox = root / "in[box]"
    inbox.mkdir()
    for case in ALL_CASES:
        (inbox / case.name).write_bytes(case_bytes(case))
    for name, content, _ in HOSTILE_NAMES:
        (inbox / name).write_bytes(content)
    lake = Lakehouse(root / "lakehouse")
    cfg = base_config.ingest.model_copy(update={"max_file_bytes": MAX_FILE_BYTES})
    before = snapshot(root)
    summary = ingest_files(spark, lake, cfg, [str(inbox)], JobRun(job="ingest", config_hash="sweep"), only_new=True)
    after = snapshot(root)

    def by_file(table: str, *keys: str) -> collections.Counter:
        frame = delta_io.read_table(spark, lake, table)
        frame = frame.withColumn("file", F.element_at(F.split("source_file", "/"), -1))
        return collections.Counter({tuple(row[:-1]): row[-1] for row in frame.groupBy("file", *keys).count().collect()})

    comments = {file: n for (file,), n in by_file("bronze.tsc").items()}
    rejects = collections.defaultdict(dict)
    for (file, reason), n in by_file("bronze.tsc_rejects", "reason").items():
        rejects[file][reason] = n
    return summary, comments, dict(rejects), before, after


@pytest.mark.spark
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_ingest_lands_what_the_parser_keeps_and_records_every_reject(swept, case):
    _, comments, rejects, _, _ = swept
    want = collections.Counter(reason for _, reason in case.rejects)
    if case.bad_video_id:
        want["bad_video_id"] += 1
    assert comments.get(case.name, 0) == (0 if case.bad_video_id else case.kept)
    assert rejects.get(case.name, {}) == dict(want)


@pytest.mark.spark
@pytest.mark.parametrize("name,content,landed", HOSTILE_NAMES, ids=[repr(n) for n, _, _ in HOSTILE_NAMES])
def test_a_hostile_file_name_is_read_or_refused_but_never_fails_the_batch(swept, name, content, landed):
    _, comments, rejects, _, _ = swept
    assert comments.get(name, 0) == landed
    assert rejects.get(name, {}) == ({} if landed else {"bad_video_id": 1})


@pytest.mark.spark
def test_the_batch_holds_exactly_the_expected_rows(swept):
    """No cross-file duplicates, nothing counted twice, nothing from a file the corpus does not hold."""
    summary, comments, rejects, _, _ = swept
    names = {c.name for c in ALL_CASES} | {n for n, _, _ in HOSTILE_NAMES}
    assert set(comments) | set(rejects) <= names
    assert summary.files == len(names)
    assert summary.comments_inserted == sum(comments.values())
    assert summary.rejects_inserted == sum(n for reasons in rejects.values() for n in reasons.values())


@pytest.mark.spark
def test_ingest_writes_nothing_outside_the_lakehouse(swept):
    *_, before, after = swept
    written = {path for path in after if after[path] != before.get(path)}
    assert written and all(path.startswith("lakehouse/") for path in written), sorted(written)[:5]
    assert {path: after.get(path) for path in before} == before, "the inbox is read, never written"
    assert not ESCAPE.exists()


# ------------------------------------------------------------------------------------------------
# Ids that would name files: video ids (ingest) and export paths
# ------------------------------------------------------------------------------------------------


HOSTILE_IDS = ["..", ".hidden", "-rf", "x\x00y", "a\nb", "tab\tbed", "a b", "é", "a%2Fb", "a:b", "9" * 200]


@pytest.mark.parametrize("video_id", [*HOSTILE_IDS, "../../etc/passwd", "a/b", "a\\b", "9" * 10240],
                         ids=lambda v: repr(v[:20]))
def test_a_hostile_video_id_from_file_metadata_is_refused(base_config, video_id):
    from kfr_spark.ingest import video_id_for

    vid, error = video_id_for("file:/in/fine.xml", video_id, base_config.ingest)
    assert vid is None and "video id" in error


@pytest.mark.parametrize("name", HOSTILE_IDS, ids=lambda v: repr(v[:20]))
def test_a_file_name_that_is_no_safe_video_id_is_refused_not_trimmed(base_config, name):
    """Before, a name with a newline became the id of its first line: two files, one video."""
    from kfr_spark.ingest import video_id_for

    vid, error = video_id_for(f"file:/in/{name}.xml", None, base_config.ingest)
    assert vid is None and error


def test_safe_video_ids_pass_unchanged(base_config):
    from kfr_spark.ingest import video_id_for

    for video_id in ("BV1xx411c7mD", "av170001", "sm9", "v..x", "a" * 128):
        assert video_id_for("file:/in/x.xml", video_id, base_config.ingest) == (video_id, None)


@pytest.mark.parametrize("relative", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "images/../../x",
                                      "manifests/2026-12-01/../../../x", "images/w320/ab/../../../../x"])
def test_export_refuses_every_path_that_resolves_outside_its_folder(tmp_path, relative):
    from kfr_spark.export import inside

    with pytest.raises(ValueError, match="escapes the export folder"):
        inside(tmp_path / "export", relative)


def test_export_refuses_a_symlink_that_leads_out(tmp_path):
    from kfr_spark.export import inside

    (tmp_path / "export" / "images").mkdir(parents=True)
    (tmp_path / "export" / "images" / "w320").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="escapes"):
        inside(tmp_path / "export", "images/w320/ab/cd.jpg")
    assert inside(tmp_path / "export", "images/x/../y.jpg") == (tmp_path / "export" / "images" / "y.jpg").resolve()


def test_export_names_images_by_content_hash_and_users_by_pseudonym_whatever_the_ids():
    from kfr_spark.export import content_path, pseudonym

    for data in (b"", b"\x00" * 10, "../../etc/passwd".encode()):
        assert re.fullmatch(r"images/w320/[0-9a-f]{2}/[0-9a-f]{64}\.jpg", content_path(data, 320))
    for user in ("../../etc/passwd", "a\x00b", "x" * 10240, "a\nb"):
        assert re.fullmatch(r"[0-9a-f]{32}", pseudonym("salt-1234", user))


@pytest.mark.parametrize("pointer", ["../../../../tmp", "../../../../../etc", "x/../../../../.."])
def test_a_tampered_current_pointer_cannot_lead_a_consumer_out(tmp_path, pointer):
    import datetime

    from kfr_spark.export import current_manifest

    day = datetime.date(2026, 12, 1)
    (tmp_path / "manifests" / day.isoformat()).mkdir(parents=True)
    (tmp_path / "manifests" / day.isoformat() / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(ValueError, match="escapes"):
        current_manifest(tmp_path, day)


# ------------------------------------------------------------------------------------------------
# Config and command line: exit 2 and one line naming what to fix
# ------------------------------------------------------------------------------------------------

# 10**9 strings from 9 lines: each level lists the one before ten times
ALIAS_BOMB = "train:\n  hyper:\n    kfrci:\n      l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))


@dataclass(frozen=True)
class Cli:
    id: str
    args: tuple[str, ...]
    says: str  # a piece of the one-line message
    config: str | bytes | None = None  # written to kfr.yaml and passed with --config
    env: tuple[tuple[str, str], ...] = ()
    argparse: bool = False  # argparse's own usage error: its usage line, then the one error line


CLI_CASES = [
    Cli("yaml_syntax", ("ingest",), "not valid YAML", "spark: [unclosed\n"),
    Cli("yaml_not_utf8", ("ingest",), "not UTF-8", b"spark: {master: \xff\xfe}\n"),
    Cli("yaml_nested_too_deep", ("ingest",), "nested too deeply", "a: " + "[" * 20000 + "]" * 20000 + "\n"),
    Cli("yaml_alias_bomb", ("ingest",), "'train': more than 10000 values", ALIAS_BOMB),
    Cli("yaml_alias_cycle", ("ingest",), "reference cycle", "train: {hyper: {kfrci: &c {x: *c}}}\n"),
    Cli("yaml_python_tag", ("ingest",), "not valid YAML", "ingest: {max_text_chars: !!python/object/apply:os.system "
                                                           "['touch {marker}']}\n"),
    Cli("yaml_top_level_list", ("ingest",), "top level must be a mapping", "- spark\n"),
    Cli("unknown_key", ("ingest",), "ingest.max_txt_chars: unknown key", "ingest: {max_txt_chars: 10}\n"),
    Cli("unknown_section", ("ingest",), "sparky: unknown key", "sparky: {master: x}\n"),
    Cli("wrong_type", ("ingest",), "ingest.max_text_chars", "ingest: {max_text_chars: lots}\n"),
    Cli("section_is_a_scalar", ("ingest",), "spark: Input should be a valid dictionary", "spark: 5\n"),
    Cli("huge_value", ("ingest",), "ingest.max_text_chars", "ingest: {max_text_chars: " + "9x" * 50_000 + "}\n"),
    Cli("nul_in_a_path", ("ingest",), "'lakehouse.root': NUL character", 'lakehouse: {root: "lake\\0x"}\n'),
    Cli("nul_in_input_paths", ("ingest",), "'ingest.input_paths.0': NUL", 'ingest: {input_paths: ["../in\\0"]}\n'),
    Cli("config_is_a_folder", ("--config", "{tmp}", "ingest"), "config file not found"),
    Cli("config_missing", ("--config", "{tmp}/../nowhere/kfr.yaml", "ingest"), "config file not found"),
    Cli("set_python_tag",
        ("ingest", "--set", "ingest.max_text_chars=!!python/object/apply:os.system ['touch {marker}']"),
        "ingest.max_text_chars"),
    Cli("set_leading_dot", ("ingest", "--set", ".a=1"), "'.a' is not a section.key name"),
    Cli("set_empty_part", ("ingest", "--set", "ingest..max_text_chars=1"), "is not a section.key name"),
    Cli("set_through_a_scalar", ("ingest", "--set", "spark.master.x=1"), "'master' is not a section"),
    Cli("set_without_value", ("ingest", "--set", "spark.master"), "section.key=value"),
    Cli("set_infinite_int", ("ingest", "--set", "ingest.max_text_chars=1e999"), "ingest.max_text_chars"),
    Cli("set_newline_in_key", ("ingest", "--set", "ingest.a\nb=1"), "unknown key"),
    Cli("set_nul_in_value", ("ingest", "--set", 'lakehouse.root="a\\0b"'), "'lakehouse.root': NUL character"),
    Cli("env_empty_key", ("ingest",), "environment variable KFR__", env=(("KFR__", "1"),)),
    Cli("env_out_of_range", ("ingest",), "ingest.max_text_chars", env=(("KFR__INGEST__MAX_TEXT_CHARS", "-5"),)),
    Cli("input_path_traversal", ("ingest", "{tmp}/../../nowhere/../in"), "input path not found"),
    Cli("bad_date_flag", ("export", "--date", "2026-13-01"), "argument --date", argparse=True),
    Cli("unknown_stage", ("nosuch",), "invalid choice", argparse=True),
]


def prepare(case: Cli, folder: Path) -> list[str]:
    """The command line for a case run in `folder`, with its config file written there."""
    folder.mkdir()
    marker = folder / "pwned"
    args = [a.replace("{tmp}", str(folder)).replace("{marker}", str(marker)) for a in case.args]
    if case.config is not None:
        config = folder / "kfr.yaml"
        content = case.config.replace("{marker}", str(marker)) if isinstance(case.config, str) else case.config
        config.write_bytes(content.encode() if isinstance(content, str) else content)
        args = ["--config", str(config), *args]
    return args


def assert_refused(case: Cli, code: int, stderr: str, folder: Path) -> None:
    assert code == 2, stderr[-2000:]  # 2 is the usage/config branch; a stack trace would have been exit 1
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    if case.argparse:  # argparse prints its usage line first
        assert "error:" in lines[-1]
    else:
        assert len(lines) == 1, lines[:5]
    assert case.says in lines[-1] and len(lines[-1]) < 600, lines[-1][:600]
    assert not (folder / "pwned").exists()
    assert {p.name for p in folder.iterdir()} <= {"kfr.yaml"}, "a refused command writes nothing"


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_a_bad_config_or_flag_exits_2_with_one_clear_line(case, tmp_path, monkeypatch, capsys):
    from kfr_spark.cli import main

    args = prepare(case, tmp_path / "run")
    for key in [k for k in os.environ if k.startswith("KFR__")]:
        monkeypatch.delenv(key)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path / "run")
    started = time.perf_counter()
    try:
        code = main(args)
    except SystemExit as exit:  # argparse
        code = exit.code
    assert time.perf_counter() - started < 10
    assert_refused(case, code, capsys.readouterr().err, tmp_path / "run")


# The same, end to end in a fresh `kfr` process, for the cases that used to end in a stack trace or a hang
SUBPROCESS_CASES = [c for c in CLI_CASES if c.id in {"yaml_not_utf8", "yaml_alias_bomb", "bad_date_flag"}]


@pytest.fixture(scope="module")
def cli_processes(tmp_path_factory):
    """All at once: each is a fresh Python that imports its stage, which costs seconds on two cores."""
    tmp = tmp_path_factory.mktemp("cli")

    def run(case: Cli) -> tuple[subprocess.CompletedProcess, Path]:
        args = prepare(case, tmp / case.id)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KFR__")} | dict(case.env)
        return subprocess.run([sys.executable, "-m", "kfr_spark.cli", *args], capture_output=True, text=True,
                              cwd=tmp / case.id, env=env, timeout=120), tmp / case.id

    with ThreadPoolExecutor(max_workers=len(SUBPROCESS_CASES)) as pool:
        return dict(zip((c.id for c in SUBPROCESS_CASES), pool.map(run, SUBPROCESS_CASES)))


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda c: c.id)
def test_the_kfr_command_refuses_it_with_one_line_and_exit_2(cli_processes, case):
    result, folder = cli_processes[case.id]
    assert_refused(case, result.returncode, result.stderr + result.stdout, folder)


def test_relative_paths_with_dotdot_resolve_against_the_config_file_for_every_path_key(tmp_path):
    """Every Path setting, found from the model itself, so a new one cannot be forgotten."""
    keys = [(section, key) for section, info in KfrConfig.model_fields.items()
            for key, field in info.annotation.model_fields.items()
            if "Path" in str(field.annotation) and "tuple" not in str(field.annotation)]
    assert len(keys) >= 16
    lines = [f"{section}:\n" + "".join(f"  {k}: ../elsewhere/{section}_{k}\n" for s, k in keys if s == section)
             for section in dict.fromkeys(s for s, _ in keys)]
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "kfr.yaml").write_text("".join(lines))
    cfg = load_config(tmp_path / "conf" / "kfr.yaml", environ={})
    for section, key in keys:
        assert getattr(getattr(cfg, section), key) == tmp_path / "elsewhere" / f"{section}_{key}", (section, key)
