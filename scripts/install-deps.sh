#!/usr/bin/env bash
# Install everything lbappliance and its tests need on a fresh Debian 12 machine
# (run as root): the daemons and tools from Debian, this package and its test
# tools from PyPI. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# What a controller needs for `lbappliance render` (the config checkers) and
# `deploy` (SSH); execution-environment/bindep.txt holds the same list.
CONTROLLER_PACKAGES=(haproxy keepalived bird2 frr iproute2 openssh-client)
APT_PACKAGES=(
  "${CONTROLLER_PACKAGES[@]}"
  socat curl openssl iputils-ping ethtool nftables
  clang llvm libbpf-dev bpftool xdp-tools
  podman runc netavark aardvark-dns iptables debootstrap zstd openssh-server
  wrk valgrind
  qemu-system-x86 qemu-utils e2fsprogs
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start their daemons; the appliance's roles and labs run their own.
  for svc in haproxy keepalived bird frr; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

echo "==> pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
