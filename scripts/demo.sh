#!/usr/bin/env bash
# The demo: generate a small synthetic dataset, ingest it into Delta on embedded local Spark, and print a
# readable summary. Reruns are safe: the data is regenerated identically and the ingest is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
kfr=.venv/bin/kfr
comments=${DEMO_COMMENTS:-300000}
started=$SECONDS
echo "== 1/3 synthetic data ($comments comments)"
$kfr synth --comments "$comments"
echo "== 2/3 ingest into bronze.tsc"
$kfr ingest
echo "== 3/3 summary"
$kfr tables
$kfr runs --last 5
echo "demo finished in $((SECONDS - started))s; lakehouse: $(pwd)/data/lakehouse"
