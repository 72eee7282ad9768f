#!/usr/bin/env bash
# The demo is the whole product: generate a synthetic dataset (danmaku XML, a video catalog and rendered MP4s),
# run `kfr nightly` on embedded local Spark (ingest → shots → align → tokenize → features → dataset → train KFRCI
# and JIFR with Petastorm + Horovod → evaluate → score → CDN export → gallery), and print where everything is.
# Reruns are safe: the data is regenerated identically and the nightly skips every step whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
kfr=.venv/bin/kfr
comments=${DEMO_COMMENTS:-300000}
videos=${DEMO_VIDEOS:-60}
procs=${DEMO_TRAIN_PROCS:-2}
epochs=${DEMO_EPOCHS:-2}
started=$SECONDS
step() { echo; echo "== $1"; }
step "1/3 synthetic data: $comments comments on $videos rendered videos"
$kfr synth --comments "$comments" --videos "$videos" --with-video --overwrite
step "2/3 kfr nightly: every stage, KFRCI and JIFR trained on $procs Horovod processes, scored, exported, shown"
$kfr nightly --set train.num_proc="$procs" --set train.epochs="$epochs"
step "3/3 summary"
$kfr tables
.venv/bin/python - <<'PY'
import datetime
from pathlib import Path

from kfr_spark.config import load_config
from kfr_spark.export import current_manifest
from kfr_spark.tracking import tracking_uri

c = load_config()
today = datetime.datetime.now(datetime.UTC).date()
print(f"tables:   {Path(c.lakehouse.root).resolve()}  (gold.user_keyframes: the ranked key frames)")
print(f"export:   {current_manifest(c.export.out_dir, today) or c.export.out_dir}  (manifest.jsonl/, manifest.parquet/, images under {Path(c.export.out_dir).resolve() / 'images'})")
print(f"gallery:  {Path(c.gallery.out_dir).resolve() / 'index.html'}")
print(f"mlflow:   .venv/bin/mlflow ui --backend-store-uri {tracking_uri(c)}")
print("notebook: notebooks/explore_outputs.ipynb")
PY
echo "demo finished in $((SECONDS - started))s"
