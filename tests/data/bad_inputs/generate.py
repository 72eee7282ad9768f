"""Writes the bad-input corpus beside this file: `.venv/bin/python tests/data/bad_inputs/generate.py`.

The files are committed; this script is how they were made (Parquet cannot be written by hand) and how to
remake them after a change. What each file attacks and what must come out of it: README.md here, and the
CASES table of tests/test_bad_input_sweep.py. Files too big to commit (or with names a checkout cannot hold)
are made by that test in a temporary folder instead.

Every file that holds comments has a video id of its own, so that one ingest of the whole folder cannot
mistake two files' comments for cross-file duplicates.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ESCAPE = "../../../tmp/kfr-sweep-escape"  # where a traversing id would land if it ever named a path


def d(time_s: float, cid: str, text: str, user: str = "a1b2c3d4", mode: int = 1) -> str:
    """One Bilibili <d> record (classic 8-field p)."""
    return f'<d p="{time_s},{mode},25,16777215,1600000000,0,{user},{cid}">{text}</d>'


def bili(chatid: str | None, *records: str, head: str = "") -> str:
    chat = f"<chatid>{chatid}</chatid>" if chatid is not None else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<i>{chat}\n' + "\n".join(records) + "\n</i>\n"


def chat(thread: str, no: int, vpos: int, text: str, user: str = "u1") -> str:
    attrs = f'thread="{thread}" no="{no}" vpos="{vpos}" date="1300000001" mail="184" user_id="{user}"'
    return f"<chat {attrs}>{text}</chat>"


def nico_xml(thread: str, *chats: str, head: str = "") -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{head}<packet>\n<thread thread="{thread}" resultcode="0"/>\n'
            + "\n".join(chats) + "\n</packet>\n")


def jsonl(*rows: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


LAUGHS = "".join(f'<!ENTITY l{i} "{"".join(f"&l{i - 1};" for _ in range(10))}">' for i in range(1, 10))


def text_files() -> dict[str, str | bytes]:
    good_jsonl = {"video_id": "jb1", "video_time_s": 1.0, "text": "fine", "user_id": "u1"}
    return {
        # ---- good files: they share the batch with the bad ones and must land whole ----
        "good_bilibili.xml": bili("8101", d(1.0, "1", "一"), d(2.0, "2", "二"), d(3.0, "3", "三")),
        "good_niconico.xml": nico_xml("8102", chat("8102", 1, 100, "わこつ"), chat("8102", 2, 200, "草")),
        "good_niconico.json": json.dumps([
            {"id": "1", "vpos": 100, "content": "one", "date": 1300000000, "owner": False, "mail": ["184"]},
            {"id": "2", "vpos": 250, "content": "two", "date": 1300000001, "owner": False, "mail": "ue red"},
        ], ensure_ascii=False),
        "good_generic.jsonl": jsonl({"video_id": "8104", "comment_id": "c1", "video_time_s": 0.5, "text": "hi"},
                                    {"video_id": "8104", "comment_id": "c2", "video_time_s": 1.5, "text": "yo"}),
        # ---- Bilibili XML ----
        "bili_quadratic_blowup.xml": bili(
            "3101", d(1.0, "1", "&big;" * 2000), head=f'<!DOCTYPE i [<!ENTITY big "{"A" * 2000}">]>\n'),
        "bili_parameter_entity.xml": bili(
            "3102", d(1.0, "1", "x"),
            head='<!DOCTYPE i [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/evil.dtd"> %ext;]>\n'),
        "bili_xinclude.xml": bili(
            "3103", '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>',
            d(1.0, "1", "kept")),
        "bili_char_ref_nul.xml": bili("3104", d(1.0, "1", "kept"), d(2.0, "2", "nul &#0; here"), d(3.0, "3", "lost")),
        "bili_char_ref_surrogate.xml": bili("3105", d(1.0, "1", "kept"), d(2.0, "2", "&#xD800;"), d(3.0, "3", "lost")),
        "bili_chatid_traversal.xml": bili("../../etc/passwd", d(1.0, "1", "x")),
        "bili_chatid_slash.xml": bili("a/b", d(1.0, "1", "x")),
        "bili_chatid_newline.xml": bili("31&#10;08", d(1.0, "1", "x")),
        "bili_chatid_10k.xml": bili("9" * 10240, d(1.0, "1", "x")),
        "bili_record_ids.xml": bili(
            "3110",
            d(1.0, "../../etc/passwd", "a path-like row id is only a key", user="../../etc/passwd"),
            d(2.0, "2", "newline in the user hash", user="ab&#10;cd"),
            d(3.0, "3&#9;3", "tab inside the row id"),
            d(4.0, "4", "a 129-character user hash", user="f" * 129),
            d(5.0, "5", "kept"),
        ),
        "bili_huge_numbers.xml": bili(
            "3111",
            f'<d p="1.0,1,{"9" * 5000},16777215,1600000000,0,u,1">5000-digit font size</d>',
            '<d p="1e999,1,25,16777215,1600000000,0,u,2">infinite time</d>',
            '<d p="1.0,1,25,4294967296,1600000000,0,u,3">colour 2**32</d>',
            '<d p="1.0,99999999999999999999,25,0,1600000000,0,u,4">huge mode</d>',
            d(5.0, "5", "kept"),
        ),
        # ---- Niconico XML ----
        "nico_billion_laughs.xml": nico_xml(
            "3201", chat("3201", 1, 100, "&l9;"), head=f'<!DOCTYPE packet [<!ENTITY l0 "lol">{LAUGHS}]>\n'),
        "nico_xxe.xml": nico_xml(
            "3202", chat("3202", 1, 100, "&xxe;"),
            head='<!DOCTYPE packet [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'),
        "nico_thread_traversal.xml": nico_xml(ESCAPE, chat(ESCAPE, 1, 100, "x")),
        "nico_truncated.xml": nico_xml("3204", chat("3204", 1, 100, "one"), chat("3204", 2, 200, "two"),
                                       chat("3204", 3, 300, "three"))[:-60],
        "nico_record_ids.xml": nico_xml(
            "3205",
            chat("3205", 1, 100, "newline in user_id", user="u&#10;1"),
            chat("3205", 2, 200, "kept", user="../../etc/passwd"),
            f'<chat thread="3205" no="{"7" * 200}" vpos="300" user_id="u">200-digit no</chat>',
        ),
        # ---- Niconico JSON ----
        "nico_v1_thread_traversal.json": json.dumps({"data": {"threads": [
            {"id": ESCAPE, "fork": "main", "comments": [{"id": "1", "vposMs": 1000, "body": "x"}]},
        ]}}),
        "nico_v1_truncated.json": json.dumps({"data": {"threads": [{"id": "3207", "fork": "main", "comments": [
            {"id": "1", "vposMs": 1000, "body": "one"}, {"id": "2", "vposMs": 2000, "body": "two"}]}]}})[:-30],
        "nico_v1_not_threads.json": json.dumps({"data": {"threads": "3208"}}),
        "nico_wrong_types.json": json.dumps([
            {"id": "1", "vpos": [100], "content": "vpos is a list"},
            {"id": "2", "vpos": 200, "content": 42},
            {"id": True, "vpos": 300, "content": "id is a boolean"},
            {"id": "4", "vpos": 400, "content": "mail is an object", "mail": {"ue": True}},
            {"id": "5", "vpos": 500, "content": "date is a word", "date": "yesterday"},
            {"id": "6", "vpos": 600, "content": "10 KB user id", "user_id": "u" * 10240},
            {"id": "7\u0000", "vpos": 700, "content": "NUL in the id"},
            {"id": "8", "vpos": "1e999", "content": "infinite vpos"},
            {"id": "9", "vpos": 900, "content": "kept", "user_id": "../../etc/passwd"},
            "a string where an entry belongs",
        ]),
        "nico_lone_surrogate.json": '[{"id": "1", "vpos": 100, "content": "kept"},'
                                    ' {"id": "2", "vpos": 200, "content": "bad \\ud800 half"},'
                                    ' {"id": "3", "vpos": 300, "content": "bad", "user_id": "\\udfff"}]',
        # ---- JSONL ----
        "jsonl_video_id_traversal.jsonl": jsonl({**good_jsonl, "video_id": "../../etc/passwd"}),
        "jsonl_video_id_nul.jsonl": jsonl({**good_jsonl, "video_id": "jb\u0000x"}),
        "jsonl_video_id_newline.jsonl": jsonl({**good_jsonl, "video_id": "jb\nx"}),
        "jsonl_wrong_types.jsonl": jsonl(
            {"video_time_s": "abc", "text": "time is a word"},
            {"video_time_s": {"s": 1}, "text": "time is an object"},
            {"video_time_s": True, "text": "time is a boolean"},
            '{"video_time_s": 1e999, "text": "infinite time"}',
            '{"video_time_s": NaN, "text": "NaN time"}',
            '{"video_time_s": ' + "9" * 5000 + ', "text": "a 5000-digit number is not JSON we read"}',
            {"video_time_s": 1, "text": 7},
            {"video_time_s": 1, "text": None},
            {"video_time_s": 1, "text": "mode is a boolean", "mode": True},
            {"video_time_s": 1, "text": "comment id is a float", "comment_id": 1.5},
            {"video_time_s": 1, "text": "10 KB user id", "user_id": "u" * 10240},
            {"video_time_s": 1, "text": "newline in the user id", "user_id": "u\n1"},
            {"video_time_s": 1, "text": "NUL in the comment id", "comment_id": "c\u00001"},
            {"video_time_s": 1, "text": "colour is negative", "color": -1},
            {"video_time_s": 2, "text": "kept", "user_id": "../../etc/passwd", "comment_id": "a/b"},
        ),
        "jsonl_truncated.jsonl": jsonl({"video_time_s": 1, "text": "one"}, {"video_time_s": 2, "text": "two"})
                                 + '{"video_time_s": 3, "text": "thr',
        # ---- CSV ----
        "csv_video_id_slash.csv": "video_id,video_time_s,text\na/b,1.0,x\n",
        "csv_truncated.csv": 'video_time_s,text\n1.0,one\n2.0,"two, cut inside the quot',
    }


def binary_files() -> dict[str, bytes]:
    def padding(times: range) -> bytes:  # enough good text that the file is UTF-8 with a few bad records
        rows = ({"video_time_s": i, "text": "padding so the file reads as UTF-8 text " * 3} for i in times)
        return jsonl(*rows).encode()

    out = {
        "jsonl_invalid_utf8.jsonl": (
            padding(range(1, 4))
            + b'{"video_time_s": 4, "text": "bad \xff\xfe bytes"}\n'
            + b'{"video_time_s": 5, "text": "overlong slash \xc0\xaf"}\n'
            + b'{"video_time_s": 6, "text": "CESU surrogate \xed\xa0\x80"}\n'
            + padding(range(7, 10))
        ),
        "good_generic.parquet": parquet(pa.table({
            "video_id": ["8105", "8105"], "comment_id": ["c1", "c2"], "video_time_s": [1.0, 2.0],
            "text": ["甲", "乙"], "user_id": ["u1", "u2"]})),
        "parquet_text_not_string.parquet": parquet(pa.table({"video_time_s": [1.0, 2.0], "text": [1, 2]})),
        "parquet_time_as_string.parquet": parquet(pa.table({"video_time_s": ["1.5", "abc", "inf", ""],
                                                            "text": ["kept", "word", "infinite", "blank"]})),
        "parquet_nested_columns.parquet": parquet(pa.table({
            "video_time_s": [1.0, 2.0, 3.0, 4.0],
            "text": ["user id is a struct", "mode is a list", "posted_at is a date", "kept"],
            "user_id": pa.array([{"x": 1}, None, None, None]),
            "mode": pa.array([None, [1], None, None], pa.list_(pa.int64())),
            "posted_at": pa.array([None, None, datetime.date(2020, 1, 1), None]),
        })),
        "parquet_video_id_traversal.parquet": parquet(pa.table({
            "video_id": ["../../etc/passwd"], "video_time_s": [1.0], "text": ["x"]})),
        "parquet_video_id_nul.parquet": parquet(pa.table({
            "video_id": ["pq\x00x"], "video_time_s": [1.0], "text": ["x"]})),
        "parquet_invalid_utf8.parquet": parquet(pa.table({
            "video_time_s": [1.0, 2.0, 3.0],
            "text": pa.array([b"kept", b"bad \xff\xfe bytes", b"kept too"], pa.binary()).view(pa.string()),
        })),
        "parquet_duplicate_columns.parquet": parquet(pa.Table.from_arrays(
            [pa.array([1.0]), pa.array(["x"]), pa.array(["y"])], names=["video_time_s", "text", "text"])),
    }
    whole = parquet(pa.table({"video_time_s": [float(i) for i in range(100)],
                              "text": [f"row {i}" for i in range(100)]}))
    out["parquet_truncated.parquet"] = whole[: len(whole) // 2]
    return out


def main() -> None:
    for name, content in {**text_files(), **binary_files()}.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        assert len(data) < 50_000, name
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
