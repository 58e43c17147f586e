"""The GIMPs the end-to-end tests drive: Debian chroots built by make_chroot.sh into the git-ignored
.e2e/ (once per checkout, about a minute or two each; then reused), batches run by gimp_batch.sh.
GIMP 3.0 comes from Debian trixie (.e2e/gimp-root), GIMP 3.2 from Debian forky, i.e. testing
(.e2e/gimp-root-forky).

`missing()` names what this machine lacks to build or enter it (root, debootstrap or apt-get to
install it, unshare, the Debian mirror); the tests skip with that one line instead of erroring.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROOT = ROOT / ".e2e" / "gimp-root"
# GIMP version -> (Debian suite, chroot). Testing moves: forky's GIMP is 3.2.x as of 2026-12.
GIMPS = {"3.0": ("trixie", CHROOT), "3.2": ("forky", ROOT / ".e2e" / "gimp-root-forky")}
MAKE_CHROOT = HERE / "make_chroot.sh"
GIMP_BATCH = HERE / "gimp_batch.sh"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BUILD_TIMEOUT_S = 1200


def built(root: Path = CHROOT) -> bool:
    return (root / "usr" / "bin" / "gimp-console").is_file()


def version(root: Path) -> str:
    """The built chroot's GIMP as major.minor ("3.0"), from its gimp-console link."""
    return (root / "usr" / "bin" / "gimp-console").resolve().name.rsplit("-", 1)[1]


def missing(root: Path = CHROOT) -> str | None:
    """Why GIMP 3 cannot run here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "needs root (chroot into the Debian trixie tree with GIMP 3)"
    if not shutil.which("chroot"):
        return "no chroot command on this machine"
    if built(root):
        return None
    if not shutil.which("unshare"):
        return "no unshare command (util-linux) to mount inside the chroot privately"
    if not (shutil.which("debootstrap") or shutil.which("apt-get")):
        return "no debootstrap, and no apt-get to install it"
    url = urllib.parse.urlsplit(MIRROR)
    try:
        with socket.create_connection((url.hostname or "", url.port or 80), timeout=5):
            pass
    except OSError as exc:
        return f"no network to the Debian mirror {MIRROR} ({exc}) to build the GIMP 3 chroot"
    return None


def build(root: Path = CHROOT, suite: str = "trixie") -> str | None:
    """make_chroot.sh ROOT SUITE; None when built, else its output's tail."""
    done = subprocess.run(
        [str(MAKE_CHROOT), str(root), suite],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    return (
        None
        if done.returncode == 0
        else f"make_chroot.sh {root} {suite} failed:\n{done.stderr[-3000:]}"
    )
