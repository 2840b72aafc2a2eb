#!/usr/bin/env bash
# Configures and builds into ${BUILD_DIR:-build}.  Extra arguments go to cmake;
# OV2_TARGETS="a b" builds only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
if [[ -n "${OV2_TARGETS:-}" ]]; then
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target $OV2_TARGETS
else
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
