#!/bin/sh
# Install gimp-draggan (GIMP 3 plug-in + daemon) for this user; see installer/install.py --help.
# Thin wrapper: finds a Python 3.10+ and runs install.py with the same arguments.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for py in "${PYTHON:-}" python3 python; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
        "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        exec "$py" "$here/install.py" "$@"
    fi
done
echo "install.sh: error: no Python 3.10 or newer found; install one (or set PYTHON=/path/to/python3)" >&2
exit 1
