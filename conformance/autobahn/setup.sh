#!/usr/bin/env bash
# Install Autobahn|Testsuite (wstest) ported to Python 3 into a venv.
#
#   conformance/autobahn/setup.sh
#
# The venv lives outside the repo, at $AUTOBAHN_VENV, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/autobahn-venv.
#
# Everything comes from PyPI: autobahntestsuite 25.10.1 and its engine
# autobahn 0.10.9 are installed unchanged and then ported to Python 3 by
# patch_py3.py (see ../README.md, "What the port changes").
#
# Idempotent: a stamp in the venv records a hash of this folder's install
# inputs; when it matches and the install still imports, nothing is done.
# Otherwise the venv is rebuilt from scratch (the port patches pristine
# registry packages, it cannot be re-applied on top of itself).  Concurrent
# callers are serialised by a lock file next to the venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${AUTOBAHN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sockeye/autobahn-venv}"
PYTHON="${PYTHON:-python3}"
ATS_VERSION=25.10.1
WSACCEL_VERSION=0.6.7   # C accelerator for UTF-8 validation / masking (optional)

if ! command -v "$PYTHON" >/dev/null; then
  echo "autobahn setup: $PYTHON not found (need Python >= 3.8 with the venv module)" >&2
  exit 1
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

fingerprint() {
  { cat "$HERE/setup.sh" "$HERE/requirements-py3.txt" "$HERE/patch_py3.py" "$HERE/py3compat.py"
    "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}
FP="$(fingerprint)"
STAMP="$VENV/.autobahn-py3-port"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$FP" ]] &&
   "$VENV/bin/python" -c 'import autobahntestsuite.fuzzing' >/dev/null 2>&1; then
  echo "autobahn setup: $VENV is up to date"
  exit 0
fi

echo "autobahn setup: building $VENV (from PyPI, about a minute)"
rm -rf "$VENV"
if ! "$PYTHON" -m venv "$VENV"; then
  echo "autobahn setup: '$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
  rm -rf "$VENV"
  exit 1
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)

"${PIP[@]}" install -r "$HERE/requirements-py3.txt"
"${PIP[@]}" install --no-deps "autobahntestsuite==$ATS_VERSION"
if ! "${PIP[@]}" install --only-binary=:all: "wsaccel==$WSACCEL_VERSION"; then
  echo "autobahn setup: WARNING: wsaccel unavailable for this Python;" \
       "using autobahn's pure-Python UTF-8 validator/masker (correct, but 9.* is much slower)" >&2
fi
if ! "$VENV/bin/python" -c 'import lib2to3' 2>/dev/null; then
  "${PIP[@]}" install "fissix==24.4.24"   # lib2to3 left the stdlib in Python 3.13
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV/bin/python" "$HERE/patch_py3.py" "$SITE"

# smoke test: the whole case set loads, and both fuzzing modes are importable
"$VENV/bin/python" -W ignore - <<'PYEOF'
from autobahntestsuite.case import Cases
import autobahntestsuite.fuzzing, autobahntestsuite.wstest
assert len(Cases) == 517, len(Cases)
print("autobahn setup: %d cases loaded" % len(Cases))
PYEOF

echo "$FP" > "$STAMP"
echo "autobahn setup: done ($VENV)"
