#!/usr/bin/env bash
# Builds the dashboard into crates/api/assets/ (index.html, app.js, app.css), which the runtime
# embeds and serves at /. With --check, builds into a temporary folder and fails when the
# committed assets differ (CI runs this).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
assets="$(cd "$here/.." && pwd)/crates/api/assets"
cd "$here"

if [ ! -d node_modules ]; then
    echo "==> npm ci (dashboard)"
    npm ci --no-audit --no-fund --loglevel=error
fi

case "${1:-}" in
    "")
        node build.mjs "$assets"
        echo "dashboard built into ${assets#"$(dirname "$here")"/}: $(cd "$assets" && ls | tr '\n' ' ')"
        ;;
    --check)
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        node build.mjs "$tmp"
        if ! diff -r "$tmp" "$assets" >/dev/null 2>&1; then
            diff -rq "$tmp" "$assets" >&2 || true
            echo "dashboard assets are out of date: run dashboard/build.sh" >&2
            exit 1
        fi
        echo "dashboard assets are up to date"
        ;;
    *)
        echo "usage: dashboard/build.sh [--check]" >&2
        exit 2
        ;;
esac
