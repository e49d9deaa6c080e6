#!/usr/bin/env bash
# sockeye's test command: everything CI runs (CI calls this through .ci/run).
#
#   scripts/test.sh                 # full: build, cargo test, Autobahn (all 517 cases, both roles)
#   SOCKEYE_QUICK=1 scripts/test.sh # Autobahn without most of 12.*/13.* (see conformance/README.md)
#
# Runs from any directory.  Idempotent: installs what is missing and nothing else
# (the Autobahn venv lives in ${XDG_CACHE_HOME:-~/.cache}/sockeye/, outside the repo).
# Steps:
#   1. setup       tools the tests need (Python venv for Autobahn; hooks for later ones)
#   2. build       cargo build --release --workspace --bins --examples
#   3. cargo test  cargo test --release --workspace   (release: dependencies compile once)
#   4. autobahn    conformance/run.sh both            (server and client role concurrently)
#   5. autobahn    conformance/run.sh server against sockeye-loop (bench/examples/loop-echo.rs)
# A failing step does not stop the later ones, except a failed setup or build.
# The last line is "PASSED: N passed, M failed" or "FAILED: N passed, M failed"
# (cargo tests + Autobahn cases; a step that failed without counting a failure adds 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET" == /* ]] || TARGET="$ROOT/$TARGET"
LOGS="$TARGET/test-logs"
mkdir -p "$LOGS"

T_START=$SECONDS
SUMMARY=()        # one line per step
TOTAL_PASSED=0
TOTAL_FAILED=0
ANY_FAILED=0

fmt_time() { local s=$1; if (( s >= 60 )); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi; }
banner() { printf '\n==> %s\n' "$*"; }

# record NAME RC SECONDS PASSED FAILED [NOTE]
record() {
  local name="$1" rc="$2" secs="$3" passed="$4" failed="$5" note="${6:-}"
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  if (( rc != 0 )); then
    ANY_FAILED=1
    (( failed == 0 )) && failed=1   # the step failed without counting a test: count the step
  fi
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
  SUMMARY+=("$(printf '  %-13s %8s  %-4s %s' "$name" "$(fmt_time "$secs")" \
    "$( ((rc == 0)) && echo ok || echo FAIL)" "$note")")
  echo "--> $name: $( ((rc == 0)) && echo ok || echo "FAILED (exit $rc)") in $(fmt_time "$secs")"
}

finish() {
  banner "summary"
  local line
  for line in "${SUMMARY[@]}"; do echo "$line"; done
  echo "  total       $(printf '%8s' "$(fmt_time $((SECONDS - T_START)))")"
  if (( ANY_FAILED == 0 )); then
    echo "PASSED: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
    exit 0
  fi
  echo "FAILED: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
  exit 1
}

# ---------------------------------------------------------------------------
# setup: install what is missing
# ---------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {   # apt_install PKG... (Debian packages; only called for missing tools)
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  if ! command -v apt-get >/dev/null; then
    echo "setup: need Debian packages $* but apt-get is not available; install them by hand" >&2
    return 1
  fi
  if (( APT_UPDATED == 0 )); then
    "${sudo[@]}" apt-get update -qq || return 1
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install a Rust toolchain (rust-version in Cargo.toml)" >&2
    return 1
  fi
  cargo --version
}

ensure_python() {   # Python 3 with venv + pip, for the Autobahn suite
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: installing python3 + venv (Debian)"
    apt_install python3 python3-venv || return 1
  fi
  python3 --version
}

ensure_autobahn() {   # the suite's venv (from PyPI; no-op when up to date)
  "$ROOT/conformance/autobahn/setup.sh"
}

# ---- hooks for later test suites (filled in by the issues that add them) ----
ensure_npm_packages() {   # Node + interop/node's packages (`ws`, pinned by its package-lock.json)
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup: installing nodejs + npm (Debian)"
    apt_install nodejs npm || return 1
  fi
  local dir="$ROOT/interop/node" stamp want
  stamp="$dir/node_modules/.sockeye-package-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -d "$dir/node_modules" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: npm ci in interop/node"
    (cd "$dir" && npm ci --no-audit --no-fund) || return 1
    echo "$want" >"$stamp"
  fi
  echo "interop: node $(node --version), ws $(cd "$dir" && node -p 'require("ws/package.json").version')"
}
INTEROP_WEBSOCKETS_VERSION=17.4   # Python `websockets`, the interop tests' Python peer
INTEROP_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/interop-venv"
ensure_python_interop() {   # a venv with `websockets` from PyPI, outside the repo like the Autobahn one
  local py="$INTEROP_VENV/bin/python"
  if [[ ! -x "$py" ]]; then
    echo "setup: creating $INTEROP_VENV"
    python3 -m venv "$INTEROP_VENV" || return 1
  fi
  if [[ "$("$py" -c 'import websockets; print(websockets.__version__)' 2>/dev/null)" != "$INTEROP_WEBSOCKETS_VERSION" ]]; then
    echo "setup: pip install websockets==$INTEROP_WEBSOCKETS_VERSION"
    "$py" -m pip install -q --disable-pip-version-check "websockets==$INTEROP_WEBSOCKETS_VERSION" || return 1
  fi
  # crates/cli/tests/interop.rs runs the Python peer with this interpreter.
  export SOCKEYE_INTEROP_PYTHON="$py"
  echo "interop: $("$py" --version), websockets $("$py" -c 'import websockets; print(websockets.__version__)')"
}
ensure_redis_server() {   # Debian's redis-server, for the Redis cluster tests (crates/server/tests/redis.rs)
  if ! command -v redis-server >/dev/null; then
    echo "setup: installing redis-server (Debian)"
    apt_install redis-server || return 1
    # The tests start their own servers on free loopback ports; the package's
    # service on 6379, if apt started it, is not needed.
    if command -v service >/dev/null && service redis-server status >/dev/null 2>&1; then
      service redis-server stop >/dev/null 2>&1 || true
    fi
  fi
  redis-server --version
}
ensure_chromium() {
  # HOOK(browser tests of the pages): Debian's chromium, Node, and tests/browser's
  # npm packages (playwright-core, pinned by its package-lock.json).
  if [[ ! -x /usr/bin/chromium ]]; then
    echo "setup: installing chromium (Debian)"
    apt_install chromium || return 1
  fi
  /usr/bin/chromium --version 2>/dev/null || true
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup: installing nodejs + npm (Debian)"
    apt_install nodejs npm || return 1
  fi
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    echo "setup: warning: node $(node --version) is older than 20, which playwright-core needs" >&2
  local dir="$ROOT/tests/browser" stamp want
  stamp="$dir/node_modules/.sockeye-package-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ ! -d "$dir/node_modules" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: npm ci in tests/browser"
    (cd "$dir" && npm ci --no-audit --no-fund) || return 1
    echo "$want" >"$stamp"
  fi
  echo "browser tests: playwright-core $(cd "$dir" && node -p 'require("playwright-core/package.json").version')"
}

setup() {   # (chained with &&: errexit does not apply inside a function called with ||)
  ensure_rust &&
  ensure_python &&
  ensure_autobahn &&
  ensure_npm_packages &&
  ensure_python_interop &&
  ensure_redis_server &&
  ensure_chromium
}

# ---------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------
echo "sockeye tests in $ROOT ($(date -u +%Y-%m-%dT%H:%M:%SZ)${CI:+, CI}${SOCKEYE_QUICK:+, SOCKEYE_QUICK=$SOCKEYE_QUICK})"

banner "setup"
t=$SECONDS; rc=0
setup || rc=$?
record setup "$rc" $((SECONDS - t)) 0 0
(( rc == 0 )) || finish

banner "build: cargo build --release --workspace --bins --examples"
t=$SECONDS; rc=0
cargo build --release --workspace --bins --examples || rc=$?
record build "$rc" $((SECONDS - t)) 0 0
(( rc == 0 )) || finish

banner "cargo test: cargo test --release --workspace"
t=$SECONDS; rc=0
cargo test --release --workspace 2>&1 | tee "$LOGS/cargo-test.log" || rc=$?
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
  } END { print p + 0, f + 0 }' "$LOGS/cargo-test.log")
record "cargo test" "$rc" $((SECONDS - t)) "$passed" "$failed" "($passed passed, $failed failed)"

# interop (Python websockets, Node ws): crates/cli/tests/interop.rs, part of the cargo
# test step above; SOCKEYE_INTEROP_PYTHON (exported by ensure_python_interop) is its Python.
# HOOK(redis): run the Redis cluster test here.
# HOOK(browser): the headless Chromium tests of the pages (against target/release/sockeye).
banner "browser: tests/browser/run.sh"
t=$SECONDS; rc=0
"$ROOT/tests/browser/run.sh" 2>&1 | tee "$LOGS/browser.log" || rc=$?
read -r passed failed < <(awk '($1 == "ℹ" || $1 == "#") && $2 == "pass" { p = $3 }
  ($1 == "ℹ" || $1 == "#") && $2 == "fail" { f = $3 } END { print p + 0, f + 0 }' "$LOGS/browser.log")
record browser "$rc" $((SECONDS - t)) "$passed" "$failed" "($passed passed, $failed failed)"

banner "autobahn: conformance/run.sh both"
t=$SECONDS; rc=0
"$ROOT/conformance/run.sh" both || rc=$?
read -r passed failed note < <(python3 - "$ROOT/conformance/reports" <<'EOF'
import json, os, sys
p = f = 0
notes = []
for role in ('server', 'client'):
    try:
        with open(os.path.join(sys.argv[1], role, 'summary.json')) as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        notes.append('%s: no result' % role)
        continue
    p += s['passed']
    f += s['failed']
    notes.append('%s %d/%d' % (role, s['passed'], s['selected']))
print(p, f, '(' + ', '.join(notes) + ' passed)')
EOF
)
record autobahn "$rc" $((SECONDS - t)) "$passed" "$failed" "$note"

# The same core behind the other I/O layer: sockeye-loop's echo (bench/examples/loop-echo.rs).
banner "autobahn: sockeye-loop server (conformance/run.sh server)"
t=$SECONDS; rc=0
LOOP_REPORTS="$ROOT/conformance/reports/loop"
SOCKEYE_REPORTS="$LOOP_REPORTS" AUTOBAHN_AGENT=sockeye-loop \
  SOCKEYE_SERVER_CMD="exec $(printf '%q' "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/loop-echo") \"\$PORT\" --deflate" \
  "$ROOT/conformance/run.sh" server || rc=$?
read -r passed failed selected < <(python3 -c 'import json,sys
try: s = json.load(open(sys.argv[1]))
except (OSError, ValueError): print(0, 0, 0)
else: print(s["passed"], s["failed"], s["selected"])' "$LOOP_REPORTS/server/summary.json")
record "autobahn loop" "$rc" $((SECONDS - t)) "$passed" "$failed" "(server $passed/$selected passed)"

finish
