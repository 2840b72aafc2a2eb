#!/usr/bin/env bash
# Installs what ipsecov2 needs to build, test and run on Debian 12.  Idempotent:
# installs only what is missing.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config clang llvm
  libbpf-dev libxdp-dev bpftool linux-libc-dev
  libssl-dev libipsec-mb-dev nlohmann-json3-dev libcli11-dev libsystemd-dev libpcap-dev libtoml11-dev libmnl-dev
  libgtest-dev libgmock-dev
  iproute2 ethtool iputils-ping tcpdump tshark iperf3 python3 python3-scapy python3-cryptography
  procps psmisc util-linux strace
  man-db debootstrap
  clang-tidy-14 cppcheck
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ipsecov2: installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
