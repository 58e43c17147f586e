#!/usr/bin/env bash
# gimp_batch.sh ROOT < batch.py — run a GIMP 3 Python batch script headless in the chroot that
# make_chroot.sh built (plug-ins are installed beforehand, by installer/install.sh).
#
# GIMP runs under `env -i`: GIMP_BATCH_ENV="NAME NAME=value ..." passes variables in (a bare NAME
# copies the caller's value; values without spaces). GIMP_TIMEOUT: seconds before it is killed
# (default 180). Exit status: GIMP's (0, 64 = the batch raised), 124/137 = timed out, 2 = usage.
# GIMP_GUI=1: GIMP with its windows, on an X server of its own (Xvfb, display :$GIMP_DISPLAY,
# default 99; make_chroot.sh GUI=1 installs it), for tests/e2e/screenshots.py.
# /proc and /dev are mounted in a private mount namespace (gone when the run ends); where unshare
# is not allowed GIMP runs without them (GIMP 3.0.4 and its Python plug-ins do not need them).
set -euo pipefail

usage() { echo "gimp_batch: $*" >&2; exit 2; }
[ $# -eq 1 ] || usage "usage: $0 ROOT < batch.py"
ROOT=$(realpath -m -- "$1")
[ -x "$ROOT/usr/bin/gimp-console" ] || usage "$ROOT has no GIMP 3; run make_chroot.sh $ROOT"
[ "$(id -u)" -eq 0 ] || usage "needs root (chroot)"

if [ -z "${_GIMP_BATCH_NS:-}" ] && unshare --mount --propagation private true 2>/dev/null; then
    export _GIMP_BATCH_NS=1
    exec unshare --mount --propagation private -- "$BASH" "$(realpath -- "$0")" "$ROOT"
fi
if [ -n "${_GIMP_BATCH_NS:-}" ]; then
    mount -t proc proc "$ROOT/proc" && mount --rbind /dev "$ROOT/dev" \
        || echo "gimp_batch: mounts failed; running GIMP without /proc and /dev" >&2
fi

VARS=(HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8)
read -r -a ITEMS <<< "${GIMP_BATCH_ENV:-}"
for item in "${ITEMS[@]}"; do
    if [[ "$item" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        VARS+=("$item")
    elif [[ "$item" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        [ -z "${!item+set}" ] || VARS+=("$item=${!item}")
    else
        usage "bad GIMP_BATCH_ENV entry '$item'"
    fi
done

GIMP=(gimp-console -i)
if [ "${GIMP_GUI:-0}" = 1 ]; then
    [ -x "$ROOT/usr/bin/Xvfb" ] || usage "$ROOT has no Xvfb; run GUI=1 make_chroot.sh $ROOT"
    DISPLAY_NUMBER=${GIMP_DISPLAY:-99}
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin \
        Xvfb ":$DISPLAY_NUMBER" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
    XVFB=$!
    trap 'kill "$XVFB" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do [ -e "$ROOT/tmp/.X11-unix/X$DISPLAY_NUMBER" ] && break; sleep 0.1; done
    VARS+=("DISPLAY=:$DISPLAY_NUMBER")
    GIMP=(gimp --no-splash)
fi

start=$SECONDS
set +e
chroot "$ROOT" /usr/bin/env -i "${VARS[@]}" timeout -k 10 "${GIMP_TIMEOUT:-180}" \
    "${GIMP[@]}" -n --batch-interpreter=python-fu-eval -b - --quit
rc=$?
set -e
echo "gimp_batch: exit $rc after $(( SECONDS - start )) s" >&2
exit "$rc"
