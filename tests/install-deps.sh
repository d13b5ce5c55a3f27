#!/usr/bin/env bash
# Installs the Debian packages FerroLB's tests and lab need (run as root).
# Go and Rust themselves come with the machine; the control plane is built
# from the Go module proxy by `cargo xtask controlplane build`.
set -euo pipefail

packages=(iproute2 nftables iputils-ping iputils-arping ndisc6 tcpdump curl gobgpd bird2 frr iperf3 conntrack haproxy)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
for tool in go cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is required (see README: Developing)" >&2; exit 1; }
done
