# Sourced by run.sh and test.sh: puts a ready edge-asr environment on PATH.
#
# The virtual environment is cached outside the repo, under
# ${EDGE_ASR_CACHE_DIR:-~/.cache/edge-asr}/venv-<hash of setup.cfg, pyproject.toml, Python version>,
# so a repeat run costs nothing and a dependency change builds a fresh one.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EDGE_ASR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-asr}
PYTHON=${PYTHON:-python3}
KEY=$( { cat "$REPO/setup.cfg" "$REPO/pyproject.toml"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
VENV=$CACHE/venv-$KEY
mkdir -p "$CACHE"

pip_quiet() {  # pip's own output only when it fails
  local log; log=$(mktemp)
  if ! "$VENV/bin/python" -m pip "$@" --progress-bar off >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

if [ ! -f "$VENV/.complete" ]; then
  echo "[env] creating $VENV" >&2
  rm -rf "$VENV"
  # marked complete only when every step worked, whether or not the caller runs with `set -e`
  if ! { "$PYTHON" -m venv "$VENV" && pip_quiet install -e "$REPO[test,bench]" && touch "$VENV/.complete"; }; then
    echo "[env] could not create $VENV" >&2
    rm -rf "$VENV"
    return 1 2>/dev/null || exit 1
  fi
fi
# Clones with the same dependencies share the venv: point its editable install at this checkout.
if [ "$("$VENV/bin/python" -I -c 'import edge_asr, pathlib; print(pathlib.Path(edge_asr.__file__).parent.parent)' 2>/dev/null)" != "$REPO" ]; then
  pip_quiet install --no-deps -e "$REPO"
fi
export PATH="$VENV/bin:$PATH"

# Debian packages the tests and benchmarks use (espeak-ng's voices, a browser): `debian_packages
# COMMAND:PACKAGE ...` installs those whose command is missing, as root (CI runs as root).
debian_packages() {
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "[env] missing Debian packages: ${missing[*]}; install them (apt-get install) or run as root" >&2
    return 1
  fi
  echo "[env] apt-get install ${missing[*]}" >&2
  { apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; } >/dev/null 2>&1
}
