#!/usr/bin/env bash
# Installs what the dashboard's browser tests need: Chromium (Debian package) and the npm
# packages (esbuild, playwright-core, the page's libraries). CI runs this before the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Node.js and npm (apt)"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
    echo "==> installing chromium (apt)"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d "$here/node_modules" ]; then
    echo "==> npm ci (dashboard)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
