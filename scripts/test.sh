#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test suite.
# Root is needed (BPF, AF_XDP, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then echo "ipsecov2: the tests need root (BPF, namespaces); run with sudo" >&2; exit 1; fi
scripts/deps.sh
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 -j1 "$@"
