#!/usr/bin/env bash
# Installs every Debian package s0 needs to build, test and run. Idempotent: packages
# already present are skipped, and nothing is fetched when all of them are installed.
set -euo pipefail
# Each one is used: compilers and build tools; libtorch (tensors, autograd, oneDNN) with the
# pthread OpenBLAS it calls for small products; Gloo's headers (torch.distributed's CPU backend); JSON, CLI parsing, HTTP (s0 serve); SQLite
# (Spider checks), zlib (gzip tokenizer.json), ICU (tokenizer regex classes and NFC);
# GoogleTest; bubblewrap (the sandbox); the Python module (pybind11, the Python headers) and
# its tests (NumPy, pytest) for Debian's python3.
pkgs=(build-essential cmake ninja-build pkg-config
      libtorch-dev libgloo-dev libopenblas0-pthread nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
      libsqlite3-dev zlib1g-dev libicu-dev
      libgtest-dev bubblewrap
      pybind11-dev python3-dev python3-numpy python3-pytest)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
