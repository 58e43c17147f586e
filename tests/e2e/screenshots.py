"""Re-make docs/images/gimp-dialog.png and gimp-preview.jpg: the real GIMP 3.0 under Xvfb.

    sudo python3 tests/e2e/screenshots.py [--out docs/images]

The trixie chroot of the end-to-end tests (harness.py), with an X server and screenshot tools
added (`GUI=1 make_chroot.sh`); the plug-in installed by installer/install.sh; a real
`gimp-draggan serve --model embedded` on CPU. GIMP opens the demo's photo (the astronaut of
`gimp-draggan demo`) with its two strokes and elliptic selection (`headless.demo.SCENE`) and
calls DragGAN Drag interactively (screenshots_batch.py). This script shoots the dialog with its
Model dropdown open, picks the embedded model, presses OK, and shoots the screen once the drag
has drawn its first live preview (scaled to 75 %); for that one frame
the daemon is paused (SIGSTOP, well under the 10 s heartbeat limit), so the picture holds still.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import harness
from test_gimp_e2e import SECRET_IN_CHROOT, free_address, plugins_dir

from gimp_draggan.headless.demo import SAMPLE, SCENE
from gimp_draggan_plugin.client import Client, DaemonError
from gimp_draggan_plugin.protocol import SECRET_ENV

WORK = "/tmp/draggan-shots"
BATCH = Path(__file__).with_name("screenshots_batch.py")
DISPLAY = "99"
# Where the dialog's parts are (GIMP 3.0.4's procedure dialog, no window manager): the Model row
# below the two lines of how-to, OK at the bottom right.
MODEL_ROW_Y, OK_FROM_RIGHT, OK_FROM_BOTTOM = 66, 68, 42
SCREEN = ("1280", "800")
PREVIEW_STEP = 12  # the drag sends a preview every 10 steps: shoot once the first is drawn


def inside(root: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command in the chroot on GIMP's X display (xdotool, ImageMagick's import)."""
    env = ["PATH=/usr/bin:/bin", f"DISPLAY=:{DISPLAY}", "HOME=/root"]
    return subprocess.run(
        ["chroot", str(root), "/usr/bin/env", "-i", *env, *argv],
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def shoot(root: Path, out: Path, crop: str | None = None, resize: str | None = None) -> None:
    """The screen (a part of it, or smaller) to `out`, through a file in the chroot."""
    shot = f"{WORK}/shot{out.suffix}"
    argv = ["import", "-window", "root"]
    if crop:
        argv += ["-crop", crop, "+repage"]
    if resize:
        argv += ["-resize", resize]
    if out.suffix == ".jpg":
        argv += ["-quality", "85"]
    inside(root, *argv, shot)
    shutil.copyfile(root / shot.lstrip("/"), out)


def geometry(root: Path, window: str) -> tuple[int, int, int, int]:
    """x, y, width, height of an X window."""
    found = inside(root, "xdotool", "getwindowgeometry", "--shell", window).stdout
    values = dict(line.split("=", 1) for line in found.split() if "=" in line)
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


def click(root: Path, x: int, y: int) -> None:
    """A left click at screen pixel x, y."""
    inside(root, "xdotool", "mousemove", "--sync", str(x), str(y), "click", "1")


def find_window(root: Path, name: str, gimp: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gimp.poll() is not None:
            raise SystemExit(f"GIMP ended before a window named {name!r} showed")
        found = inside(root, "xdotool", "search", "--onlyvisible", "--name", name, check=False)
        if found.returncode == 0 and found.stdout.split():
            return found.stdout.split()[-1]
        time.sleep(0.5)
    raise SystemExit(f"no window named {name!r} within {timeout_s:.0f} s")


def stop_x_server(root: Path) -> None:
    """Xvfb of gimp_batch.sh, by the pid in its lock file (a killed script leaves it running)."""
    try:
        pid = int((root / "tmp" / f".X{DISPLAY}-lock").read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)


def start_daemon(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    secret = root / SECRET_IN_CHROOT.lstrip("/")
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.unlink(missing_ok=True)
    os.environ[SECRET_ENV] = str(secret)
    address = free_address()
    exe = shutil.which("gimp-draggan")
    argv = [exe] if exe else [sys.executable, "-m", "gimp_draggan"]
    argv += ["serve", "--bind", address, "--device", "cpu", "--model", "embedded"]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            with Client(address, timeout_s=1.0) as client:
                client.hello("screenshots")
            return proc, address
        except DaemonError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the daemon did not come up:\n{log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.3)


def install_plugin(root: Path) -> None:
    home = root / "tmp" / "draggan-shots-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    installer = harness.ROOT / "installer" / "install.sh"
    done = subprocess.run(
        [str(installer), "--plugin-only", "--gimp-dir", str(plugins_dir(root))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"install.sh failed:\n{done.stdout}{done.stderr}")


def wait_for_drag(address: str, gimp: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    with Client(address, timeout_s=5.0) as client:
        while time.monotonic() < deadline and gimp.poll() is None:
            running = client.status().get("running") or {}
            if running.get("phase") == "drag" and running.get("step", 0) >= PREVIEW_STEP:
                return
            time.sleep(0.05)
    raise SystemExit("the drag never reached its first previews (see gimp-dialog.png)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=harness.ROOT / "docs" / "images")
    parser.add_argument("--root", type=Path, default=harness.CHROOT)
    args = parser.parse_args()
    root = args.root.resolve()
    env = dict(os.environ, GUI="1")
    subprocess.run([str(harness.MAKE_CHROOT), str(root), "trixie"], env=env, check=True)
    install_plugin(root)
    work = root / WORK.lstrip("/")
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(harness.ROOT / "daemon" / SAMPLE, work / "photo.png")
    daemon, address = start_daemon(root, work / "serve.log")
    scene = {
        "pairs": [[*h, *t] for h, t in SCENE.pairs],
        "ellipse": list(SCENE.ellipse),
    }
    batch_env = {
        "GIMP_DRAGGAN_DAEMON": address,
        "GIMP_DRAGGAN_SECRET": SECRET_IN_CHROOT,
        "SHOTS_PHOTO": f"{WORK}/photo.png",
        "SHOTS_SCENE": json.dumps(scene, separators=(",", ":")),
    }
    run_env = dict(
        os.environ,
        **batch_env,
        GIMP_BATCH_ENV=" ".join(batch_env),
        GIMP_GUI="1",
        GIMP_DISPLAY=DISPLAY,
        GIMP_TIMEOUT="900",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(BATCH, "rb") as script:
        gimp = subprocess.Popen(
            [str(harness.GIMP_BATCH), str(root)],
            stdin=script,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=run_env,
        )
    try:
        dialog = find_window(root, "DragGAN Drag", gimp, 300)
        # No window manager: the dialog sits at the top left, GIMP's window is made to fill the
        # screen behind it.
        main_window = find_window(root, "GIMP$", gimp, 60)
        inside(
            root, "xdotool", "windowmove", main_window, "0", "0", "windowsize", main_window, *SCREEN
        )
        time.sleep(2.0)  # let GTK finish drawing
        x, y, width, height = geometry(root, dialog)
        # The Model dropdown open (its list is a window of its own, so the screen is shot).
        click(root, x + width // 2, y + MODEL_ROW_Y)
        time.sleep(1.0)
        shoot(root, args.out / "gimp-dialog.png", crop=f"{width}x{height}+{x}+{y}")
        click(root, x + width // 2, y + MODEL_ROW_Y)  # the list's row over it: "embedded"
        time.sleep(0.5)
        click(root, x + width - OK_FROM_RIGHT, y + height - OK_FROM_BOTTOM)
        time.sleep(0.5)
        wait_for_drag(address, gimp)
        daemon.send_signal(19)  # SIGSTOP: the frame holds still while it is shot
        try:
            time.sleep(1.0)  # GIMP repaints the preview it has
            shoot(root, args.out / "gimp-preview.jpg", resize="75%")
        finally:
            daemon.send_signal(18)  # SIGCONT
        output, _ = gimp.communicate(timeout=900)
    finally:
        if gimp.poll() is None:
            gimp.kill()
            gimp.wait()
        stop_x_server(root)
        daemon.terminate()
        daemon.wait(30)
    text = output.decode(errors="replace")
    print(text[-3000:])
    result = [ln for ln in text.splitlines() if ln.startswith("SHOTS-RESULT ")]
    if not result or json.loads(result[-1].split(" ", 1)[1])["status"] != "success":
        raise SystemExit("the interactive drag did not succeed (see GIMP's output above)")
    for name in ("gimp-dialog.png", "gimp-preview.jpg"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
