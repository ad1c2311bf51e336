#!/usr/bin/env bash
# Vendor uPlot (MIT) from the npm registry into the dashboard's static files. The result is
# committed: installing or running unbroken never needs npm or the network, and the page never
# loads anything from a CDN. Re-run only to change the uPlot version.
set -euo pipefail
VERSION="${UPLOT_VERSION:-1.6.32}"
cd "$(dirname "$0")/.."
dest=src/unbroken/server/static/vendor/uplot
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$VERSION" >/dev/null && tar -xzf "uplot-$VERSION.tgz")
mkdir -p "$dest"
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$dest/"
echo "uPlot $VERSION" > "$dest/VERSION"
echo "vendored uPlot $VERSION into $dest"
