#!/usr/bin/env bash
# Builds the Debian package into build-pkg/ipsecov2_<version>_<arch>.deb.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build-pkg -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DOV2_BUILD_TESTS=OFF >/dev/null
cmake --build build-pkg -j"$(nproc)"
(cd build-pkg && cpack -G DEB >/dev/null)
ls build-pkg/*.deb
