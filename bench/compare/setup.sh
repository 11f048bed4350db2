#!/usr/bin/env bash
# Installs Kong's Python and JavaScript pluginservers (PyPI kong-pdk, npm kong-pdk) into a
# scratch directory, for the side-by-side benchmark only. Not part of the test suite.
#
#   bench/compare/setup.sh [DIR]     # default: target/bench-compare
#
# Leaves DIR/venv (python, with kong-python-pluginserver) and DIR/js (node_modules with
# kong-js-pluginserver). Re-running is cheap: existing installs are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-${BENCH_DIR:-target/bench-compare}}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if [[ ! -x "$dir/venv/bin/kong-python-pluginserver" ]]; then
  echo "== python: venv + pip install kong-pdk" >&2
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check kong-pdk
fi
"$dir/venv/bin/pip" show kong-pdk 2>/dev/null | sed -n 's/^Version: /python kong-pdk /p' >&2

if [[ ! -x "$dir/js/node_modules/.bin/kong-js-pluginserver" ]]; then
  echo "== js: npm install kong-pdk" >&2
  mkdir -p "$dir/js"
  (cd "$dir/js" && { [[ -f package.json ]] || echo '{"name":"bench-compare","private":true}' > package.json; } \
    && npm install --silent --no-audit --no-fund kong-pdk)
fi
node -e 'console.error("js kong-pdk " + require(process.argv[1]).version)' "$dir/js/node_modules/kong-pdk/package.json"
echo "$dir"
