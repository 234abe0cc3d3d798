# Sourced by the other scripts: make sure .venv exists and holds exactly the locked packages.
# requirements.lock pins every package (the server, the node, the client and the tests) with
# its hashes; ./scripts/lock refreshes it. Reinstalls only when the lock or pyproject.toml
# changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements.lock"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment in .venv ..." >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$LOCK" | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "Installing the locked packages (requirements.lock) into .venv ..." >&2
  "$VENV/bin/python" -m pip install -q --require-hashes -r "$LOCK" >&2
  # The project itself, editable, with the locked setuptools: nothing resolved anew.
  PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation \
      -e "$ROOT" >&2
  if ! broken="$("$VENV/bin/python" -m pip check)"; then
    echo "$broken" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
