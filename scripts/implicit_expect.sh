#!/usr/bin/env bash
# Runs scripts/implicit_expect.py with implicit (installed from PyPI into a venv
# under ~/.cache when absent). Usage: scripts/implicit_expect.sh VERSION_DIR OUT.json
set -euo pipefail
venv="${RECS_IMPLICIT_VENV:-$HOME/.cache/movie-recs-implicit}"
if ! "$venv/bin/python" -c "import implicit, scipy" 2>/dev/null; then
    echo "installing implicit 0.7.2 from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "implicit==0.7.2" >&2
fi
OPENBLAS_NUM_THREADS=1 exec "$venv/bin/python" "$(dirname "$0")/implicit_expect.py" "$@"
