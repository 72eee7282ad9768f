#!/usr/bin/env bash
# Set up everything kfr-spark needs, idempotently: a project virtualenv (.venv) from the lock file,
# petastorm without its clashing pins, horovod from a cached C++17 wheel, and the Delta jars.
# Everything downloaded or built is cached under $KFR_CACHE_DIR (default ~/.cache/kfr-spark), so a
# second run, or a run in a fresh clone on the same machine, takes seconds and needs no network.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cache=${KFR_CACHE_DIR:-$HOME/.cache/kfr-spark}
python=${KFR_PYTHON:-python3.11}
uv_version=0.13.8
venv=.venv
stamp=$venv/.kfr-bootstrap

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# What the environment is made of; a change to any of these makes the stamp stale.
fingerprint() {
  cat requirements/lock.txt scripts/bootstrap.sh scripts/build_horovod.sh pyproject.toml \
      kfr_spark/jars.py kfr_spark/jvm_udfs.py kfr_spark/jvm/*.java | sha256sum | cut -c1-16
}

# 0. Debian's Chromium for the gallery's browser test (Playwright drives it; no browser is ever downloaded
#    by a test tool). Checked on every run: it lives outside the venv.
if [[ -n ${KFR_CHROMIUM:-} ]]; then
  :  # a browser of the user's choosing
elif ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium (the gallery's browser test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-wqy-microhei >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
           --no-install-recommends chromium fonts-wqy-microhei >/dev/null; } \
      || log "could not install chromium: the gallery browser test will fail until it is installed (or KFR_CHROMIUM is set)"
  else
    log "chromium not found: install it (apt-get install chromium) or set KFR_CHROMIUM for the gallery browser test"
  fi
fi

want=$(fingerprint)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $venv/bin/kfr ]]; then
  log "environment up to date ($venv, cache $cache)"
  exit 0
fi

command -v "$python" >/dev/null || { log "need $python on PATH (the design's libraries pin Python 3.11)"; exit 1; }
command -v java >/dev/null || { log "need a Java 17 runtime on PATH for Spark 4.0"; exit 1; }
mkdir -p "$cache"

# 1. uv, in a tools venv of its own: fast installs hard-linked from its cache.
uv=$cache/tools/bin/uv
if [[ ! -x $uv ]] || [[ $("$uv" --version | cut -d' ' -f2) != "$uv_version" ]]; then
  log "installing uv $uv_version into $cache/tools"
  "$python" -m venv "$cache/tools"
  "$cache/tools/bin/pip" install -q "uv==$uv_version"
fi
export UV_CACHE_DIR=$cache/uv UV_LINK_MODE=${UV_LINK_MODE:-hardlink}

# 2. The project venv from the lock file (seeded with pip for horovod's sdist build).
if [[ ! -x $venv/bin/python ]]; then
  log "creating $venv"
  "$uv" venv -q --seed -p "$python" "$venv"
fi
log "syncing $venv with requirements/lock.txt"
"$uv" pip sync -q -p "$venv/bin/python" requirements/lock.txt 2>&1 | grep -v "^warning" >&2 || true
"$uv" pip install -q -p "$venv/bin/python" pip  # pip sync removes the seed; horovod's build wants it
"$uv" pip install -q -p "$venv/bin/python" --no-deps petastorm==0.13.1

# 3. horovod: a wheel built once per (horovod, torch, python) and cached.
wheel=$(KFR_CACHE_DIR=$cache PYTHON="$venv/bin/python" bash scripts/build_horovod.sh)
"$uv" pip install -q -p "$venv/bin/python" --no-deps "$wheel"

# 4. The project itself, editable, so `kfr` is on the venv's PATH.
"$uv" pip install -q -p "$venv/bin/python" --no-deps -e .

# 5. Delta jars, resolved once from Maven Central into the cache, used offline from then on.
KFR_CACHE_DIR=$cache "$venv/bin/python" -m kfr_spark.jars fetch >&2

# 6. The JVM UDFs (kfr_spark/jvm/*.java) compiled once per (sources, Spark) into the cache. Optional: without a
#    JDK's javac the jobs use their Python path.
KFR_CACHE_DIR=$cache "$venv/bin/python" -m kfr_spark.jvm_udfs build

echo "$want" > "$stamp"
log "environment ready: $venv (cache $cache)"
