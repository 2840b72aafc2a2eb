#!/usr/bin/env bash
# The .deb on a clean Debian 12: makes a minbase bookworm root with debootstrap
# (or unpacks the cached one), installs build-pkg/ipsecov2_*.deb there with its
# dependencies through apt inside the chroot, checks that the files are where
# the README says, checks the installed unit with `systemd-analyze verify`, and
# starts the installed daemon from the chroot in a network namespace with a
# veth pair as the wire: `ipsecov2ctl caps` must answer through the socket,
# SIGTERM must end it with exit 0 and remove the socket, the ov2 device and
# the XDP program.  Removes everything it made (namespace, chroot), also on
# failure; the chroot's mounts live in a private mount namespace and end with
# it, so none reaches the host.
#
# Not part of scripts/test.sh (CI): it needs a second (release) build of the
# daemon (scripts/package.sh, ~4 min from a cold cache) and the Debian mirror
# (~2.5 min for debootstrap the first time, ~1 min for apt).  Every network
# step is bounded by a timeout.  Root only.
#
#   sudo scripts/package-test.sh             # builds the .deb if build-pkg/ has none
#   OV2_ROOTFS_CACHE=/path/rootfs.tar  ...   # where the minbase root is cached
#                                            # (default /var/cache/ipsecov2/bookworm-minbase.tar;
#                                            #  OV2_ROOTFS_CACHE= disables the cache)
#   OV2_MIRROR=http://deb.debian.org/debian  # the Debian mirror for debootstrap
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then echo "package-test: needs root (chroot, namespaces)" >&2; exit 1; fi
for tool in debootstrap unshare chroot ip systemd-analyze; do
  command -v "$tool" >/dev/null || { echo "package-test: $tool is missing (scripts/deps.sh)" >&2; exit 1; }
done

deb=$(ls -t build-pkg/ipsecov2_*.deb 2>/dev/null | head -1 || true)
if [[ -z $deb ]]; then
  scripts/package.sh
  deb=$(ls -t build-pkg/ipsecov2_*.deb | head -1)
fi
echo "package-test: $deb"
cache=${OV2_ROOTFS_CACHE-/var/cache/ipsecov2/bookworm-minbase.tar}
mirror=${OV2_MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d /tmp/ov2pkg.XXXXXX)
root=$work/root
ns=ov2pkg$$
failed=0
cleanup() {
  local rc=$?
  # The daemon (if still running) lives in the namespace.
  if ip netns list 2>/dev/null | grep -qw "$ns"; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
  # Never remove a tree something is mounted in (a bind of /dev would be
  # emptied): the mounts are private to the unshare'd shells, so this holds.
  if [[ -d $work ]]; then
    if findmnt -rn -o TARGET | grep -q "^$work"; then
      echo "package-test: something is still mounted under $work; not removing it" >&2
      rc=1
    else
      rm -rf "$work"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check() {  # check DESCRIPTION COMMAND...: prints ok/FAIL, counts failures
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "  ok    $what"; else echo "  FAIL  $what"; failed=$((failed + 1)); fi
}

# Runs a command in the chroot inside a private mount namespace with /proc,
# /dev, /sys and an empty /run; the mounts vanish with it.
in_root() {
  unshare --mount --propagation private -- /bin/sh -c '
    r=$1; shift
    mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && mount -t sysfs sysfs "$r/sys" &&
    mount -t bpf bpf "$r/sys/fs/bpf" && mount -t tmpfs -o mode=0755 tmpfs "$r/run" || exit 99
    exec chroot "$r" "$@"' in_root "$root" "$@"
}

# 1. A clean Debian 12 minbase root.
t0=$SECONDS
mkdir -p "$root"
if [[ -n $cache && -f $cache ]]; then
  tar -C "$root" -xf "$cache"
  echo "package-test: minbase root from $cache ($((SECONDS - t0)) s)"
else
  timeout 900 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; echo "package-test: debootstrap failed" >&2; exit 1; }
  echo "package-test: debootstrap --variant=minbase bookworm: $((SECONDS - t0)) s"
  if [[ -n $cache ]]; then
    mkdir -p "$(dirname "$cache")"
    tar -C "$root" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  fi
fi
# The host's Debian sources (bookworm, -updates, -security) if it has them,
# so the chroot sees what a real Debian 12 machine sees.
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
  rm -f "$root/etc/apt/sources.list"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
check "the root is a clean Debian 12 without ipsecov2" \
  sh -c "grep -q '^12' '$root/etc/debian_version' && ! chroot '$root' dpkg -s ipsecov2"

# 2. apt installs the package and what it depends on, and systemd (which a
# machine that runs the unit has; minbase has none).
t0=$SECONDS
cp "$deb" "$root/tmp/ipsecov2.deb"
if ! in_root /usr/bin/env DEBIAN_FRONTEND=noninteractive timeout 600 /bin/sh -c \
     'apt-get -o Acquire::http::Timeout=30 -o Acquire::Retries=2 update -qq &&
      apt-get -o Acquire::http::Timeout=30 -o Acquire::Retries=2 install -y -qq --no-install-recommends /tmp/ipsecov2.deb systemd' \
     >"$work/apt.log" 2>&1; then
  tail -30 "$work/apt.log"; echo "package-test: apt-get install failed" >&2; exit 1
fi
echo "package-test: apt-get install (with dependencies): $((SECONDS - t0)) s"
echo "package-test: Depends: $(chroot "$root" dpkg-query -W -f='${Depends}' ipsecov2)"
check "dpkg says: install ok installed" \
  sh -c "chroot '$root' dpkg-query -W -f='\${Status}' ipsecov2 | grep -qx 'install ok installed'"

# 3. The files are where the README says.
libdir=$(chroot "$root" dpkg-query -L ipsecov2 | grep -m1 '/ipsecov2/bpf$' || true)
check "daemon /usr/sbin/ipsecov2d" test -x "$root/usr/sbin/ipsecov2d"
check "CLI /usr/sbin/ipsecov2ctl" test -x "$root/usr/sbin/ipsecov2ctl"
check "BPF objects in $libdir" sh -c "ls '$root$libdir'/*.o"
check "unit /usr/lib/systemd/system/ipsecov2d.service" test -f "$root/usr/lib/systemd/system/ipsecov2d.service"
check "conffile /etc/ipsecov2/ipsecov2d.conf" \
  sh -c "chroot '$root' dpkg-query -W -f='\${Conffiles}' ipsecov2 | grep -q '/etc/ipsecov2/ipsecov2d.conf'"
check "the conffile is the shipped default" cmp "$root/etc/ipsecov2/ipsecov2d.conf" ctl/config/ipsecov2d.conf
for page in man8/ipsecov2d.8 man8/ipsecov2ctl.8 man5/ipsecov2d.conf.5; do
  check "man page /usr/share/man/$page" sh -c "ls '$root/usr/share/man/$page'*"
done
check "every shared library of the installed binaries resolves in the chroot" \
  sh -c "! chroot '$root' ldd /usr/sbin/ipsecov2d /usr/sbin/ipsecov2ctl | grep -q 'not found'"
# systemd-analyze verify against the installed root: the unit, its ExecStart
# and ExecReload programs and the targets it names must all be there.  Any
# output is a finding.
verify=$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/ipsecov2d.service 2>&1) && [[ -z $verify ]] &&
  echo "  ok    systemd-analyze verify --root: the installed unit, no output" ||
  { echo "  FAIL  systemd-analyze verify --root: $verify"; failed=$((failed + 1)); }

# 4. The installed daemon starts, answers and stops cleanly (in a namespace,
# a veth pair as the wire, the installed configuration file).
ip netns add "$ns"
ip -n "$ns" link add w0 type veth peer name w1
ip -n "$ns" link set w0 up
ip -n "$ns" link set w1 up
ip -n "$ns" link set lo up
if ip netns exec "$ns" unshare --mount --propagation private -- /bin/bash -c '
  set -u
  r=$1
  mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" && mount -t sysfs sysfs "$r/sys" &&
    mount -t bpf bpf "$r/sys/fs/bpf" && mount -t tmpfs -o mode=0755 tmpfs "$r/run" || exit 99
  mkdir -m 0750 "$r/run/ipsecov2"
  chroot "$r" /usr/sbin/ipsecov2d --config /etc/ipsecov2/ipsecov2d.conf --wire w0 >"$r/tmp/daemon.log" 2>&1 &
  daemon=$!
  for _ in $(seq 150); do [ -S "$r/run/ipsecov2/ipsecov2.sock" ] && break; kill -0 $daemon 2>/dev/null || break; sleep 0.1; done
  ok=1
  caps=$(timeout 10 chroot "$r" /usr/sbin/ipsecov2ctl caps 2>&1) || ok=0
  printf "%s\n" "$caps" | sed "s/^/    caps: /" | head -8
  printf "%s\n" "$caps" | grep -qi "afxdp\|engine" || ok=0
  ip -d link show ov2 >/dev/null 2>&1 || { echo "    no ov2 device while running"; ok=0; }
  ip -d link show w0 | grep -q "prog/xdp" || { echo "    no XDP program on the wire while running"; ok=0; }
  kill -TERM $daemon
  for _ in $(seq 100); do kill -0 $daemon 2>/dev/null || break; sleep 0.1; done
  if kill -0 $daemon 2>/dev/null; then echo "    still running 10 s after SIGTERM"; kill -KILL $daemon; ok=0; fi
  wait $daemon; rc=$?
  [ $rc -eq 0 ] || { echo "    exit status $rc after SIGTERM"; ok=0; }
  [ ! -e "$r/run/ipsecov2/ipsecov2.sock" ] || { echo "    socket left behind"; ok=0; }
  ! ip link show ov2 >/dev/null 2>&1 || { echo "    ov2 device left behind"; ok=0; }
  ! ip -d link show w0 | grep -q "prog/xdp" || { echo "    XDP program left on the wire"; ok=0; }
  sed "s/^/    log: /" "$r/tmp/daemon.log" | tail -8
  [ $ok -eq 1 ]' run "$root"; then
  echo "  ok    the installed ipsecov2d started in the chroot, ipsecov2ctl caps answered, SIGTERM: exit 0, clean"
else
  echo "  FAIL  the installed daemon (see above)"; failed=$((failed + 1))
fi

# 5. Removal keeps the conffile until purge.
check "apt-get remove keeps the conffile" sh -c \
  "chroot '$root' apt-get remove -y -qq ipsecov2 >/dev/null && test ! -e '$root/usr/sbin/ipsecov2d' && test -f '$root/etc/ipsecov2/ipsecov2d.conf'"
check "apt-get purge removes it" sh -c \
  "chroot '$root' apt-get purge -y -qq ipsecov2 >/dev/null && test ! -e '$root/etc/ipsecov2/ipsecov2d.conf'"

if ((failed)); then echo "package-test: $failed check(s) failed"; exit 1; fi
echo "package-test: all checks passed"
