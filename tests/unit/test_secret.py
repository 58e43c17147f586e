"""The loopback secret (issue 17): a daemon serves only clients that send its owner's secret,
and keeps serving its owner while refusing the others."""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fakes import FakeExecutor
from service_helpers import Raw

from gimp_draggan.service.keys import ensure_secret
from gimp_draggan.service.server import Server, ServerConfig
from gimp_draggan_plugin import protocol as P
from gimp_draggan_plugin import zmtp  # noqa: F401 (imported before a child forks)
from gimp_draggan_plugin.client import Client, DaemonError, read_secret
from gimp_draggan_plugin.protocol import JobRequest, Params


def test_secret_is_made_once_for_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "daemon.secret"
    secret, where = ensure_secret(path)
    assert where == path and len(secret) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_secret(path)[0] == secret == read_secret(str(path))
    path.chmod(0o644)
    assert ensure_secret(path)[0] == secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["daemon.secret"]


@pytest.fixture
def owned() -> Iterator[Server]:
    server = Server(
        ServerConfig(bind="tcp://127.0.0.1:*", secret="the-owners-secret"), FakeExecutor()
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["pyzmq", "zmtp"])
def test_a_client_without_the_secret_is_refused_and_the_owner_served(
    owned: Server, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gimp_draggan")
    with (
        Client(owned.address, secret="guess", prefer=transport) as stranger,
        pytest.raises(DaemonError) as refused,
    ):
        stranger.hello()
    assert refused.value.code == "not_your_daemon"
    assert "belongs to another user" in str(refused.value)
    with Client(owned.address, secret="the-owners-secret", prefer=transport) as owner:
        assert owner.hello()["default_model"] == "tiny"
        result = owner.drag(
            JobRequest.photo(
                pixels=bytes(16),
                width=2,
                height=2,
                pairs=[((0, 0), (1, 1))],
                params=Params(steps=2),
            )
        )
        assert result.patch == bytes([255] * 16)
    assert any("refused not_your_daemon from client" in r.getMessage() for r in caplog.records)


def test_the_secret_file_is_read_when_a_request_goes(
    owned: Server, own_secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plug-in makes its client, then starts the daemon, which writes the secret."""
    monkeypatch.setenv(P.SECRET_ENV, str(own_secret.with_name("later.secret")))
    with Client(owned.address) as client:
        with pytest.raises(DaemonError, match="carried no secret"):
            client.hello()
        ensure_secret(own_secret.with_name("later.secret"))
        owned.config = dataclasses.replace(owned.config, secret=read_secret())
        assert client.hello()["server"]


def test_a_raw_request_without_token_gets_no_answer_but_the_error(owned: Server) -> None:
    raw = Raw(owned.address)
    try:
        raw.request("status", "s-1")
        reply, _ = raw.until("s-1")
        assert (reply.op, reply.header["code"]) == ("error", "not_your_daemon")
        assert "jobs_done" not in reply.header
        raw.request("status", "s-2", {P.TOKEN_FIELD: "the-owners-secret"})
        assert raw.until("s-2")[0].op == "status"
    finally:
        raw.close()


def _other_user() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating a second Unix user needs root")
    if not (shutil.which("useradd") and shutil.which("userdel") and shutil.which("runuser")):
        pytest.skip("useradd/userdel/runuser are not installed")
    name = f"gdtest{secrets.token_hex(3)}"
    made = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/bin/sh", name], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"useradd failed here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


other_user = pytest.fixture(_other_user)


def _as_user(uid: int, gid: int, address: str, transport: str, secret_file: Path) -> str:
    """Run a client with the default secret lookup in a forked child that became `uid`; return
    what it reports. (A fork, not a new Python: that user may not reach this interpreter.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # The child: drop to the other user, never return into pytest.
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.environ[P.SECRET_ENV] = str(secret_file)
            report = f"secret readable: {read_secret() is not None}; "
            try:
                with Client(address, prefer=transport, timeout_s=5) as c:
                    c.hello("intruder")
                report += "SERVED"
            except DaemonError as exc:
                report += f"REFUSED {exc.code} {exc}"
            os.write(write_end, report.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    assert os.waitpid(pid, 0)[1] == 0, out
    return out


def test_another_unix_users_client_is_refused(other_user: str) -> None:
    """The owner's secret file is mode 0600 in a folder everyone may enter: the other user can
    name it but not read it, so its client sends no secret and is refused, on both transports;
    the owner is served before and after."""
    shared = Path(tempfile.mkdtemp(prefix="gd-secret-"))
    try:
        shared.chmod(0o755)
        secret, secret_file = ensure_secret(shared / "daemon.secret")
        server = Server(ServerConfig(bind="tcp://127.0.0.1:*", secret=secret), FakeExecutor())
        server.start()
        try:
            user = pwd.getpwnam(other_user)
            for transport in ("zmtp", "pyzmq"):
                out = _as_user(user.pw_uid, user.pw_gid, server.address, transport, secret_file)
                assert "secret readable: False" in out, out
                assert "REFUSED not_your_daemon" in out and "another user" in out, out
            with Client(server.address, secret=secret) as owner:
                assert owner.hello()["server"]
        finally:
            server.stop()
    finally:
        shutil.rmtree(shared)


def test_the_installer_gives_a_sandboxed_plugin_the_secret(tmp_path: Path) -> None:
    """A Flatpak GIMP cannot read ~/.config: the installer makes the secret if need be and puts
    it in the plug-in's owner-only config, where `settings.load` finds it."""
    from test_installer_plugin import run_installer

    from gimp_draggan_plugin import settings

    (tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0").mkdir(parents=True)
    out = run_installer(tmp_path, "--plugin-only")
    assert out.returncode == 0, out.stderr
    secret_file = tmp_path / ".config/gimp-draggan/daemon.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    plugin = tmp_path / ".var/app/org.gimp.GIMP/config/GIMP/3.0/plug-ins/gimp-draggan"
    loaded = settings.load(plugin, "", {})
    assert loaded.secret == secret_file.read_text().strip() == ensure_secret(secret_file)[0]
