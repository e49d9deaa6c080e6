#!/usr/bin/env bash
# Builds the peer servers sockeye is compared with (not part of the test
# command: CI never builds them).
#
#   bench/peers/build.sh
#
# - Node: `npm ci` here (ws + bufferutil, @trufflesuite/uws-js-unofficial).
# - Rust: bench/peers/rust, its own cargo project (not a workspace member,
#   own Cargo.lock, own target dir bench/peers/rust/target), release build of
#   `tungstenite-echo` and `fastwebsockets-echo`.
# Idempotent: npm ci is skipped when node_modules is complete.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

command -v node >/dev/null || { echo "node is required (apt-get install nodejs npm)" >&2; exit 1; }
if [[ ! -d "$HERE/node_modules/ws" || ! -d "$HERE/node_modules/bufferutil" \
      || ! -d "$HERE/node_modules/@trufflesuite/uws-js-unofficial" ]]; then
  echo "==> npm ci in bench/peers" >&2
  (cd "$HERE" && npm ci --no-audit --no-fund >&2)
fi

echo "==> cargo build --release in bench/peers/rust" >&2
(cd "$HERE/rust" && CARGO_TARGET_DIR="$HERE/rust/target" cargo build --release --locked >&2)
