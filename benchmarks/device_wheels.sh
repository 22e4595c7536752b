#!/usr/bin/env bash
# Fetch, on a machine with network, the wheels that benchmarks/device_check.sh needs on the
# workplace's offline H200 image (Python 3.12, x86-64): what qkbench requires and that image
# lacks. They land in .whl/ (git-ignored through .git/info/exclude), to be carried along.
#
#   benchmarks/device_wheels.sh [PYTHON_VERSION]      (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$tag")
done
# pydantic with its requirements resolved (pydantic pins one pydantic-core): the rest of
# qkbench's requirements are on that image.
python3 -m pip download --only-binary=:all: --python-version "$version" \
    --implementation cp "${platforms[@]}" -d .whl pydantic
ls -l .whl
