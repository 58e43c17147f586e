#!/usr/bin/env bash
# make_chroot.sh ROOT [SUITE] — a Debian chroot at ROOT with GIMP 3 and the Python bits its plug-ins
# use, for the end-to-end tests (tests/e2e/harness.py calls it). SUITE: trixie (default; GIMP 3.0.4)
# or forky (Debian testing; GIMP 3.2). With GUI=1 it adds an X server and screenshot tools
# (xvfb, xdotool, imagemagick) for tests/e2e/screenshots.py, also to a chroot that exists already.
#
# Needs root, debootstrap (apt-installed on the host when missing) and the Debian mirror
# ($DEBIAN_MIRROR, default http://deb.debian.org/debian). Idempotent: returns at once when ROOT
# already has gimp-console and no half-installed package; an interrupted build continues.
# The mounts the package install needs (proc, dev, sys) live in a private mount namespace, so they
# vanish with this script whatever way it ends. About a minute from nothing; ~800 MB.
set -euo pipefail

fail() { echo "make_chroot: $*" >&2; exit 1; }
say() { echo "make_chroot: [$(( SECONDS ))s] $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] && [ -n "$1" ] || fail "usage: $0 ROOT [SUITE]"
ROOT=$(realpath -m -- "$1")
SUITE=${2:-trixie}
[ "$ROOT" != / ] || fail "refusing to build into /"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-numpy"
if [ "${GUI:-0}" = 1 ]; then
    PACKAGES="$PACKAGES xvfb xdotool imagemagick"
fi

half_installed() {
    grep -Eq '^Status: .* (half-installed|unpacked|half-configured|triggers-awaiting|triggers-pending)$' \
        "$ROOT/var/lib/dpkg/status" 2>/dev/null
}

if [ -z "${_MAKE_CHROOT_NS:-}" ]; then
    if [ -x "$ROOT/usr/bin/gimp-console" ] && ! half_installed \
        && { [ "${GUI:-0}" != 1 ] || [ -x "$ROOT/usr/bin/Xvfb" ]; }; then
        say "$ROOT has gimp-console already"
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
        say "debootstrap $SUITE from $MIRROR"
        mkdir -p "$ROOT"
        # An older debootstrap has no script for a newer suite (Debian 12's lacks forky): sid's fits.
        SCRIPT=/usr/share/debootstrap/scripts/$SUITE
        [ -e "$SCRIPT" ] || SCRIPT=/usr/share/debootstrap/scripts/sid
        debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" "$SCRIPT" >&2 \
            || fail "debootstrap failed; see $ROOT/debootstrap/debootstrap.log (a re-run continues)"
    fi
    # The rest runs with its mounts in a mount namespace of its own.
    export _MAKE_CHROOT_NS=1
    exec unshare --mount --propagation private -- "$BASH" "$(realpath -- "$0")" "$ROOT" "$SUITE"
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
# Testing's Release file carries a Valid-Until a week ahead; a mirror copy older than the clock is
# "expired". Signatures are still checked; only the freshness date is not.
inside apt-get -o Acquire::Check-Valid-Until=false update -qq >&2 \
    || fail "apt-get update failed inside $ROOT (mirror $MIRROR)"
# shellcheck disable=SC2086
inside apt-get install -y -qq --no-install-recommends $PACKAGES >&2 \
    || fail "apt-get install failed inside $ROOT (a re-run continues)"
inside apt-get clean
[ -x "$ROOT/usr/bin/gimp-console" ] || fail "installed, but $ROOT has no gimp-console"
say "gimp $(inside dpkg-query -W -f='${Version}' gimp) in $ROOT"
