"""Parsers for time-synchronized comment ("danmaku") files.

Pure functions: bytes in, :class:`ParsedFile` out. No Spark, no I/O beyond the bytes handed in, and
:func:`parse_tsc_file` never raises for any input bytes: every problem becomes a :class:`Reject` row, so
one bad file (or one bad record) cannot fail a Spark task. Good records next to bad ones are kept.

Supported formats (the names are the values of ``ParsedFile.format`` and of the ``fmt`` override)
--------------------------------------------------------------------------------------------------
``bilibili_xml``
    ``<i><chatid>8729348</chatid>...<d p="time_s,mode,font_size,color,unix_ts,pool,user_hash,row_id[,weight]">
    text</d>...</i>``. The optional 9th field (weight) is accepted and ignored.
``bilibili_archive_xml``
    Same root, but ``p="dmid,progress,time_ms,mode,font_size,color,unix_ts,pool,user_hash"`` (always 9
    fields, id first, time in milliseconds). Told from the 9-field classic variant by field shapes, see
    :func:`detect_format`.
``niconico_xml``
    ``<packet><thread thread=".."/><chat thread=".." no="12" vpos="300" date=".." user_id=".." mail="184">
    text</chat>...</packet>``; ``vpos`` is in 1/100 s.
``niconico_json``
    * a list of flat entries ``{id, vpos, content, date, date_usec, owner, premium, mail}`` (the shape of
      the niconicomments sample data; ``vpos`` in 1/100 s, ``mail`` a list or a space-separated string);
    * a list of legacy API entries ``{"chat": {thread, no, vpos, date, user_id, mail, content}}`` mixed
      with ``{"thread": {...}}``/``{"ping": ...}``/``{"leaf": ...}`` bookkeeping entries (skipped);
    * the v1 API object ``{"data": {"threads": [{"id", "fork", "comments": [{id, no, vposMs, body,
      commands, userId, postedAt, ...}]}]}}`` (``data`` wrapper optional, ``vposMs`` in ms).
``jsonl``, ``csv``, ``parquet``
    The generic schema below: JSON Lines (one object per line), CSV (UTF-8, header row, comma, RFC 4180
    quoting, read strictly: a stray quote makes that row ``malformed_csv``) or Parquet.

Generic schema
--------------
==============  =============  ========  ==========================================================
column          type           required  meaning
==============  =============  ========  ==========================================================
video_id        string         no        the video; if given it must be the same on every row of a
                                         file (one file = one video), else ``video_id_mismatch``
comment_id      string / int   no        unique within the file; if absent or empty a stable id is
                                         derived (see below)
video_time_s    float          yes       seconds from the start of the video, 0 <= t <= limit
text            string         yes       the comment as shown (not HTML-unescaped)
user_id         string / int   no        any stable pseudonymous sender id
posted_at       int            no        unix seconds when the comment was posted, up to year 9999
                                         (Parquet timestamps are accepted too, naive ones read as UTC)
mode            int 1..9       no        Bilibili display mode (default 1 = scrolling)
font_size       int            no        0 .. 2**31-1
color           int            no        0xRRGGBB (0 .. 0xFFFFFFFF)
pool            int            no        0 .. 2**31-1; 0 normal, 1 subtitle/owner, 2 special
==============  =============  ========  ==========================================================

Ids (comment, user, video) are at most 128 characters, without control characters. Other columns are
ignored. Empty CSV cells and JSON/Parquet nulls count as absent; numbers may also be given as numeric strings.

Normalisation, common to all formats
------------------------------------
* Text: HTML entities are unescaped once more after XML/JSON decoding for the XML formats and Niconico
  JSON (real dumps double-escape, ``&amp;lt;``), C0 control characters other than TAB/LF/CR are removed
  (they are illegal in XML 1.0 and appear as noise in real dumps), then surrounding whitespace is
  stripped. Bilibili's literal ``/n`` line-break marker is left as it is.
* Modes follow Bilibili: 1-3 scrolling, 4 bottom, 5 top, 6 reverse, 7 positioned/advanced (JSON payload),
  8 code, 9 BAS. Modes 7-9 are kept with ``is_special=True``. Niconico commands map onto this scale:
  ``ue`` -> 5, ``shita`` -> 4, otherwise 1; ``small``/``medium``/``big`` -> 18/25/36; colour names and
  ``#rrggbb`` -> 0xRRGGBB; owner comments get pool 1; owner ``@``-script comments are special.
* ``comment_id`` is the source's id (Bilibili row id / dmid, Niconico ``id`` or ``no``). Niconico ``no``
  values from a second thread or a fork are prefixed (``"<thread>:<fork>:<no>"``) so they stay unique.
  When a generic row has none, the id is ``"h:" + sha1(time, text, user_id, posted_at, n)[:16]``, n being
  the number of earlier rows in the file with the same four values, so reruns give the same ids.
* A comment id seen earlier in the file *on a kept comment* makes the later record a ``duplicate``.
* Invalid UTF-8 bytes reject only the record holding them (``bad_encoding``); a UTF-8 BOM is fine.
  Other encodings are not supported (XML encoding declarations are ignored: input is read as UTF-8).

``record_no`` is the 1-based index of the record in the file (``<d>``/``<chat>`` element, JSON list
entry or thread comment, non-blank JSONL line, CSV data row, Parquet row); 0 means the file as a whole.
:meth:`ParsedFile.numbered_comments` pairs each comment with its number. A structural break
(``malformed_xml``, or ``malformed_json`` inside a JSON list) is reported once, with the number of the
first record lost; everything before it is kept. Reject reasons are the values of :class:`RejectReason`;
see its docstring for the table.

Untrusted XML
-------------
XML is parsed only through ``defusedxml``: any entity declaration (the billion-laughs family, external
``SYSTEM`` entities) makes the whole file ``xml_forbidden`` before anything is expanded or fetched. A
DOCTYPE without entity declarations is harmless and allowed; an external DTD it names is never loaded.

Speed
-----
Bilibili XML is the bulk of the input, so its path avoids per-record regexes and ElementTree objects
(expat callbacks collect attribute dicts and text, ``p`` is split once, tuples are built directly) and
the cyclic GC is paused while one file is parsed. Roughly 200k+ comments/s on one core.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as _dt
import enum
import gc
import hashlib
import html
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

__all__ = [
    "FORMATS",
    "Comment",
    "ParseLimits",
    "ParsedFile",
    "Reject",
    "RejectReason",
    "detect_format",
    "parse_tsc_file",
]

#: Every format name :func:`detect_format` can return and ``parse_tsc_file(fmt=...)`` accepts.
FORMATS: tuple[str, ...] = (
    "bilibili_xml",
    "bilibili_archive_xml",
    "niconico_json",
    "niconico_xml",
    "jsonl",
    "csv",
    "parquet",
)


class RejectReason(str, enum.Enum):
    """Why a record (or a whole file, ``record_no == 0``) was not turned into a :class:`Comment`.

    The values are stable snake_case codes meant for tables and dashboards; never rename one.

    ===================  ============================================================================
    code                 meaning
    ===================  ============================================================================
    empty_file           no bytes, or only whitespace / a BOM (file)
    oversized_file       more than ``ParseLimits.max_file_bytes`` (or a Parquet file that inflates
                         beyond 16x that) (file)
    binary_file          not text and not Parquet: NUL bytes, compressed data, random bytes (file)
    unknown_format       text, but no supported format recognised, or JSON without a comment list
                         (file)
    xml_forbidden        DTD entity declarations or external references: refused unparsed (file)
    malformed_xml        XML syntax break; records from ``record_no`` on are lost
    malformed_json       a JSONL line or JSON list entry that is not valid JSON / not an object, a
                         break inside a JSON list (records from ``record_no`` on are lost), or a JSON
                         document that does not parse at all (file)
    malformed_csv        a CSV row the csv module cannot read (stray or unclosed quote)
    malformed_parquet    the Parquet file cannot be read (file)
    bad_encoding         invalid UTF-8 bytes (or a lone surrogate escape in JSON) in the record;
                         UTF-16/32 files (file)
    bad_field_count      Bilibili ``p`` with the wrong number of fields; CSV row with a different
                         number of cells than the header
    missing_field        a required attribute / key / column is absent or null
    bad_time             video time not a finite number in [0, max_video_time_s]
    bad_mode             mode not an integer in 1..9
    bad_value            another field has the wrong type or is out of range (font size, colour,
                         pool, posted_at, an id longer than 128 chars or with control
                         characters, text not a string, ...)
    empty_text           text empty after unescaping and stripping
    oversized_text       text longer than ``ParseLimits.max_text_chars``
    duplicate            comment id already used by a kept comment earlier in the file
    video_id_mismatch    generic row whose video_id differs from the file's first video_id
    internal_error       a parser bug caught by the last-resort guard; should never appear (file)
    link_outside_inputs  a symbolic link (or a file under a linked folder) whose real path lies
                         outside every input path; refused unread unless
                         ``ingest.allow_links_outside_inputs`` (file)
    ===================  ============================================================================
    """

    EMPTY_FILE = "empty_file"
    OVERSIZED_FILE = "oversized_file"
    LINK_OUTSIDE_INPUTS = "link_outside_inputs"
    BINARY_FILE = "binary_file"
    UNKNOWN_FORMAT = "unknown_format"
    XML_FORBIDDEN = "xml_forbidden"
    MALFORMED_XML = "malformed_xml"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_CSV = "malformed_csv"
    MALFORMED_PARQUET = "malformed_parquet"
    BAD_ENCODING = "bad_encoding"
    BAD_FIELD_COUNT = "bad_field_count"
    MISSING_FIELD = "missing_field"
    BAD_TIME = "bad_time"
    BAD_MODE = "bad_mode"
    BAD_VALUE = "bad_value"
    EMPTY_TEXT = "empty_text"
    OVERSIZED_TEXT = "oversized_text"
    DUPLICATE = "duplicate"
    VIDEO_ID_MISMATCH = "video_id_mismatch"
    INTERNAL_ERROR = "internal_error"


class Comment(NamedTuple):
    """One accepted comment, normalised across formats (see the module docstring)."""

    comment_id: str
    video_time_s: float
    mode: int
    text: str
    user_id: str | None
    posted_at: int | None
    font_size: int | None
    color: int | None
    pool: int | None
    is_special: bool


class Reject(NamedTuple):
    """One rejected record, or the whole file when ``record_no == 0``."""

    record_no: int
    reason: str  # a RejectReason value, as a plain str
    detail: str  # short, human-readable
    raw: str  # the record (or file head), at most 1024 chars, always encodable as UTF-8


@dataclass(frozen=True)
class ParseLimits:
    """Bounds that keep one hostile or broken file from costing more than a normal one."""

    max_text_chars: int = 500
    # Mode 7/8 payloads (positioned JSON, code) are kept but flagged; real ones run to tens of thousands of
    # characters (a whole drawing program), so they get a bound of their own.
    max_special_chars: int = 131072
    max_file_bytes: int = 64 * 1024 * 1024
    max_video_time_s: float = 86400.0


@dataclass
class ParsedFile:
    """The outcome for one file.

    ``format`` is the format parsed (or ``"unknown"`` when none was recognised). ``video_id`` comes from
    the file's own metadata (Bilibili ``<chatid>``, Niconico thread id, generic ``video_id`` column) or is
    None; falling back to the file name is the caller's decision.
    """

    format: str
    video_id: str | None
    comments: list[Comment] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: ``record_no`` of each comment, parallel to ``comments`` (may be left empty when built by hand).
    comment_record_nos: list[int] = field(default_factory=list, repr=False)

    def numbered_comments(self) -> Iterator[tuple[int, Comment]]:
        """(record_no, comment) pairs, record_no being the comment's 1-based record index in the file
        (numbered 1..n when ``comment_record_nos`` was left empty)."""
        if not self.comment_record_nos:
            return enumerate(self.comments, 1)
        if len(self.comment_record_nos) != len(self.comments):
            raise ValueError("comment_record_nos must have one entry per comment")
        return zip(self.comment_record_nos, self.comments)


_R = RejectReason
_RAW_CHARS = 1024
_SNIFF_BYTES = 8192
_SPECIAL_MIN_MODE = 7
_MAX_ID_CHARS = 128  # comment and user ids are keys downstream; longer ones are corruption, not ids
# Nor do keys hold control characters: "u1" and "u1\x00" (or "u1\n") would be two users that look like one.
ID_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")  # also refused in file-name video ids (ingest)
# Upper bounds of the integer fields: they must fit the int32/int64 columns downstream, and values
# beyond them are corruption (a posted_at after year 9999 is not a time).
_MAX_INT32 = 2**31 - 1
_MAX_COLOR = 0xFFFFFFFF
_MAX_POSTED_AT = 253402300799  # 9999-12-31T23:59:59Z
_INT_BOUNDS = {"font_size": _MAX_INT32, "color": _MAX_COLOR, "pool": _MAX_INT32, "posted_at": _MAX_POSTED_AT}
_BOM = b"\xef\xbb\xbf"

# Invalid UTF-8 byte runs decode to this noncharacter. XML 1.0 allows it in text and attribute values,
# so the XML parser carries it through to the record, which is then rejected as bad_encoding.
_BAD_CHAR = "\ufdd0"
_BAD_BYTES_ERRORS = "kfr_spark.tsc_bad_bytes"


def _mark_bad_bytes(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):  # pragma: no cover - registered for decoding only
        raise exc
    return _BAD_CHAR, exc.end


codecs.register_error(_BAD_BYTES_ERRORS, _mark_bad_bytes)

# C0 controls other than TAB/LF/CR: illegal in XML 1.0, noise in text.
_C0_DELETE = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))
_C0_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NONCHAR_FFFE_RE = re.compile(b"\xef\xbf[\xbe\xbf]")  # U+FFFE / U+FFFF, also illegal in XML
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ODD_CHARS_RE = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f]")


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def detect_format(name: str, head: bytes) -> str | None:
    """Guess the format from the file name and the first bytes (a few KiB are plenty).

    Content wins over the extension where the content is unambiguous: Parquet magic, an XML root of
    ``<i>`` (Bilibili) or ``<packet>`` (Niconico), a JSON ``[`` (Niconico list). A JSON ``{`` is JSONL
    when the extension says so or the head carries generic-schema keys, Niconico JSON when it carries
    Niconico keys. CSV needs a ``.csv`` name or a header naming ``video_time_s`` and ``text``.

    Bilibili classic vs archive: the archive ``p`` puts a long integer dmid first and the unix time in
    field 6 with the font size in field 4, where classic has a decimal time first and the unix time in
    field 4. The first records in ``head`` vote; ties go to classic.

    Returns None for anything else (the caller rejects it as unknown_format or binary_file).
    """
    ext = _extension(name)
    if head.startswith(b"PAR1"):
        return "parquet"
    if ext == ".parquet":
        return "parquet"  # not Parquet inside: the reader reports malformed_parquet
    body = head[len(_BOM) :] if head.startswith(_BOM) else head
    if b"\x00" in body:
        return None
    body = body.lstrip()
    if not body:
        return None
    first = body[:1]
    if first == b"<":
        return _sniff_xml(body)
    if first == b"[":
        return "niconico_json"
    if first == b"{":
        return _sniff_json_object(body, ext)
    if ext == ".csv" or _looks_like_generic_csv_header(body):
        return "csv"
    return None


def parse_tsc_file(
    data: bytes,
    name: str,
    *,
    fmt: str | None = None,
    limits: ParseLimits = ParseLimits(),
) -> ParsedFile:
    """Parse one comment file into comments and rejects. Never raises for any ``data``.

    ``name`` is only used for format detection (its extension); ``fmt`` skips detection and must be one
    of :data:`FORMATS` (an unknown name is a programming error and raises ValueError).
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown comment file format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        with _gc_paused():
            return _parse(bytes(data), name or "", fmt, limits)
    except Exception as exc:  # noqa: BLE001 - last-resort guard: one file must never fail the job
        return ParsedFile(
            fmt or "unknown",
            None,
            [],
            [Reject(0, _R.INTERNAL_ERROR.value, f"{type(exc).__name__}: {exc}"[:200], _head_raw(data))],
        )


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


def _parse(data: bytes, name: str, fmt: str | None, limits: ParseLimits) -> ParsedFile:
    if len(data) > limits.max_file_bytes:
        detail = f"{len(data)} bytes > limit {limits.max_file_bytes}"
        return _whole_file_reject(fmt or "unknown", _R.OVERSIZED_FILE, detail, data)
    if _is_blank(data):
        return _whole_file_reject(fmt or "unknown", _R.EMPTY_FILE, "no content", data)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _whole_file_reject(fmt or "unknown", _R.BAD_ENCODING, "UTF-16/32 is not supported", data)
    head = data[:_SNIFF_BYTES]
    fmt = fmt or detect_format(name, head)
    if fmt != "parquet":
        problem = _content_problem(head, fmt)
        if problem is not None:
            return _whole_file_reject(fmt or "unknown", problem[0], problem[1], data)
    if fmt is None:
        return _whole_file_reject("unknown", _R.UNKNOWN_FORMAT, "no supported format recognised", data)
    out = _Collector(fmt)
    if fmt == "parquet":
        _parse_parquet(data, limits, out)
        return out.result()
    if fmt in ("bilibili_xml", "bilibili_archive_xml", "niconico_xml"):
        data = _sanitize_xml_bytes(data)
    text, bad_bytes = _decode(data)
    if fmt == "bilibili_xml":
        _parse_bilibili(text, bad_bytes, limits, out, archive=False)
    elif fmt == "bilibili_archive_xml":
        _parse_bilibili(text, bad_bytes, limits, out, archive=True)
    elif fmt == "niconico_xml":
        _parse_niconico_xml(text, bad_bytes, limits, out)
    elif fmt == "niconico_json":
        _parse_niconico_json(text, bad_bytes, limits, out)
    elif fmt == "jsonl":
        _parse_jsonl(text, bad_bytes, limits, out)
    else:  # csv
        _parse_csv(text, bad_bytes, limits, out)
    return out.result()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one file is parsed.

    Parsing allocates hundreds of thousands of small tuples and dicts that all survive; each 700
    allocations trigger a collection that re-walks the growing result, which costs about a quarter of
    the parse time. The parsers create no reference cycles that matter, and the previous state is
    restored even on errors.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Collector:
    """Comments and rejects of one file, plus the per-file id set behind ``duplicate``."""

    __slots__ = ("format", "video_id", "comments", "record_nos", "rejects", "seen")

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.video_id: str | None = None
        self.comments: list[Comment] = []
        self.record_nos: list[int] = []
        self.rejects: list[Reject] = []
        self.seen: set[str] = set()

    def reject(self, record_no: int, reason: RejectReason, detail: str, raw: str | Callable[[], str]) -> None:
        """Record a reject; ``raw`` may be a callable so the hot paths build it only when needed."""
        text = raw() if callable(raw) else raw
        self.rejects.append(Reject(record_no, reason.value, detail, _clip_raw(text)))

    def keep(self, record_no: int, comment: Comment, raw: str | Callable[[], str]) -> None:
        """Keep ``comment`` unless a kept comment already used its id."""
        cid = comment.comment_id
        if cid in self.seen:
            self.reject(record_no, _R.DUPLICATE, f"comment_id {cid[:64]} already seen", raw)
            return
        self.seen.add(cid)
        self.comments.append(comment)
        self.record_nos.append(record_no)

    def result(self) -> ParsedFile:
        return ParsedFile(self.format, self.video_id, self.comments, self.rejects, self.record_nos)


def _is_blank(data: bytes) -> bool:
    """Empty, or only ASCII whitespace after an optional BOM (``isspace`` stops early and copies nothing)."""
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    return not body or body.isspace()


def _whole_file_reject(fmt: str, reason: RejectReason, detail: str, data: bytes) -> ParsedFile:
    return ParsedFile(fmt, None, [], [Reject(0, reason.value, detail, _head_raw(data))])


# --------------------------------------------------------------------------------------------------
# Detection helpers
# --------------------------------------------------------------------------------------------------


def _extension(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


_XML_COMMENT_RE = re.compile(rb"<!--.*?(?:-->|$)", re.S)
_XML_ROOT_RE = re.compile(rb"<([A-Za-z_][A-Za-z0-9_.:\-]*)")
_BILI_P_RE = re.compile(rb"<d\s[^>]*?\bp\s*=\s*[\"']([^\"']*)[\"']")


def _sniff_xml(body: bytes) -> str | None:
    """Root element name decides; declarations, PIs, comments and DOCTYPE are skipped."""
    match = _XML_ROOT_RE.search(_XML_COMMENT_RE.sub(b"", body))
    if match is None:
        return None
    root = match.group(1)
    if root == b"i":
        return "bilibili_archive_xml" if _bilibili_archive_votes(body) > 0 else "bilibili_xml"
    if root == b"packet":
        return "niconico_xml"
    return None


def _bilibili_archive_votes(head: bytes) -> int:
    """Positive when the first ``p`` attributes look like the archive layout, negative for classic."""
    votes = 0
    for count, match in enumerate(_BILI_P_RE.finditer(head)):
        if count == 16:
            break
        votes += _archive_vote(match.group(1).split(b","))
    return votes


def _archive_vote(f: list[bytes]) -> int:
    if len(f) != 9:
        return -1 if len(f) == 8 else 0
    f0, f4, f6 = f[0].strip(), f[4].strip(), f[6].strip()
    if not f0.isdigit():
        return -1  # classic: a decimal time ("12.34500") first
    if f4.isdigit() and len(f4) >= 9:
        return -1  # classic: unix time in field 4
    if f4.isdigit() and len(f4) <= 4 and f6.isdigit() and len(f6) >= 9:
        return 1  # archive: font size in field 4, unix time in field 6
    return 1 if len(f0) >= 7 else 0  # a long integer first is a dmid, not a time in seconds


_GENERIC_KEY = b'"video_time_s"'
_NICO_KEYS = (b'"vpos"', b'"vposMs"', b'"threads"', b'"chat"')


def _sniff_json_object(body: bytes, ext: str) -> str | None:
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    generic = _GENERIC_KEY in body
    nico = any(key in body for key in _NICO_KEYS)
    if generic and not nico:
        return "jsonl"
    if nico or ext == ".json":
        return "niconico_json"
    return None


def _looks_like_generic_csv_header(body: bytes) -> bool:
    first_line = body.split(b"\n", 1)[0]
    names = {cell.strip().strip(b'"').strip() for cell in first_line.split(b",")}
    return b"video_time_s" in names and b"text" in names


_ARCHIVE_MAGIC = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "zip archive", b"BZh": "bzip2-compressed",
                  b"\xfd7zXZ": "xz-compressed", b"(\xb5/\xfd": "zstd-compressed"}  # fmt: skip


def _undecodable_share(head: bytes) -> float:
    """Share of the first 4 KiB that is not UTF-8 text: undecodable bytes and C0 controls."""
    sample = head[:4096].decode("utf-8", "replace")
    return len(_ODD_CHARS_RE.findall(sample)) / len(sample) if sample else 0.0


def _content_problem(head: bytes, detected: str | None) -> tuple[RejectReason, str] | None:
    """Whole-file verdict on bytes that cannot be the text format detected (or any).

    NUL bytes and archive magic are binary. Otherwise a head with more than 5% undecodable bytes is
    text in another encoding (GBK, Shift_JIS, ...) when a format was recognised — rejecting it whole
    beats keeping its ASCII-only records — and binary when none was.
    """
    for magic, kind in _ARCHIVE_MAGIC.items():
        if head.startswith(magic):
            return _R.BINARY_FILE, f"{kind} data; decompress before parsing"
    if b"\x00" in head:
        return _R.BINARY_FILE, "binary data (NUL bytes)"
    share = _undecodable_share(head)
    if detected is None:
        return (_R.BINARY_FILE, f"binary data ({share:.0%} undecodable)") if share > 0.1 else None
    if share > 0.05:
        return _R.BAD_ENCODING, f"not UTF-8: {share:.0%} of the head undecodable; transcode to UTF-8"
    return None


# --------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------


def _decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 (BOM allowed) to str. Returns (text, had_bad_bytes); bad byte runs become ``_BAD_CHAR``."""
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", _BAD_BYTES_ERRORS), True


def _sanitize_xml_bytes(data: bytes) -> bytes:
    """Drop the characters XML 1.0 forbids outright (C0 controls, U+FFFE/U+FFFF).

    Real Bilibili dumps carry stray control characters inside comment text; a strict parser would stop
    at the first one and lose the rest of the file. Control bytes never occur inside multi-byte UTF-8
    sequences, so deleting them at byte level is safe. The fast path costs one translate and a compare.
    """
    cleaned = data.translate(None, _C0_DELETE)
    if b"\xef\xbf" in cleaned:
        cleaned = _NONCHAR_FFFE_RE.sub(b"", cleaned)
    return cleaned


def _normalize_text(text: str, unescape: bool) -> str:
    """Unescape (XML-derived formats), drop C0 controls, strip surrounding whitespace."""
    if unescape and "&" in text:
        text = html.unescape(text)
    if _C0_RE.search(text):
        text = _C0_RE.sub("", text)
    return text.strip()


def _text_problem(text: str, limits: ParseLimits, special: bool = False) -> tuple[RejectReason, str] | None:
    if not text:
        return _R.EMPTY_TEXT, "text is empty"
    limit = limits.max_special_chars if special else limits.max_text_chars
    if len(text) > limit:
        return _R.OVERSIZED_TEXT, f"text has {len(text)} chars > limit {limit}"
    return None


def _clip_raw(text: str) -> str:
    text = text[:_RAW_CHARS].replace(_BAD_CHAR, "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def _head_raw(data: Any) -> str:
    try:
        return _clip_raw(bytes(data[:_RAW_CHARS]).decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - only reached from the last-resort guard with odd input
        return ""


class _BadRecord(Exception):
    """Raised by the Niconico and generic-schema field checks; becomes one Reject."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _time_ok(t: float, limits: ParseLimits) -> bool:
    """False for negative, NaN, infinite or beyond-limit times (NaN fails every comparison)."""
    return 0.0 <= t <= limits.max_video_time_s


# --------------------------------------------------------------------------------------------------
# XML scanning (shared by Bilibili and Niconico)
# --------------------------------------------------------------------------------------------------


class _XmlScan(NamedTuple):
    records: list[tuple[int, dict[str, str], str]]
    meta: dict[str, tuple[dict[str, str], str]]
    forbidden: str | None  # detail when defusedxml refused the document
    break_record_no: int  # first record lost to a syntax break, 0 when none
    break_detail: str
    break_raw: str  # source near the break, or the document head when forbidden


def _scan_xml(text: str, record_tag: str, meta_tags: frozenset[str]) -> _XmlScan:
    """Run defusedxml's expat parser over ``text``; collect (record_no, attributes, text) per record
    element, and the first occurrence of each meta element, up to the first syntax error.

    ``DefusedXMLParser`` creates the expat parser and installs the handlers that refuse entity
    declarations and external references. Only the element and text callbacks are then replaced with
    the closures below: the files are flat lists of records, and skipping ElementTree's attribute
    conversion and Element objects makes this about 1.5x faster. expat calls them as it goes, so the
    records completed before an error are already collected when it raises; ``close()`` catches
    truncation (unclosed elements at end of input).
    """
    records: list[tuple[int, dict[str, str], str]] = []
    meta: dict[str, tuple[dict[str, str], str]] = {}
    parts: list[str] = []
    started = 0
    record_attrs: dict[str, str] | None = None
    meta_open: tuple[str, dict[str, str]] | None = None

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal started, record_attrs, meta_open
        if tag == record_tag:
            started += 1
            record_attrs = attrs
            parts.clear()
        elif tag in meta_tags and tag not in meta and record_attrs is None:
            meta_open = (tag, attrs)
            parts.clear()

    def end(tag: str) -> None:
        nonlocal record_attrs, meta_open
        if tag == record_tag:
            if record_attrs is not None:
                records.append((started, record_attrs, "".join(parts)))
                record_attrs = None
        elif meta_open is not None and tag == meta_open[0]:
            meta[tag] = (meta_open[1], "".join(parts).strip())
            meta_open = None

    parser = DefusedXMLParser(target=_NO_TARGET)
    expat = parser.parser
    if expat.EntityDeclHandler is None or expat.ExternalEntityRefHandler is None:
        raise RuntimeError("defusedxml did not install its entity guards; refusing to parse")
    expat.ordered_attributes = False
    expat.StartElementHandler = start
    expat.EndElementHandler = end
    expat.CharacterDataHandler = parts.append
    try:
        parser.feed(text)
        parser.close()
    except DefusedXmlException as exc:
        return _XmlScan([], meta, f"{type(exc).__name__}: {exc}"[:200], 0, "", text[:_RAW_CHARS])
    except (ParseError, ValueError, RecursionError) as exc:
        lost = started if record_attrs is not None else started + 1
        raw = _text_near(text, getattr(exc, "position", None))
        return _XmlScan(records, meta, None, lost, f"XML: {exc}"[:200], raw)
    return _XmlScan(records, meta, None, 0, "", "")


class _NoTarget:
    """A parser target without callbacks: ``_scan_xml`` installs its own on the expat parser."""


_NO_TARGET = _NoTarget()


def _text_near(text: str, position: tuple[int, int] | None) -> str:
    """The source text around an expat error position (line, column), for the reject's raw."""
    if not position:
        return text[-_RAW_CHARS:]
    line_no, column = position
    start = 0
    for _ in range(max(line_no - 1, 0)):
        nl = text.find("\n", start)
        if nl < 0:
            break
        start = nl + 1
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]
    begin = max(0, min(column, len(line)) - 200)
    return line[begin : begin + _RAW_CHARS]


def _xml_break(scan: _XmlScan, out: _Collector) -> None:
    """Report a forbidden document (whole file) or the syntax break (once, after the kept records)."""
    if scan.forbidden is not None:
        out.reject(0, _R.XML_FORBIDDEN, scan.forbidden, scan.break_raw)
    elif scan.break_record_no:
        out.reject(scan.break_record_no, _R.MALFORMED_XML, scan.break_detail, scan.break_raw)


# --------------------------------------------------------------------------------------------------
# Bilibili
# --------------------------------------------------------------------------------------------------

_BILI_META = frozenset({"chatid"})


def _parse_bilibili(text: str, bad_bytes: bool, limits: ParseLimits, out: _Collector, *, archive: bool) -> None:
    scan = _scan_xml(text, "d", _BILI_META)
    chatid = scan.meta.get("chatid")
    if chatid and chatid[1]:
        out.video_id = chatid[1]
    _bilibili_records(scan.records, bad_bytes, limits, out, archive)
    _xml_break(scan, out)


def _bilibili_records(
    records: list[tuple[int, dict[str, str], str]],
    bad_bytes: bool,
    limits: ParseLimits,
    out: _Collector,
    archive: bool,
) -> None:
    """The hot loop: split ``p`` once, convert with int/float, build tuples without NamedTuple.__new__.

    Checks run in a fixed order (encoding, field count, time, mode, other numbers, id, text, duplicate)
    so that a record with several problems always gets the same code.
    """
    max_t = limits.max_video_time_s
    max_chars = limits.max_text_chars
    max_special = limits.max_special_chars
    comments = out.comments
    record_nos = out.record_nos
    seen = out.seen
    reject = out.reject
    unescape = html.unescape
    new = tuple.__new__
    for no, attrs, body in records:
        p = attrs.get("p")
        if p is None:
            reject(no, _R.MISSING_FIELD, "<d> has no p attribute", _bili_raw(attrs, body))
            continue
        if bad_bytes and (_BAD_CHAR in p or _BAD_CHAR in body):
            reject(no, _R.BAD_ENCODING, "invalid UTF-8 bytes in record", _bili_raw(attrs, body))
            continue
        f = p.split(",")
        n = len(f)
        if archive:
            if n != 9:
                reject(no, _R.BAD_FIELD_COUNT, f"p has {n} fields, archive expects 9", _bili_raw(attrs, body))
                continue
            cid, _progress, t_s, m_s, size_s, color_s, posted_s, pool_s, user = f
            scale = 0.001
        else:
            if n == 8:
                t_s, m_s, size_s, color_s, posted_s, pool_s, user, cid = f
            elif n == 9:
                t_s, m_s, size_s, color_s, posted_s, pool_s, user, cid, _weight = f
            else:
                reject(no, _R.BAD_FIELD_COUNT, f"p has {n} fields, expected 8 or 9", _bili_raw(attrs, body))
                continue
            scale = 1.0
        try:
            t = float(t_s) * scale
        except ValueError:
            t = -1.0
        if not 0.0 <= t <= max_t:
            reject(no, _R.BAD_TIME, f"time {t_s[:40]!r} not in [0, {max_t:g}] s", _bili_raw(attrs, body))
            continue
        try:
            mode = int(m_s)
        except ValueError:
            mode = 0
        if not 1 <= mode <= 9:
            reject(no, _R.BAD_MODE, f"mode {m_s[:20]!r} not in 1..9", _bili_raw(attrs, body))
            continue
        try:
            size = int(size_s)
            color = int(color_s)
            posted = int(posted_s)
            pool = int(pool_s)
            if not (
                0 <= size <= _MAX_INT32
                and 0 <= color <= _MAX_COLOR
                and 0 <= posted <= _MAX_POSTED_AT
                and 0 <= pool <= _MAX_INT32
            ):
                raise ValueError
        except ValueError:
            fields = (("font_size", size_s), ("color", color_s), ("posted_at", posted_s), ("pool", pool_s))
            reject(no, _R.BAD_VALUE, _first_bad_int(fields), _bili_raw(attrs, body))
            continue
        cid = cid.strip()
        user = user.strip()
        if not cid:
            reject(no, _R.MISSING_FIELD, "empty comment id in p", _bili_raw(attrs, body))
            continue
        if len(cid) > _MAX_ID_CHARS or len(user) > _MAX_ID_CHARS:
            reject(no, _R.BAD_VALUE, f"id longer than {_MAX_ID_CHARS} chars", _bili_raw(attrs, body))
            continue
        # isprintable() is the cheap test; only ids that fail it (rare) pay for the regex
        if not (cid.isprintable() and user.isprintable()) and ID_CONTROL_CHARS.search(cid + user):
            reject(no, _R.BAD_VALUE, "id with control characters", _bili_raw(attrs, body))
            continue
        if "&" in body:
            body = unescape(body)
        txt = body.strip()
        special = mode >= _SPECIAL_MIN_MODE
        if not txt or len(txt) > (max_special if special else max_chars):
            reason, detail = _text_problem(txt, limits, special)  # type: ignore[misc]
            reject(no, reason, detail, _bili_raw(attrs, body))
            continue
        if cid in seen:
            reject(no, _R.DUPLICATE, f"comment_id {cid[:64]} already seen", _bili_raw(attrs, body))
            continue
        seen.add(cid)
        record_nos.append(no)
        comments.append(
            new(Comment, (cid, t, mode, txt, user or None, posted, size, color, pool, special))
        )


def _first_bad_int(fields: tuple[tuple[str, str], ...]) -> str:
    """The detail for the first of Bilibili's integer fields that failed (slow path, rejects only)."""
    for name, value in fields:
        try:
            if 0 <= int(value) <= _INT_BOUNDS[name]:
                continue
        except ValueError:
            pass
        return f"{name} {value[:40]!r} is not an integer in 0..{_INT_BOUNDS[name]}"
    return "bad integer field"  # pragma: no cover - only called after a failure


def _bili_raw(attrs: dict[str, str], body: str) -> Callable[[], str]:
    def build() -> str:
        shown = " ".join(f'{k}="{v}"' for k, v in attrs.items())
        return f"<d {shown}>{body}</d>"

    return build


# --------------------------------------------------------------------------------------------------
# Niconico (shared record builder, XML and JSON front ends)
# --------------------------------------------------------------------------------------------------

_NICO_COLORS: dict[str, int] = {
    "white": 0xFFFFFF, "red": 0xFF0000, "pink": 0xFF8080, "orange": 0xFFC000, "yellow": 0xFFFF00,
    "green": 0x00FF00, "cyan": 0x00FFFF, "blue": 0x0000FF, "purple": 0xC000FF, "black": 0x000000,
    "white2": 0xCCCC99, "niconicowhite": 0xCCCC99, "red2": 0xCC0033, "truered": 0xCC0033,
    "pink2": 0xFF33CC, "orange2": 0xFF6600, "passionorange": 0xFF6600, "yellow2": 0x999900,
    "madyellow": 0x999900, "green2": 0x00CC66, "elementalgreen": 0x00CC66, "cyan2": 0x00CCCC,
    "blue2": 0x3399FF, "marineblue": 0x3399FF, "purple2": 0x6633CC, "nobleviolet": 0x6633CC,
    "black2": 0x666666,
}  # fmt: skip
_NICO_SIZES = {"small": 18, "medium": 25, "big": 36}
_NICO_MODES = {"ue": 5, "shita": 4, "naka": 1}
_HEX_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")


def _nico_commands(mail: Any) -> tuple[int, int, int] | None:
    """(mode, font_size, color) from Niconico commands; None when ``mail`` has the wrong type."""
    if mail is None:
        tokens: list[str] = []
    elif isinstance(mail, str):
        tokens = mail.split()
    elif isinstance(mail, list) and all(isinstance(t, str) for t in mail):
        tokens = mail
    else:
        return None
    mode, size, color = 1, 25, 0xFFFFFF
    for token in tokens:
        key = token.strip().lower()
        if key in _NICO_MODES:
            mode = _NICO_MODES[key]
        elif key in _NICO_SIZES:
            size = _NICO_SIZES[key]
        elif key in _NICO_COLORS:
            color = _NICO_COLORS[key]
        elif _HEX_COLOR_RE.fullmatch(key):
            color = int(key[1:], 16)
    return mode, size, color


def _nico_comment_id(no: str, thread: str | None, fork: str | None, main_thread: str | None) -> str:
    """``no`` is only unique within a thread and fork; qualify it when it comes from another one."""
    parts = []
    if thread and main_thread and thread != main_thread:
        parts.append(thread)
    if fork and fork not in ("0", "main"):
        parts.append(fork)
    parts.append(no)
    return ":".join(parts)


class _NicoRecord(NamedTuple):
    """Fields of one Niconico comment as found in the source, before validation."""

    comment_id: Any
    vpos: Any  # number or numeric string
    vpos_scale: float  # seconds per vpos unit
    text: Any
    user_id: Any
    posted_at: Any
    mail: Any
    owner: bool


def _nico_build(no: int, rec: _NicoRecord, bad_bytes: bool, limits: ParseLimits, out: _Collector, raw: Any) -> None:
    """Validate one Niconico record and keep or reject it."""
    try:
        comment = _nico_comment(rec, bad_bytes, limits)
    except _BadRecord as bad:
        out.reject(no, bad.reason, bad.detail, raw)
        return
    out.keep(no, comment, raw)


def _nico_comment(rec: _NicoRecord, bad_bytes: bool, limits: ParseLimits) -> Comment:
    """Checks in a fixed order: encoding, id, required fields, time, commands, date, user, text."""
    strings = [s for s in (rec.comment_id, rec.text, rec.user_id) if isinstance(s, str)]
    if (bad_bytes and any(_BAD_CHAR in s for s in strings)) or any(_SURROGATE_RE.search(s) for s in strings):
        raise _BadRecord(_R.BAD_ENCODING, "invalid UTF-8 / lone surrogate in record")
    cid = _id_str(rec.comment_id)
    if cid is None:
        reason = _R.MISSING_FIELD if _absent(rec.comment_id) else _R.BAD_VALUE
        raise _BadRecord(reason, "comment id (id/no) missing or not a short string/int")
    if _absent(rec.vpos):
        raise _BadRecord(_R.MISSING_FIELD, "vpos missing")
    if rec.text is None:
        raise _BadRecord(_R.MISSING_FIELD, "comment text missing")
    vpos = _to_float(rec.vpos)
    t = -1.0 if vpos is None else vpos * rec.vpos_scale
    if not _time_ok(t, limits):
        raise _BadRecord(_R.BAD_TIME, f"vpos {str(rec.vpos)[:40]!r} not a valid time")
    commands = _nico_commands(rec.mail)
    if commands is None:
        raise _BadRecord(_R.BAD_VALUE, "mail/commands is not a string or a list of strings")
    posted = _optional_posted_at(rec.posted_at)
    user = _optional_id({"user_id": rec.user_id}, "user_id")
    if not isinstance(rec.text, str):
        raise _BadRecord(_R.BAD_VALUE, "comment text is not a string")
    text = _normalize_text(rec.text, unescape=True)
    problem = _text_problem(text, limits)
    if problem:
        raise _BadRecord(*problem)
    mode, size, color = commands
    special = rec.owner and text[:1] in ("@", "＠")
    return Comment(cid, t, mode, text, user, posted, size, color, int(rec.owner), special)


def _parse_niconico_xml(text: str, bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    scan = _scan_xml(text, "chat", frozenset({"thread"}))
    thread_meta = scan.meta.get("thread")
    main = thread_meta[0].get("thread") if thread_meta else None
    if not main and scan.records:
        main = scan.records[0][1].get("thread")
    out.video_id = main or None
    for no, attrs, body in scan.records:
        if bad_bytes and (_BAD_CHAR in body or any(_BAD_CHAR in v for v in attrs.values())):
            out.reject(no, _R.BAD_ENCODING, "invalid UTF-8 bytes in record", _nico_xml_raw(attrs, body))
            continue
        no_attr = (attrs.get("no") or "").strip()
        fork = attrs.get("fork")
        rec = _NicoRecord(
            comment_id=_nico_comment_id(no_attr, attrs.get("thread"), fork, main) if no_attr else None,
            vpos=attrs.get("vpos"),
            vpos_scale=0.01,
            text=body,
            user_id=attrs.get("user_id"),
            posted_at=attrs.get("date"),
            mail=attrs.get("mail"),
            owner=fork in ("1", "owner"),
        )
        _nico_build(no, rec, bad_bytes, limits, out, _nico_xml_raw(attrs, body))
    _xml_break(scan, out)


def _nico_xml_raw(attrs: dict[str, str], body: str) -> Callable[[], str]:
    def build() -> str:
        shown = " ".join(f'{k}="{v}"' for k, v in attrs.items())
        return f"<chat {shown}>{body}</chat>"

    return build


_JSON = json.JSONDecoder(strict=False)
_JSON_WS_RE = re.compile(r"[ \t\n\r]*")
_NICO_LEGACY_META = frozenset({"thread", "ping", "leaf", "global_num_res"})


def _parse_niconico_json(text: str, bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    """A top-level list is read entry by entry (a break keeps the entries before it); an object is the
    v1 API shape and is read whole."""
    start = _JSON_WS_RE.match(text).end()  # type: ignore[union-attr]
    if text.startswith("[", start):
        _nico_json_list(text, start + 1, bad_bytes, limits, out)
        return
    try:
        doc = _JSON.decode(text)
    except (ValueError, RecursionError) as exc:
        out.reject(0, _R.MALFORMED_JSON, f"JSON: {exc}"[:200], text[:_RAW_CHARS])
        return
    threads = _v1_threads(doc)
    if threads is None:
        out.reject(0, _R.UNKNOWN_FORMAT, "JSON object without data.threads / threads / comments", text[:_RAW_CHARS])
        return
    _nico_v1_threads(threads, bad_bytes, limits, out)


def _nico_json_list(text: str, pos: int, bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    """Entries are flat comments, legacy ``{"chat": ...}`` wrappers, or legacy bookkeeping entries."""
    main: str | None = None  # the first thread id seen: the video id, and the thread whose `no` is unqualified
    for no, value, raw in _iter_json_list(text, pos):
        if isinstance(value, _JsonBreak):
            out.reject(no, _R.MALFORMED_JSON, value.detail, raw)
            return
        if not isinstance(value, dict):
            out.reject(no, _R.MALFORMED_JSON, "list entry is not an object", raw)
            continue
        chat = value.get("chat")
        if isinstance(chat, dict):
            main = main or _str_or_none(chat.get("thread"))
            _nico_build(no, _legacy_chat_record(chat, main), bad_bytes, limits, out, raw)
        elif value.keys() and value.keys() <= _NICO_LEGACY_META:
            thread = value.get("thread")
            main = main or (_str_or_none(thread.get("thread")) if isinstance(thread, dict) else None)
        else:
            _nico_build(no, _flat_entry_record(value), bad_bytes, limits, out, raw)
        out.video_id = main


def _legacy_chat_record(chat: dict[str, Any], main: str | None) -> _NicoRecord:
    fork = _str_or_none(chat.get("fork"))
    cid: Any = chat.get("no")
    no_str = _id_str(cid)
    if no_str is not None:
        cid = _nico_comment_id(no_str, _str_or_none(chat.get("thread")), fork, main)
    # else: absent or of the wrong type, which _nico_build reports
    return _NicoRecord(
        comment_id=cid,
        vpos=chat.get("vpos"),
        vpos_scale=0.01,
        text=chat.get("content"),
        user_id=chat.get("user_id"),
        posted_at=chat.get("date"),
        mail=chat.get("mail"),
        owner=fork in ("1", "owner"),
    )


def _flat_entry_record(entry: dict[str, Any]) -> _NicoRecord:
    """The niconicomments "formatted" shape: {id, vpos, content, date, date_usec, owner, premium, mail}."""
    return _NicoRecord(
        comment_id=entry.get("id", entry.get("no")),
        vpos=entry.get("vpos"),
        vpos_scale=0.01,
        text=entry.get("content"),
        user_id=entry.get("user_id", entry.get("userId")),
        posted_at=entry.get("date"),
        mail=entry.get("mail"),
        owner=entry.get("owner") is True,
    )


class _JsonBreak(NamedTuple):
    detail: str


def _iter_json_list(text: str, pos: int) -> Iterator[tuple[int, Any, str]]:
    """Yield (record_no, value, raw) for each entry of the JSON list whose ``[`` ends at ``pos``.

    On a syntax error, yields one (record_no, _JsonBreak, raw) for the first entry lost and stops:
    unlike ``json.loads`` this keeps every entry before a truncation.
    """
    ws = _JSON_WS_RE.match
    pos = ws(text, pos).end()  # type: ignore[union-attr]
    if text.startswith("]", pos):
        return
    no = 0
    while True:
        no += 1
        try:
            value, end = _JSON.raw_decode(text, pos)
        except (ValueError, RecursionError) as exc:
            yield no, _JsonBreak(f"JSON: {exc}"[:200]), text[pos : pos + _RAW_CHARS]
            return
        yield no, value, text[pos:end]
        pos = ws(text, end).end()  # type: ignore[union-attr]
        sep = text[pos : pos + 1]
        if sep == ",":
            pos = ws(text, pos + 1).end()  # type: ignore[union-attr]
            continue
        if sep == "]" and not text[pos + 1 :].strip():
            return
        detail = "JSON: expected ',' or ']' after entry" if sep != "]" else "JSON: data after the closing ']'"
        yield no + 1, _JsonBreak(detail), text[pos : pos + _RAW_CHARS]
        return


def _v1_threads(doc: Any) -> list[Any] | None:
    if not isinstance(doc, dict):
        return None
    data = doc.get("data") if isinstance(doc.get("data"), dict) else doc
    threads = data.get("threads")
    if isinstance(threads, list):
        return threads
    comments = data.get("comments")
    if isinstance(comments, list):
        return [{"comments": comments}]
    return None


def _nico_v1_threads(threads: list[Any], bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    """v1 API threads (owner / main / easy forks); comments are numbered across threads in order."""
    valid = [t for t in threads if isinstance(t, dict)]
    main_thread = next((t for t in valid if t.get("fork") == "main"), valid[0] if valid else None)
    main = _str_or_none(main_thread.get("id")) if main_thread else None
    out.video_id = main
    no = 0
    for thread in valid:
        fork = _str_or_none(thread.get("fork"))
        tid = _str_or_none(thread.get("id"))
        comments = thread.get("comments")
        if not isinstance(comments, list):
            continue
        for entry in comments:
            no += 1
            raw = json.dumps(entry, ensure_ascii=False, default=str)[:_RAW_CHARS]
            if not isinstance(entry, dict):
                out.reject(no, _R.MALFORMED_JSON, "comment is not an object", raw)
                continue
            _nico_build(no, _v1_comment_record(entry, tid, fork, main), bad_bytes, limits, out, raw)


def _v1_comment_record(entry: dict[str, Any], tid: str | None, fork: str | None, main: str | None) -> _NicoRecord:
    """{id, no, vposMs, body, commands, userId, postedAt (ISO 8601), ...}; ``id`` is global, ``no`` per fork."""
    cid: Any = entry.get("id")
    if cid is None and entry.get("no") is not None:
        cid = entry["no"]
        no_str = _id_str(cid)
        if no_str is not None:
            cid = _nico_comment_id(no_str, tid, fork, main)
    if "vposMs" in entry:
        vpos, scale = entry.get("vposMs"), 0.001
    else:
        vpos, scale = entry.get("vpos"), 0.01
    return _NicoRecord(
        comment_id=cid,
        vpos=vpos,
        vpos_scale=scale,
        text=entry.get("body", entry.get("content")),
        user_id=entry.get("userId"),
        posted_at=entry.get("postedAt", entry.get("date")),
        mail=entry.get("commands", entry.get("mail")),
        owner=fork == "owner",
    )


# --------------------------------------------------------------------------------------------------
# Generic schema: JSONL, CSV, Parquet
# --------------------------------------------------------------------------------------------------

_GENERIC_COLUMNS = (
    "video_id", "comment_id", "video_time_s", "text", "user_id", "posted_at", "mode", "font_size", "color", "pool",
)  # fmt: skip
_GENERIC_REQUIRED = ("video_time_s", "text")


class _GenericState:
    """Per-file state of the generic formats: the file's video id and derived-id occurrence counts."""

    def __init__(self, out: _Collector, limits: ParseLimits, bad_bytes: bool) -> None:
        self.out = out
        self.limits = limits
        self.bad_bytes = bad_bytes
        self.occurrences: dict[tuple[float, str, str | None, int | None], int] = {}

    def derive_id(self, t: float, text: str, user: str | None, posted: int | None) -> str:
        key = (t, text, user, posted)
        n = self.occurrences.get(key, 0)
        self.occurrences[key] = n + 1
        material = "\x1f".join((repr(t), text, user or "", "" if posted is None else str(posted), str(n)))
        return "h:" + hashlib.sha1(material.encode("utf-8")).hexdigest()[:16]


def _generic_record(no: int, row: Mapping[str, Any], state: _GenericState, raw: str | Callable[[], str]) -> None:
    """Validate one generic-schema row (typed JSON/Parquet values or CSV strings) and keep or reject it."""
    try:
        comment = _generic_comment(row, state)
    except _BadRecord as bad:
        state.out.reject(no, bad.reason, bad.detail, raw)
        return
    state.out.keep(no, comment, raw)


def _generic_comment(row: Mapping[str, Any], state: _GenericState) -> Comment:
    """Checks in a fixed order: encoding, required fields, time, mode, integers, ids, text, video id."""
    strings = [v for v in row.values() if isinstance(v, str)]
    if (state.bad_bytes and any(_BAD_CHAR in s for s in strings)) or any(_SURROGATE_RE.search(s) for s in strings):
        raise _BadRecord(_R.BAD_ENCODING, "invalid UTF-8 / lone surrogate in record")
    if _absent(row.get("video_time_s")):
        raise _BadRecord(_R.MISSING_FIELD, "video_time_s missing")
    if row.get("text") is None:  # an empty or blank text is present: empty_text below
        raise _BadRecord(_R.MISSING_FIELD, "text missing")
    t = _to_float(row["video_time_s"])
    if t is None or not _time_ok(t, state.limits):
        raise _BadRecord(_R.BAD_TIME, f"video_time_s {str(row['video_time_s'])[:40]!r} not a valid time")
    mode = 1 if _absent(row.get("mode")) else _to_int(row["mode"])
    if mode is None or not 1 <= mode <= 9:
        raise _BadRecord(_R.BAD_MODE, f"mode {str(row.get('mode'))[:20]!r} not in 1..9")
    font_size, color, pool = (_optional_int(row, column) for column in ("font_size", "color", "pool"))
    posted = _optional_posted_at(row.get("posted_at"))
    user, cid, vid = (_optional_id(row, column) for column in ("user_id", "comment_id", "video_id"))
    if not isinstance(row["text"], str):
        raise _BadRecord(_R.BAD_VALUE, "text is not a string")
    text = _normalize_text(row["text"], unescape=False)
    problem = _text_problem(text, state.limits, mode >= _SPECIAL_MIN_MODE)
    if problem:
        raise _BadRecord(*problem)
    _check_video_id(vid, state.out)
    if cid is None:
        cid = state.derive_id(t, text, user, posted)
    return Comment(cid, t, mode, text, user, posted, font_size, color, pool, mode >= _SPECIAL_MIN_MODE)


def _optional_int(row: Mapping[str, Any], column: str) -> int | None:
    value = row.get(column)
    if _absent(value):
        return None
    number = _to_int(value)
    if number is None or not 0 <= number <= _INT_BOUNDS[column]:
        raise _BadRecord(_R.BAD_VALUE, f"{column} {str(value)[:40]!r} is not an integer in 0..{_INT_BOUNDS[column]}")
    return number


def _optional_posted_at(value: Any) -> int | None:
    if _absent(value):
        return None
    posted = _to_posted_at(value)
    if posted is None:
        raise _BadRecord(_R.BAD_VALUE, f"posted_at {str(value)[:40]!r} is not unix seconds")
    return posted


def _optional_id(row: Mapping[str, Any], column: str) -> str | None:
    value = row.get(column)
    if _absent(value):
        return None
    parsed = _id_str(value)
    if parsed is None:
        raise _BadRecord(_R.BAD_VALUE, f"{column} is not a string or integer of at most {_MAX_ID_CHARS} chars "
                                       "without control characters")
    return parsed


def _check_video_id(vid: str | None, out: _Collector) -> None:
    """The first video id seen is the file's; a different one later means the file mixes videos."""
    if vid is None:
        return
    if out.video_id is None:
        out.video_id = vid
    elif vid != out.video_id:
        raise _BadRecord(_R.VIDEO_ID_MISMATCH, f"video_id {vid[:64]!r} != file's {out.video_id[:64]!r}")


def _parse_jsonl(text: str, bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    state = _GenericState(out, limits, bad_bytes)
    no = 0
    for line in text.split("\n"):  # not splitlines(): U+2028 and friends are legal inside JSON strings
        line = line.strip()
        if not line:
            continue
        no += 1
        if bad_bytes and _BAD_CHAR in line:
            out.reject(no, _R.BAD_ENCODING, "invalid UTF-8 bytes in line", line)
            continue
        try:
            obj = _JSON.decode(line)
        except (ValueError, RecursionError) as exc:
            out.reject(no, _R.MALFORMED_JSON, f"JSON: {exc}"[:200], line)
            continue
        if not isinstance(obj, dict):
            out.reject(no, _R.MALFORMED_JSON, "line is not a JSON object", line)
            continue
        _generic_record(no, obj, state, line)


def _parse_csv(text: str, bad_bytes: bool, limits: ParseLimits, out: _Collector) -> None:
    # strict: a stray quote is an error for that row (malformed_csv), not a silently merged field
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error) as exc:
        out.reject(0, _R.MALFORMED_CSV, f"no readable header: {exc}"[:200], text[:_RAW_CHARS])
        return
    missing = [c for c in _GENERIC_REQUIRED if c not in header]
    if missing:
        out.reject(0, _R.MISSING_FIELD, f"CSV header lacks {', '.join(missing)}", text[:_RAW_CHARS])
        return
    index = {name: header.index(name) for name in _GENERIC_COLUMNS if name in header}
    state = _GenericState(out, limits, bad_bytes)
    lines: list[str] = []  # split only when a row fails, once
    no = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            no += 1
            lines = lines or text.split("\n")
            line = lines[min(reader.line_num, len(lines)) - 1]
            out.reject(no, _R.MALFORMED_CSV, f"CSV line {reader.line_num}: {exc}"[:200], line)
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        no += 1
        raw = _csv_raw(row)
        if len(row) != len(header):
            out.reject(no, _R.BAD_FIELD_COUNT, f"{len(row)} cells, header has {len(header)}", raw)
            continue
        _generic_record(no, {name: row[i] for name, i in index.items()}, state, raw)


def _csv_raw(row: list[str]) -> Callable[[], str]:
    def build() -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(row)
        return buffer.getvalue()

    return build


def _parse_parquet(data: bytes, limits: ParseLimits, out: _Collector) -> None:
    """Read the generic columns with pyarrow (imported lazily: only Parquet inputs pay for it)."""
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(io.BytesIO(data))
        names = set(pf.schema_arrow.names)
        missing = [c for c in _GENERIC_REQUIRED if c not in names]
        if missing:
            out.reject(0, _R.MISSING_FIELD, f"Parquet schema lacks {', '.join(missing)}", _head_raw(data))
            return
        metadata = pf.metadata
        inflated = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if inflated > 16 * limits.max_file_bytes:
            out.reject(0, _R.OVERSIZED_FILE, f"row groups inflate to {inflated} bytes", _head_raw(data))
            return
        table = pf.read(columns=[c for c in _GENERIC_COLUMNS if c in names])
        decoded = {name: _parquet_values(table.column(name)) for name in table.column_names}
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for corrupt input
        out.reject(0, _R.MALFORMED_PARQUET, f"{type(exc).__name__}: {exc}"[:200], _head_raw(data))
        return
    columns = {name: values for name, (values, _) in decoded.items()}
    state = _GenericState(out, limits, bad_bytes=any(bad for _, bad in decoded.values()))
    for i in range(table.num_rows):
        row = {name: values[i] for name, values in columns.items()}
        _generic_record(i + 1, row, state, _json_raw(row))


def _parquet_values(column: Any) -> tuple[list[Any], bool]:
    """(values, had_bad_bytes). Parquet does not check that a string column holds UTF-8: when one does not,
    its bytes are decoded here with bad runs marked, so only the rows holding them are rejected (bad_encoding)."""
    try:
        return column.to_pylist(), False
    except UnicodeDecodeError:
        import pyarrow as pa

        raw = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
        return [None if v is None else v.decode("utf-8", _BAD_BYTES_ERRORS) for v in raw.to_pylist()], True


def _json_raw(row: Mapping[str, Any]) -> Callable[[], str]:
    return lambda: json.dumps(row, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------------------------------
# Value conversion (typed JSON/Parquet values and CSV/XML strings alike)
# --------------------------------------------------------------------------------------------------


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    try:  # Decimal and other numeric types from Parquet
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _to_int(value: Any) -> int | None:
    """Integers, integral floats and integer-like strings ("25", "25.0"); never bools."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = _to_float(value)
    if number is not None and number.is_integer():
        return int(number)
    return None


def _to_posted_at(value: Any) -> int | None:
    """Non-negative unix seconds from an integer, an integral float/string, a datetime or ISO-8601."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        try:
            number: int | None = int(value.timestamp())
        except (OverflowError, ValueError, OSError):
            return None
    else:
        number = _to_int(value)
        if number is None and isinstance(value, str):
            try:
                return _to_posted_at(_dt.datetime.fromisoformat(value.strip()))
            except ValueError:
                return None
    if number is None or not 0 <= number <= _MAX_POSTED_AT:
        return None
    return number


def _id_str(value: Any) -> str | None:
    """Ids may be strings or integers (never bools or floats) of at most ``_MAX_ID_CHARS`` characters and
    without control characters; returns the stripped string, or None when absent or unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        value = value.strip()
        return value if 0 < len(value) <= _MAX_ID_CHARS and not ID_CONTROL_CHARS.search(value) else None
    return None


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)
