#!/usr/bin/env bash
# Builds the daemon and every example plugin in plugins/ (release), copies the plugin
# libraries into one plugins directory, and runs the daemon on them in the foreground.
#
#   scripts/run-example.sh                 # sockets in ./target/example-prefix
#   KONG_PREFIX=/usr/local/kong scripts/run-example.sh
#
# Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${KONG_PREFIX:-$PWD/target/example-prefix}"
plugins_dir="$PWD/target/example-plugins"

# Package names of the example plugins, from their manifests.
crates=()
for manifest in plugins/*/Cargo.toml; do
  crates+=("$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)")
done

packages=(-p kong-rust-pluginserver)
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done
cargo build --release "${packages[@]}"

rm -rf "$plugins_dir"
mkdir -p "$plugins_dir" "$prefix"
for crate in "${crates[@]}"; do
  cp "target/release/lib${crate//-/_}.so" "$plugins_dir/"
done

echo "serving ${crates[*]} from $plugins_dir; sockets in $prefix" >&2
exec target/release/kong-rust-pluginserver \
  --plugins-directory "$plugins_dir" \
  --kong-prefix "$prefix"
