#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_suite.sh installs on a GPU machine that has torch, timm,
# pyarrow, pandas, fsspec and pyyaml but no zarr: zarr and what it needs beyond those (numcodecs,
# donfig, google-crc32c), as CPython 3.12 manylinux x86-64 wheels, into benchmarks/wheels
# (git-ignored; a few MiB, carried with the working tree). Versions are this environment's, so
# the suite reads stores as the tests here do; pass NAME==VERSION arguments to choose others.
#
#   bash benchmarks/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
    for name in zarr numcodecs donfig google-crc32c; do
        version=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null) \
            || { echo "fetch_gpu_wheels: $name is not installed here; name it as NAME==VERSION" >&2; exit 2; }
        packages+=("$name==$version")
    done
fi
rm -rf benchmarks/wheels
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d benchmarks/wheels "${packages[@]}"
ls -l benchmarks/wheels
du -sh benchmarks/wheels
