#!/usr/bin/env bash
# Build horovod 0.28.1 (the last release) against the venv's torch, once, and print the wheel's path.
# 0.28.1 fails against torch >= 2.1 because torch's headers need C++17 and horovod asks for C++14;
# the upstream fix is merged but unreleased, so we patch the two CMakeLists of the sdist.
# CPU collectives through Gloo only: no MPI, no TensorFlow, no MXNet.
set -euo pipefail
cache=${KFR_CACHE_DIR:-$HOME/.cache/kfr-spark}
python=${PYTHON:-python3}
version=0.28.1
torch_version=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')
pytag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
out=$cache/wheels/horovod-$version-torch$torch_version-$pytag
existing=$(ls "$out"/horovod-*.whl 2>/dev/null | head -1 || true)
if [[ -n $existing ]]; then echo "$existing"; exit 0; fi

log() { printf '[build_horovod] %s\n' "$*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "building horovod $version for torch $torch_version ($pytag); takes ~6 min on 2 cores"
"$python" -m pip download -q --no-deps --no-binary :all: -d "$work" "horovod==$version" >&2
tar -xzf "$work/horovod-$version.tar.gz" -C "$work"
src=$work/horovod-$version
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt" || { log "patch did not apply"; exit 1; }
mkdir -p "$out"
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
  "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$src" >&2
ls "$out"/horovod-*.whl | head -1
