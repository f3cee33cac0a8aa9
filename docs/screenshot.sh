#!/usr/bin/env bash
# docs/mlflow-ui.png: what `make ui` opens, rendered by headless Chromium (Debian: apt install chromium).
# Usage: bash docs/screenshot.sh [output.png]   (run from the repository root after `make repro`)
set -euo pipefail
out=${1:-docs/mlflow-ui.png}
port=${PORT:-5055}
chromium=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chromium" ] || { echo "error: no chromium on PATH (apt install chromium)" >&2; exit 2; }
log=$(mktemp)
.venv/bin/nmt ui --port "$port" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
url=
for _ in $(seq 90); do  # `nmt ui` prints the runs-page URL once the server answers
  url=$(grep -o 'http://[^ ]*#/experiments/[^ ]*' "$log" | head -1 || true); [ -n "$url" ] && break; sleep 1
done
[ -n "$url" ] || { cat "$log" >&2; exit 1; }
profile=$(mktemp -d)
# The flags keep Chromium off the network it cannot reach here (no sync, no component updates).
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size="${SIZE:-2560,700}" --virtual-time-budget=15000 \
  --hide-scrollbars --screenshot="$out" "$url" 2>/dev/null
rm -rf "$profile"
echo "$out <- $url"
