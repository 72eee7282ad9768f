"""A corrupt file in the middle of a batch is set aside with its reason, and the rest of the batch lands whole.

Nightly landing zones receive files cut short by a failed upload, overwritten with garbage, or gzipped under the
wrong name. One of them must cost its own rows only: the batch's job succeeds, every comment of every sound file
is in bronze.tsc exactly once, and the bad file is quarantined in bronze.tsc_rejects (its path, a reason code and
its first bytes), where an operator finds it.
"""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.ingest import ingest_files
from kfr_spark.ledger import JobRun
from kfr_spark.synth import SynthConfig, generate
from trials import TRIAL_IDS, TRIALS, kill_point, tally  # noqa: F401  (tally is a fixture)

pytestmark = [pytest.mark.spark, pytest.mark.resilience]


def comments_in(path: Path) -> int:
    return len(re.findall(rb"<d p=", path.read_bytes()))


@pytest.mark.parametrize("trial", range(TRIALS), ids=TRIAL_IDS)
def test_corrupt_files_mid_batch_are_quarantined_and_the_rest_lands(spark, lake, base_config, tmp_path, tally, trial):  # noqa: F811  (a fixture)
    synth = tmp_path / "synth"
    generate(SynthConfig(seed=3, n_videos=9, n_users=200, n_comments=6000), synth, workers=1)
    files = sorted((synth / "danmaku").glob("*.xml"))
    landing = tmp_path / "landing"
    landing.mkdir()
    for f in files:
        shutil.copy(f, landing / f.name)
    # three of the nine, drawn per trial, go bad in three different ways
    place = kill_point("corrupt", trial)
    cut, garbage, wrong_codec = (landing / files[i].name for i in place.sample(range(len(files)), 3))
    data = cut.read_bytes()
    at = int(len(data) * place.uniform(0.2, 0.8))  # an upload that died part way, on a character boundary
    while data[at] & 0xC0 == 0x80:
        at -= 1
    cut.write_bytes(data[:at])
    kept_before_cut = len(re.findall(rb"<d p=[^>]*>[^<]*</d>", data[:at]))
    garbage.write_bytes(bytes(range(256)) * 8)  # overwritten with binary
    wrong_codec.write_bytes(gzip.compress(wrong_codec.read_bytes()))  # gzipped, still named .xml

    run = JobRun(job="ingest", config_hash="test")
    cfg = base_config.ingest.model_copy(update={"video_id_from": "filename"})
    summary = ingest_files(spark, lake, cfg, [str(landing)], run)

    tsc = delta_io.read_table(spark, lake, "bronze.tsc")
    per_file = {Path(r["source_file"]).name: r["n"]
                for r in tsc.groupBy("source_file").agg(F.count("*").alias("n")).collect()}
    sound = [f for f in files if f.name not in {cut.name, garbage.name, wrong_codec.name}]
    for f in sound:
        assert per_file[f.name] == comments_in(f), f.name  # every comment of a sound file, once
    keys = tsc.select("source", "video_id", "comment_id").distinct().count()
    assert keys == tsc.count()
    assert per_file.get(cut.name, 0) == kept_before_cut  # what came before the cut is kept

    rejects = delta_io.read_table(spark, lake, "bronze.tsc_rejects")
    quarantined = {Path(r["source_file"]).name: r["reason"] for r in rejects.collect()}
    assert quarantined.get(cut.name) == "malformed_xml"
    assert quarantined.get(garbage.name) == "binary_file"
    assert wrong_codec.name in quarantined  # whatever the codec check calls it, the file is set aside
    assert all(r["detail"] or r["raw"] is not None for r in rejects.collect())  # each says what it saw
    assert summary.comments_inserted == tsc.count() and summary.rejects_inserted == rejects.count() >= 3
    lost = sum(comments_in(f) for f in sound) + kept_before_cut - tsc.count()
    tally.trial("corrupt files mid-batch", trial, files=len(files), quarantined=len(quarantined),
                rows_checked=tsc.count(), duplicates=tsc.count() - keys, lost_rows=lost,
                bad_files=f"cut {cut.name} at {at / len(data):.0%}, binary {garbage.name}, gzip {wrong_codec.name}")
