"""The one fixture module that starts real services for tests: moto S3 (with IAM auth), PostgreSQL, MLflow.

Nothing here is mocked: each fixture starts the real server process on a free loopback port
and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.procs import free_port, wait_port

BIN = Path(sys.executable).parent
AI_HOW = str(BIN / "ai-how")


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]

    def client(self, secret: str | None = None) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real moto S3 server that checks credentials (IAM auth on after the 3 set-up calls)."""
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wait_port(port)
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
        region_name="us-east-1",
    )
    iam.create_user(UserName="ai-how-ci")
    key = iam.create_access_key(UserName="ai-how-ci")["AccessKey"]
    iam.put_user_policy(
        UserName="ai-how-ci",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc)
    proc.terminate()
    proc.wait(10)


@dataclass
class Postgres:
    host: str
    port: int
    database: str
    user: str
    password: str
    socket_dir: Path
    bin_dir: Path

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run ``sql`` as the superuser over the server's own unix socket; returns psql's -tA output."""
        return subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin_dir / "psql"),
                *("-h", str(self.socket_dir), "-p", str(self.port), "-d", database or "postgres"),
                *("-v", "ON_ERROR_STOP=1", "-tAqc", sql),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout


def _pg_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries, when this machine has them and we are root."""
    root = Path("/usr/lib/postgresql")
    if not root.is_dir() or os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    found = [
        p / "bin" for p in root.iterdir() if (p / "bin" / "initdb").exists() and (p / "bin" / "psql").exists()
    ]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of the tests' own (initdb in a temporary directory, a free port, password
    authentication over TCP), never the machine's cluster; it is stopped and deleted afterwards."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server (Debian postgresql, run as root) is not available: run `make setup` as root"
        )
    root = Path(tempfile.mkdtemp(prefix="ai-how-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True, cwd=root
        )

    try:
        as_postgres(
            str(bin_dir / "initdb"),
            *("-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"),
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        as_postgres(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        name, password = f"aihow_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        server = Postgres("127.0.0.1", port, name, name, password, root, bin_dir)
        server.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        server.psql(f"CREATE DATABASE {name} OWNER {name}")
        yield server
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Env:
    """A state directory, a config and the environment the `ai-how` CLI runs with."""

    state_dir: Path
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(
        self, *args: str, check: bool = True, extra_env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AI_HOW, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env | (extra_env or {}),
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ai-how {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def pipeline(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """`ai-how pipeline run -c <this config> ARGS`."""
        return self.cli("pipeline", "run", "-c", str(self.config), *args, **kwargs)

    @contextlib.contextmanager
    def stack(self) -> Iterator[Env]:
        """`ai-how stack up` for the duration of a block, `stack down` after it."""
        self.cli("stack", "up", "-c", str(self.config))
        try:
            yield self
        finally:
            self.cli("stack", "down", "-c", str(self.config), check=False)

    def run_doc(self, run_id: str) -> dict[str, Any]:
        return json.loads((self.state_dir / "runs" / f"{run_id}.json").read_text())["data"]  # type: ignore[no-any-return]

    def latest_run(self) -> str:
        runs = json.loads(self.cli("pipeline", "status", "--json").stdout)
        return str(runs[-1]["run_id"])


def write_config(
    path: Path,
    *,
    mlflow_port: int,
    serving_port: int,
    s3: S3Server | None = None,
    postgres: Postgres | None = None,
    experiment: str = "e2e",
    slurm_shared: Path | None = None,
    **mlflow_extra: Any,
) -> Path:
    mlops: dict[str, Any] = {
        "mlflow": {
            "host": "127.0.0.1",
            "port": mlflow_port,
            "experiment": experiment,
            "backend_store": {"type": "postgresql" if postgres else "sqlite"},
            **mlflow_extra,
        },
        "serving": {
            "backend": "local",
            "host": "127.0.0.1",
            "port": serving_port,
            "autoscaling": {"enabled": False, "min_replicas": 1, "max_replicas": 1},
        },
        "object_store": {"backend": "file"},
    }
    if s3 is not None:
        mlops["object_store"] = {
            "backend": "s3",
            "endpoint": s3.endpoint,
            "region": "us-east-1",
            "credentials": {"access_key_id_env": "E2E_S3_KEY", "secret_access_key_env": "E2E_S3_SECRET"},
        }
    if postgres is not None:
        mlops["postgresql"] = {
            "enabled": True,
            "host": postgres.host,
            "port": postgres.port,
            "database": postgres.database,
            "username": postgres.user,
            "password_env": "E2E_PG_PASSWORD",
        }
    hpc: dict[str, Any] = {"name": "workstation", "scheduler": "local"}
    if slurm_shared is not None:
        hpc = {
            "name": "workstation",
            "scheduler": "slurm",
            "storage": {"type": "local", "mount_point": str(slurm_shared)},
            "slurm": {"cpus_per_task": 1, "mem": "3G", "time": "00:30:00"},
        }
    data = {
        "metadata": {"name": "e2e"},
        "clusters": {"hpc": hpc},
        "mlops": mlops,
        "monitoring": {"prometheus": {"enabled": False}, "grafana": {"enabled": False}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_env(
    root: Path, *, s3: S3Server | None = None, postgres: Postgres | None = None, slurm: bool = False
) -> Env:
    state = root / "state"
    config = write_config(
        root / "cluster.yaml",
        mlflow_port=free_port(),
        serving_port=free_port(),
        s3=s3,
        postgres=postgres,
        slurm_shared=root / "beegfs" if slurm else None,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "AI_HOW_"))}
    env |= {
        "AI_HOW_STATE_DIR": str(state),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    if s3 is not None:
        env |= {"E2E_S3_KEY": s3.access_key, "E2E_S3_SECRET": s3.secret_key}
    if postgres is not None:
        env["E2E_PG_PASSWORD"] = postgres.password
    return Env(state, config, env)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Env]:
    """MLflow (SQLite) started with `ai-how stack up`, the moto S3 server, one shared state directory."""
    with make_env(tmp_path_factory.mktemp("e2e"), s3=s3_server).stack() as env:
        yield env


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """A real one-node SLURM (munged, slurmctld, slurmd with a fake GPU GRES) from Debian's slurm-wlm."""
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("SLURM needs Debian's slurm-wlm and root: run `make setup` as root")
    was_up = subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0
    subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm-local.sh"), "start"], check=True, capture_output=True
    )
    yield
    if not was_up:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm-local.sh"), "stop"], check=False, capture_output=True
        )


@dataclass
class SSHServer:
    login: str
    options: list[str]


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH server on a loopback port with key authentication only (its own config and keys)."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs Debian's openssh-server and root: run `make setup` as root")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"PidFile {root / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with (root / "sshd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_port(port)
    options = [
        "-i",
        str(root / "client_key"),
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={root / 'known_hosts'}",
        "-o",
        "IdentitiesOnly=yes",
    ]
    yield SSHServer(f"root@127.0.0.1:{port}", options)
    proc.terminate()
    proc.wait(10)


# Settings the QEMU driver needs inside a container (no cgroup delegation, no mount namespaces, no
# AppArmor): tested in ../shared/notes/platform.md §11.2. Only written when this fixture starts libvirtd.
_QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def _virsh_ok(uri: str) -> bool:
    done = subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, check=False, timeout=30)
    return done.returncode == 0


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The system libvirt daemon (qemu:///system) with QEMU: the running one, or one started here.

    When this fixture starts libvirtd it writes the container-friendly qemu.conf above (the original is
    put back afterwards) and stops the daemons it started.
    """
    uri = "qemu:///system"
    if os.geteuid() != 0 or not (shutil.which("libvirtd") and shutil.which("qemu-system-x86_64")):
        pytest.skip("needs root and Debian's libvirt-daemon-driver-qemu + qemu-system-x86: run `make setup`")
    if _virsh_ok(uri):
        yield uri
        return
    logs = tmp_path_factory.mktemp("libvirtd")
    conf = Path("/etc/libvirt/qemu.conf")
    saved = conf.read_bytes() if conf.exists() else None
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(_QEMU_CONF)
    for folder in (
        "/run/libvirt",
        "/var/lib/libvirt/qemu",
        "/var/log/libvirt/qemu",
        "/var/cache/libvirt/qemu",
    ):
        Path(folder).mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for daemon in ("virtlogd", "libvirtd"):
            with (logs / f"{daemon}.log").open("wb") as log:
                started.append(subprocess.Popen([daemon], stdout=log, stderr=subprocess.STDOUT))
        for _ in range(60):
            if _virsh_ok(uri):
                break
            if started[-1].poll() is not None:
                pytest.fail(f"libvirtd exited: {(logs / 'libvirtd.log').read_text()[-2000:]}")
            time.sleep(1)
        else:
            pytest.fail(f"libvirtd did not answer in 60 s: {(logs / 'libvirtd.log').read_text()[-2000:]}")
        yield uri
    finally:
        for proc in reversed(started):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        if saved is None:
            conf.unlink(missing_ok=True)
        else:
            conf.write_bytes(saved)
