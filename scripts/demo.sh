#!/usr/bin/env bash
# The demo: generate a synthetic dataset (danmaku XML, a video catalog and rendered MP4s), then run every stage
# built so far on embedded local Spark and print a readable summary. Reruns are safe: the data is regenerated
# identically and every stage is idempotent (a second run finds nothing new to do).
set -euo pipefail
cd "$(dirname "$0")/.."
kfr=.venv/bin/kfr
comments=${DEMO_COMMENTS:-300000}
videos=${DEMO_VIDEOS:-60}
started=$SECONDS
step() { echo; echo "== $1"; }
step "1/8 synthetic data: $comments comments on $videos rendered videos"
$kfr synth --comments "$comments" --videos "$videos" --with-video --overwrite
step "2/8 ingest danmaku → bronze.tsc"
$kfr ingest
step "3/8 video catalog → bronze.videos"
$kfr videos data/synth/videos.csv --id-column chatid
step "4/8 shots and key frames → silver.shots"
$kfr shots
step "5/8 align comments to shots → silver.tsc_aligned"
$kfr align
step "6/8 tokenize, normalize, sentiment → silver.tsc_tokens, silver.vocabulary"
$kfr tokenize
step "7/8 key frame features (EfficientNet-Lite0) → silver.frame_features"
$kfr features
step "8/8 summary"
$kfr tables
$kfr runs --last 8
echo "demo finished in $((SECONDS - started))s; lakehouse: $(pwd)/data/lakehouse"
