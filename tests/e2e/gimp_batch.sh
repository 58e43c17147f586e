#!/usr/bin/env bash
# gimp_batch.sh ROOT < batch.py — run a GIMP 3 Python batch script headless in the chroot that
# make_chroot.sh built (plug-ins are installed beforehand, by installer/install.sh).
#
# GIMP runs under `env -i`: GIMP_BATCH_ENV="NAME NAME=value ..." passes variables in (a bare NAME
# copies the caller's value; values without spaces). GIMP_TIMEOUT: seconds before it is killed
# (default 180). Exit status: GIMP's (0, 64 = the batch raised), 124/137 = timed out, 2 = usage.
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

start=$SECONDS
set +e
chroot "$ROOT" /usr/bin/env -i "${VARS[@]}" timeout -k 10 "${GIMP_TIMEOUT:-180}" \
    gimp-console -i -n --batch-interpreter=python-fu-eval -b - --quit
rc=$?
set -e
echo "gimp_batch: exit $rc after $(( SECONDS - start )) s" >&2
exit "$rc"
