#!/usr/bin/env bash
# make_chroot.sh ROOT — a Debian trixie chroot at ROOT with GIMP 3 (3.0.4 in trixie) and the
# Python bits its plug-ins use, for the end-to-end tests (tests/e2e/harness.py calls it).
#
# Needs root, debootstrap (apt-installed on the host when missing) and the Debian mirror
# ($DEBIAN_MIRROR, default http://deb.debian.org/debian). Idempotent: returns at once when ROOT
# already has gimp-console-3.0 and no half-installed package; an interrupted build continues.
# The mounts the package install needs (proc, dev, sys) live in a private mount namespace, so they
# vanish with this script whatever way it ends. About a minute from nothing; ~800 MB.
set -euo pipefail

fail() { echo "make_chroot: $*" >&2; exit 1; }
say() { echo "make_chroot: [$(( SECONDS ))s] $*" >&2; }

[ $# -eq 1 ] && [ -n "$1" ] || fail "usage: $0 ROOT"
ROOT=$(realpath -m -- "$1")
[ "$ROOT" != / ] || fail "refusing to build into /"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-numpy"

half_installed() {
    grep -Eq '^Status: .* (half-installed|unpacked|half-configured|triggers-awaiting|triggers-pending)$' \
        "$ROOT/var/lib/dpkg/status" 2>/dev/null
}

if [ -z "${_MAKE_CHROOT_NS:-}" ]; then
    if [ -x "$ROOT/usr/bin/gimp-console-3.0" ] && ! half_installed; then
        say "$ROOT has gimp-console-3.0 already"
        exit 0
    fi
    [ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap and chroot)"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap on the host"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap \
            || fail "debootstrap is missing and apt-get could not install it"
    fi
    # Base system: debootstrap deletes ROOT/debootstrap when it has finished.
    if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ -d "$ROOT/debootstrap" ]; then
        say "debootstrap trixie from $MIRROR"
        mkdir -p "$ROOT"
        debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >&2 \
            || fail "debootstrap failed; see $ROOT/debootstrap/debootstrap.log (a re-run continues)"
    fi
    # The rest runs with its mounts in a mount namespace of its own.
    export _MAKE_CHROOT_NS=1
    exec unshare --mount --propagation private -- "$BASH" "$(realpath -- "$0")" "$ROOT"
fi

mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount --rbind /sys "$ROOT/sys"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
inside() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
if half_installed; then
    say "finishing an interrupted package install"
    inside dpkg --configure -a >&2 || fail "dpkg --configure -a failed in $ROOT"
fi
say "apt-get install $PACKAGES"
inside apt-get update -qq >&2 || fail "apt-get update failed inside $ROOT (mirror $MIRROR)"
# shellcheck disable=SC2086
inside apt-get install -y -qq --no-install-recommends $PACKAGES >&2 \
    || fail "apt-get install failed inside $ROOT (a re-run continues)"
inside apt-get clean
[ -x "$ROOT/usr/bin/gimp-console-3.0" ] || fail "installed, but $ROOT has no gimp-console-3.0"
say "gimp $(inside dpkg-query -W -f='${Version}' gimp) in $ROOT"
