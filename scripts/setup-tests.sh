#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run from the repository root):
# the package with its torch and test extras in .venv (the test extra brings moto's S3 server and s3fs for
# the remote-cache tests, and Dask's distributed for the cluster tests), TensorRT's type stubs in .stubs/ (for mypy only:
# installed into the venv they would shadow a missing TensorRT), and Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[torch,test]'
# tensorrt-stubs declares a dependency on tensorrt, which downloads from NVIDIA: take the stubs alone
.venv/bin/pip install -q --no-deps --upgrade --target .stubs tensorrt-stubs==10.13.0.35.1
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
  else echo "setup-tests: chromium is missing and cannot be installed without root; browser tests will be skipped" >&2
  fi
fi
