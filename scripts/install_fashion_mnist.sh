#!/usr/bin/env bash
# Install Debian's dataset-fashion-mnist (the Fashion-MNIST IDX files) when it is missing.
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "fashion-mnist: run as root: apt-get install dataset-fashion-mnist (the task is skipped until then)"; exit 0; fi
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq dataset-fashion-mnist || echo "fashion-mnist: apt-get install dataset-fashion-mnist failed"
