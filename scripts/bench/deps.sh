#!/usr/bin/env bash
# Installs what the benchmarks need beyond scripts/deps.sh: strongSwan with
# kernel-libipsec (the user-space ESP peer measured side by side).  Our
# benchmark runs its own charon per namespace, so a system-wide charon is not
# started by the install; if this script installed strongSwan, it also leaves
# the system unit disabled (a strongSwan that was there before is not touched).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
PKGS=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins iperf3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
had_starter=0
dpkg-query -W -f='${Status}' strongswan-starter 2>/dev/null | grep -q "install ok installed" && had_starter=1
echo "ipsecov2 bench: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
own_policy_rc=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && own_policy_rc=1
fi
apt_rc=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || apt_rc=$?
((own_policy_rc)) && rm -f /usr/sbin/policy-rc.d
((apt_rc == 0)) || exit "$apt_rc"
if ((!had_starter)) && [[ -e /lib/systemd/system/strongswan-starter.service ]] && command -v systemctl >/dev/null; then
  systemctl disable --quiet strongswan-starter.service 2>/dev/null || true
fi
