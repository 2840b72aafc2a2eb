#!/usr/bin/env bash
# Builds the Debian package into build-pkg/ipsecov2_<version>_<arch>.deb.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# -O2, not CMake's Release default -O3: GCC 12 at -O3 raises a false -Wrestrict
# inside libstdc++'s std::string (GCC bug 105329), and warnings are errors.
cmake -S . -B build-pkg -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" \
  -DCMAKE_INSTALL_PREFIX=/usr -DOV2_BUILD_TESTS=OFF >/dev/null
cmake --build build-pkg -j"$(( $(nproc) < 2 ? $(nproc) : 2 ))"
(cd build-pkg && cpack -G DEB >/dev/null)
ls build-pkg/*.deb
