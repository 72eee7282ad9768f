"""`kfr videos`: the video catalog CSV → bronze.videos, bad rows → ops.stage_rejects."""

from __future__ import annotations

import pytest

from kfr_spark.config import ShotsConfig
from kfr_spark.videos import CatalogReject, CatalogRow, parse_catalog, parse_catalog_row, resolve_uri

CFG = ShotsConfig()
HEADER = "video_id,title,duration_s,fps,width,height,path\n"


def _row(**values) -> dict[str, str]:
    row = {"video_id": "v1", "title": "t", "duration_s": "12.5", "fps": "25", "width": "256", "height": "144",
           "path": "videos/v1.mp4"}
    row.update(values)
    return row


def test_a_good_row_resolves_its_path_against_the_catalog_folder():
    row = parse_catalog_row(2, _row(), "/data/synth", CFG)
    assert row == CatalogRow(2, "v1", "t", 12.5, 25.0, 256, 144, "/data/synth/videos/v1.mp4")


def test_empty_optional_fields_become_nulls():
    row = parse_catalog_row(2, _row(fps="", width="", height="", path="", title=""), "/d", CFG)
    assert isinstance(row, CatalogRow)
    assert (row.fps, row.width, row.height, row.uri, row.title) == (None, None, None, None, None)


@pytest.mark.parametrize(
    "values, reason",
    [
        ({"video_id": ""}, "bad_video_id"),
        ({"video_id": "../etc/passwd"}, "bad_video_id"),
        ({"video_id": "a b"}, "bad_video_id"),
        ({"video_id": "x" * 200}, "bad_video_id"),
        ({"duration_s": "0"}, "bad_duration"),
        ({"duration_s": "-3"}, "bad_duration"),
        ({"duration_s": "abc"}, "bad_duration"),
        ({"duration_s": "nan"}, "bad_duration"),
        ({"duration_s": "1e9"}, "bad_duration"),
        ({"fps": "0"}, "bad_fps"),
        ({"fps": "90000"}, "bad_fps"),
        ({"fps": "fast"}, "bad_fps"),
        ({"width": "12.5"}, "bad_size"),
        ({"height": "-1"}, "bad_size"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(values, reason):
    result = parse_catalog_row(7, _row(**values), "/d", CFG)
    assert isinstance(result, CatalogReject)
    assert (result.line_no, result.reason) == (7, reason)


def test_paths_are_normalised_and_urls_kept():
    assert resolve_uri("../v/a.mp4", "/data/cat") == "/data/v/a.mp4"
    assert resolve_uri("/abs/a.mp4", "/data/cat") == "/abs/a.mp4"
    assert resolve_uri("https://example.org/a.mp4", "/data") == "https://example.org/a.mp4"
    assert resolve_uri("  ", "/data") is None


def test_a_catalog_without_a_required_column_is_one_reject():
    out = list(parse_catalog(b"video_id,title\nv1,t\n", "file:/d/c.csv", CFG))
    assert [(r.line_no, r.reason) for r in out] == [(0, "missing_column")]


def test_extra_columns_are_ignored_and_another_id_column_can_be_chosen():
    content = b"video_id,chatid,title,duration_s,fps,width,height,path,n_frames\nsyn1,123,t,10,25,256,144,,250\n"
    (row,) = parse_catalog(content, "file:/d/c.csv", CFG, id_column="chatid")
    assert isinstance(row, CatalogRow) and row.video_id == "123" and row.uri is None


def _snapshot(spark, lake, name):
    from kfr_spark import delta_io
    from kfr_spark.catalog import spec

    table = spec(name)
    cols = [c for c in table.schema.fieldNames() if c not in table.lineage_columns]
    return sorted(tuple(r) for r in delta_io.read_table(spark, lake, name).select(*cols).collect())


def test_load_catalog_lands_good_rows_rejects_bad_ones_and_reruns_exactly(spark, lake, tmp_path):
    from kfr_spark.ledger import JobRun
    from kfr_spark.videos import load_catalog

    csv = tmp_path / "catalog" / "videos.csv"
    csv.parent.mkdir()
    csv.write_text(
        HEADER
        + "good1,First,30.0,25,256,144,videos/good1.mp4\n"
        + "good2,Second,12.0,,,,\n"
        + "bad id!,Bad,10,25,256,144,x.mp4\n"
        + "neg,Neg,-1,25,256,144,x.mp4\n"
        + "fast,Fast,10,100000,256,144,x.mp4\n"
        + "good1,Again,31.0,25,256,144,videos/other.mp4\n",
        encoding="utf-8",
    )
    summary = load_catalog(spark, lake, CFG, [str(csv)], JobRun("videos", "test"))
    assert summary.rows == 6
    assert summary.rejects_by_reason == {"bad_duration": 1, "bad_fps": 1, "bad_video_id": 1, "duplicate_video_id": 1}
    videos = {r["video_id"]: r for r in _rows(spark, lake, "bronze.videos")}
    assert set(videos) == {"good1", "good2"}
    assert videos["good1"]["uri"] == str(csv.parent / "videos" / "good1.mp4")
    assert videos["good1"]["title"] == "First"  # the first row of a duplicated id wins
    assert videos["good2"]["uri"] is None and videos["good2"]["fps"] is None
    rejects = {r["entity_key"].rsplit(":", 1)[1]: r["reason"] for r in _rows(spark, lake, "ops.stage_rejects")}
    assert rejects == {"4": "bad_video_id", "5": "bad_duration", "6": "bad_fps", "7": "duplicate_video_id"}

    before = (_snapshot(spark, lake, "bronze.videos"), _snapshot(spark, lake, "ops.stage_rejects"))
    again = load_catalog(spark, lake, CFG, [str(csv)], JobRun("videos", "test"))
    assert again.videos_written == 0
    assert (_snapshot(spark, lake, "bronze.videos"), _snapshot(spark, lake, "ops.stage_rejects")) == before


def _rows(spark, lake, name):
    from kfr_spark import delta_io

    return delta_io.read_table(spark, lake, name).collect()
