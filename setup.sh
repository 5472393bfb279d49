#!/usr/bin/env bash
# Set up everything the workflow and its tests need on a fresh machine (Debian/Ubuntu):
# a virtualenv with the pinned Python packages and this checkout, and an offline WordNet
# for the METEOR caption metric (Debian packages; needs root or sudo for apt).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt -e .
bash tools/install-wordnet.sh >/dev/null
echo "ready: .venv/bin/snakemake, .venv/bin/python -m pytest"
