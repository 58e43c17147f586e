"""`--service`: start the daemon at login as a user service, on each platform's own mechanism.

A Flatpak GIMP cannot start host programs, so there the daemon must already be running; a user
service also saves everyone the wait for `serve` to start. Linux: a systemd --user unit; macOS: a
launchd agent; Windows: a Task Scheduler logon task (defined by an XML file, run with pythonw so no
console window opens). No root or administrator rights are needed for any of them.
"""

from __future__ import annotations

import os
import plistlib
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from actions import Actions, InstallError

UNIT_NAME = "gimp-draggan.service"
LAUNCHD_LABEL = "org.gimp-draggan.daemon"
TASK_NAME = "gimp-draggan daemon"
TASK_FILE = "gimp-draggan-task.xml"


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    text: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class ServicePlan:
    platform: str
    file: ServiceFile
    start: tuple[tuple[str, ...], ...]  # commands that register and start it
    stop: tuple[tuple[str, ...], ...]  # commands that stop and unregister it (failures ignored)
    after_remove: tuple[tuple[str, ...], ...] = ()  # run once the file is gone


def _systemd_arg(arg: str) -> str:
    """Quote one ExecStart word for systemd (spaces, quotes, `%` specifiers, `$` variables)."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(command: Sequence[str]) -> str:
    exec_start = " ".join(_systemd_arg(a) for a in command)
    return (
        "[Unit]\n"
        "Description=gimp-draggan DragGAN daemon (GIMP plug-in backend)\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(command: Sequence[str], log_dir: Path) -> str:
    body = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(log_dir / "daemon.out.log"),
        "StandardErrorPath": str(log_dir / "daemon.err.log"),
        "ProcessType": "Interactive",
    }
    return plistlib.dumps(body, sort_keys=True).decode("utf-8")


def _windows_args(args: Sequence[str]) -> str:
    """Join arguments the way the Windows C runtime splits them (quotes around spaces)."""
    out = []
    for a in args:
        if a and not any(c in a for c in ' \t"'):
            out.append(a)
        else:
            out.append('"' + a.replace('"', '\\"') + '"')
    return " ".join(out)


def windows_task_xml(command: Sequence[str], user: str) -> str:
    program, *args = command
    return (
        '<?xml version="1.0" encoding="UTF-16"?>\n'
        '<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">\n'
        "  <RegistrationInfo>\n"
        "    <Description>gimp-draggan DragGAN daemon (GIMP plug-in backend)</Description>\n"
        "  </RegistrationInfo>\n"
        "  <Triggers>\n"
        "    <LogonTrigger>\n"
        "      <Enabled>true</Enabled>\n"
        f"      <UserId>{escape(user)}</UserId>\n"
        "    </LogonTrigger>\n"
        "  </Triggers>\n"
        "  <Principals>\n"
        '    <Principal id="Author">\n'
        f"      <UserId>{escape(user)}</UserId>\n"
        "      <LogonType>InteractiveToken</LogonType>\n"
        "      <RunLevel>LeastPrivilege</RunLevel>\n"
        "    </Principal>\n"
        "  </Principals>\n"
        "  <Settings>\n"
        "    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>\n"
        "    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n"
        "    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n"
        "    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>\n"
        "    <RestartOnFailure>\n"
        "      <Interval>PT1M</Interval>\n"
        "      <Count>3</Count>\n"
        "    </RestartOnFailure>\n"
        "  </Settings>\n"
        '  <Actions Context="Author">\n'
        "    <Exec>\n"
        f"      <Command>{escape(program)}</Command>\n"
        f"      <Arguments>{escape(_windows_args(args))}</Arguments>\n"
        "    </Exec>\n"
        "  </Actions>\n"
        "</Task>\n"
    )


def windowless(command: Sequence[str]) -> list[str]:
    """On Windows run the venv's pythonw.exe, which opens no console window at logon."""
    program, *rest = command
    if program.lower().endswith("python.exe"):
        program = program[: -len("python.exe")] + "pythonw.exe"
    return [program, *rest]


def plan_service(
    platform: str,
    command: Sequence[str],
    home: Path,
    data: Path,
    env: Mapping[str, str] | None = None,
) -> ServicePlan:
    """The file and the commands that make `command` a login service on `platform`."""
    if not command:
        raise ValueError("plan_service: the daemon command is empty")
    env = os.environ if env is None else env
    if platform == "linux":
        config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
        path = config / "systemd" / "user" / UNIT_NAME
        ctl = ("systemctl", "--user")
        return ServicePlan(
            platform,
            ServiceFile(path, systemd_unit(command)),
            start=(
                (*ctl, "daemon-reload"),
                (*ctl, "enable", UNIT_NAME),
                (*ctl, "restart", UNIT_NAME),
            ),
            stop=((*ctl, "disable", "--now", UNIT_NAME),),
            after_remove=((*ctl, "daemon-reload"),),
        )
    if platform == "macos":
        path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        domain = f"gui/{os.getuid() if hasattr(os, 'getuid') else 501}"
        log_dir = home / "Library" / "Logs" / "gimp-draggan"
        bootout = ("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}")
        return ServicePlan(
            platform,
            ServiceFile(path, launchd_plist(command, log_dir)),
            start=(("launchctl", "bootstrap", domain, str(path)),),
            stop=(bootout,),
        )
    if platform == "windows":
        user = env.get("USERNAME", "")
        if env.get("USERDOMAIN") and user:
            user = f"{env['USERDOMAIN']}\\{user}"
        if not user:
            raise ValueError("USERNAME is not set: cannot name the user the logon task runs as")
        path = data / TASK_FILE
        return ServicePlan(
            platform,
            ServiceFile(path, windows_task_xml(windowless(command), user), "utf-16"),
            start=(
                ("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(path), "/F"),
                ("schtasks", "/Run", "/TN", TASK_NAME),
            ),
            stop=(
                ("schtasks", "/End", "/TN", TASK_NAME),
                ("schtasks", "/Delete", "/TN", TASK_NAME, "/F"),
            ),
        )
    raise ValueError(f"unknown platform {platform!r}: use linux, macos or windows")


def install_service(actions: Actions, plan: ServicePlan) -> None:
    """Write the service file and register it; re-running restarts it with the new file."""
    tool = plan.start[0][0]
    if not actions.dry_run and shutil.which(tool) is None:
        raise InstallError(
            f"{tool} is not available here, so --service cannot register the daemon; "
            "leave out --service and start the daemon yourself with the command printed below"
        )
    actions.write_file(plan.file.path, plan.file.text, encoding=plan.file.encoding)
    if plan.platform == "macos":
        for argv in plan.stop:  # launchd refuses to bootstrap a label that is already loaded
            actions.run(argv, "unload the previous agent, if any", check=False)
    for argv in plan.start:
        actions.run(argv, "register and start the daemon service")


def uninstall_service(actions: Actions, plan: ServicePlan) -> None:
    """Stop and unregister the service if its file is there, then delete the file."""
    if not plan.file.path.exists():
        return
    usable = actions.dry_run or shutil.which(plan.stop[0][0]) is not None
    for argv in plan.stop if usable else ():
        actions.run(argv, "stop and unregister the daemon service", check=False)
    actions.remove(plan.file.path)
    for argv in plan.after_remove if usable else ():
        actions.run(argv, "forget the removed service", check=False)
