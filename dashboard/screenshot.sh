#!/usr/bin/env bash
# Refreshes docs/dashboard.png: runs the browser tests, which save the main view when asked.
# Uses the binary in target/debug (CLOISTER_BIN to choose another); build it first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
"$here/install-browser.sh"
cd "$here"
CLOISTER_SCREENSHOT="$root/docs/dashboard.png" node --test tests/dashboard.test.mjs
echo "saved docs/dashboard.png"
