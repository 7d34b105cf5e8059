"""cluster.yaml: validated offline the way `ray up` validates it, plus its security properties.

What `ray up` does with the file (Ray 2.60, ray/autoscaler/_private/commands.py, _bootstrap_config):
  1. prepare_config: merges the provider's defaults.yaml (shipped in the wheel), prepends
     setup_commands to head/worker setup, fills per-node-type min/max workers. Offline.
  2. provider.fillout_available_node_types_resources: for AWS, ec2 DescribeInstanceTypes to fill
     in CPU/GPU/memory of node types that do not declare them. Network; a failure is only a warning.
  3. validate_config: the JSON schema ray-schema.json plus cross-field checks. Offline. It fails on
     the raw file (no cluster_synced_files, ...): it is meant for step 1's output.
  4. provider.bootstrap_config: for AWS, IAM role, key pair, subnets, security groups. Network.
Steps 1 and 3 run here, unchanged. Step 2 is skipped: every node type declares its resources
(checked below), so it has nothing to fill. Step 4 is AWS side effects; the part of it that
decides what is open to the Internet, Ray's security-group code, is exercised below with every
AWS call made to fail. Nothing here needs boto3, credentials or a network.
"""
from __future__ import annotations

import copy
import importlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
CLUSTER_DOC = REPO / "docs" / "cluster.md"
SRC_ON_NODES = "/home/ubuntu/xstilts/src"

COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands",
                 "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
NODE_TYPE_COMMAND_LISTS = ("initialization_commands", "worker_setup_commands")


def load_raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_up_validate(raw: dict) -> dict:
    """Steps 1 and 3 of `ray up`; returns the prepared config (what the head receives)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_raw()


@pytest.fixture(scope="module")
def cfg(raw) -> dict:
    return ray_up_validate(raw)


def all_commands(cfg: dict) -> list[str]:
    commands = [c for key in COMMAND_LISTS for c in cfg.get(key, [])]
    for node_type in cfg["available_node_types"].values():
        commands += [c for key in NODE_TYPE_COMMAND_LISTS for c in node_type.get(key, [])]
    return commands


def gpu_node_types(cfg: dict) -> dict:
    return {name: t for name, t in cfg["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


def env_sh_command(cfg: dict) -> str:
    [command] = [c for c in cfg["setup_commands"] if "> /home/ubuntu/xstilts/env.sh" in c]
    return command


# ----------------------------------------------------------------------------- ray up validation

def test_ray_up_validation_passes(cfg):
    assert cfg["cluster_name"] == "xstilts"
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_validate_config_alone_rejects_the_raw_file(raw):
    """Why step 1 must run first (stack notes): validate_config wants fields prepare_config fills."""
    from ray.autoscaler._private.util import validate_config

    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(copy.deepcopy(raw))


def test_every_node_type_declares_its_resources(raw):
    """So skipping step 2 (AWS instance-type lookup) loses nothing."""
    for name, node_type in raw["available_node_types"].items():
        assert node_type["resources"].get("CPU", 0) >= 1, name


@pytest.mark.parametrize("mutate, bad_key", [
    (lambda c: c.update(setup_comands=c.pop("setup_commands")), "setup_comands"),
    (lambda c: c["available_node_types"]["gpu"].update(min_worker=0), "min_worker"),
    (lambda c: c["auth"].update(ssh_usr="ubuntu"), "ssh_usr"),
    (lambda c: c.update(idle_timeout_minute=5), "idle_timeout_minute"),
], ids=["top-level", "node-type", "auth", "near-miss"])
def test_misspelled_key_fails_validation(raw, mutate, bad_key):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError, match=bad_key):
        ray_up_validate(broken)


def _unknown_provider_keys(cfg: dict) -> set[str]:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return set(cfg["provider"]) - set(schema["properties"]["provider"]["properties"])


def test_provider_keys_are_known_to_ray(cfg, raw):
    """The schema lets any key through under `provider` (additionalProperties: true), so a typo
    there passes `ray up` validation and is silently ignored. Check the keys against the schema's
    list; the misspelled copy shows the gap this closes."""
    assert not _unknown_provider_keys(cfg)
    broken = copy.deepcopy(raw)
    broken["provider"]["availabilty_zone"] = broken["provider"].pop("availability_zone")
    prepared = ray_up_validate(broken)  # passes Ray's own validation ...
    assert _unknown_provider_keys(prepared) == {"availabilty_zone"}  # ... but not this check


def test_commands_are_valid_shell(cfg):
    """The folded YAML scalars still make well-formed bash (syntax only; nothing is run)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for command in all_commands(cfg):
        result = subprocess.run([bash, "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr)


# ----------------------------------------------------------------------------- network exposure

def test_security_group_admits_only_ssh_from_a_cidr_and_the_group_itself(raw):
    group = raw["metadata"]["security_group"]
    rules = group["IpPermissions"]
    ssh = [r for r in rules if r.get("IpProtocol") == "tcp"]
    intra = [r for r in rules if r.get("IpProtocol") == "-1"]
    assert len(ssh) == 1 and len(intra) == 1 and len(rules) == 2, rules

    [rule] = ssh
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    assert "Ipv6Ranges" not in rule and "PrefixListIds" not in rule and "UserIdGroupPairs" not in rule
    assert rule["IpRanges"]
    for ip_range in rule["IpRanges"]:
        network = ipaddress.ip_network(ip_range["CidrIp"])  # raises on a malformed CIDR
        assert network.prefixlen > 0, "SSH must not be open to the whole Internet"

    [rule] = intra
    assert set(rule) == {"IpProtocol", "UserIdGroupPairs"}, "intra-group rule must have no IP ranges"
    assert rule["UserIdGroupPairs"] == [{"GroupName": group["GroupName"]}]


def test_every_node_type_uses_the_prepared_security_group(cfg):
    assert "security_group" not in cfg["provider"], (
        "Ray would create that group with SSH open to 0.0.0.0/0; use SecurityGroupIds")
    groups = [t["node_config"].get("SecurityGroupIds") for t in cfg["available_node_types"].values()]
    assert all(groups) and all(g == groups[0] for g in groups), groups


@pytest.fixture
def ray_aws_config(monkeypatch):
    """ray.autoscaler._private.aws.config, importable without boto3 (it is not needed to run the
    functions used here; stand-ins replace it when it is missing, and are removed afterwards)."""
    prefix = "ray.autoscaler._private.aws"
    try:
        import boto3  # noqa: F401
        import botocore  # noqa: F401
        stubbed = False
    except ImportError:
        stubbed = True
        for name in ("boto3", "boto3.exceptions", "boto3.resources", "boto3.resources.base",
                     "botocore", "botocore.client", "botocore.config", "botocore.exceptions"):
            stand_in = mock.MagicMock(name=name)
            stand_in.__version__ = "1.40.0"  # config.py asserts a minimum boto3 version
            monkeypatch.setitem(sys.modules, name, stand_in)
    module = importlib.import_module(prefix + ".config")

    def no_aws(*args, **kwargs):
        raise AssertionError("an AWS API would have been called")

    monkeypatch.setattr(module, "_resource", no_aws)
    monkeypatch.setattr(module, "_client", no_aws)
    yield module
    if stubbed:
        for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
            del sys.modules[name]


def test_ray_creates_and_changes_no_security_group(cfg, ray_aws_config):
    """Ray's own security-group step, on our config: returns at once, without an AWS call."""
    upsert = mock.Mock(side_effect=AssertionError("Ray would create or change a security group"))
    with mock.patch.object(ray_aws_config, "_upsert_security_groups", upsert):
        before = copy.deepcopy(cfg)
        after = ray_aws_config._configure_security_group(copy.deepcopy(cfg))
    assert after["available_node_types"] == before["available_node_types"]
    upsert.assert_not_called()


def test_why_ray_must_not_manage_the_group(cfg, ray_aws_config):
    """Ray 2.60 adds SSH from 0.0.0.0/0 to any group it creates, whatever provider.security_group
    says: the reason every node type names its own group. If this starts failing, Ray changed and
    provider.security_group may be usable."""
    rules = ray_aws_config._create_default_inbound_rules(
        {"sg-0123456789abcdef0"}, cfg["metadata"]["security_group"]["IpPermissions"])
    open_ssh = [r for r in rules if r.get("FromPort") == 22
                and {"CidrIp": "0.0.0.0/0"} in r.get("IpRanges", [])]
    assert open_ssh


def test_nothing_binds_all_interfaces(cfg):
    wildcard = re.compile(r"(?<![\d.])0\.0\.0\.0(?![\d.])|(--host|--dashboard-host)[= ]['\"]?(::|\[::\]|\*)")
    for command in all_commands(cfg):
        assert not wildcard.search(command), command
        for risky in ("--disable-security-middleware", "--allowed-hosts", "--cors-allowed-origins"):
            assert risky not in command, command


def test_dashboard_only_on_loopback(cfg):
    [start] = [c for c in cfg["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start  # else no worker ever starts


def test_mlflow_server_on_the_private_ip(cfg):
    [server] = [c for c in cfg["head_start_ray_commands"] if "exec mlflow server" in c]
    argv = shlex.split(server.split("exec ", 1)[1].split("'", 1)[0])
    options = dict(zip(argv[2::2], argv[3::2]))
    assert argv[:2] == ["mlflow", "server"]
    assert options["--host"] == "$XSTILTS_HEAD_IP"  # expanded by the inner bash on the head
    assert options["--port"] == "5000"
    assert options["--backend-store-uri"] == "sqlite:////home/ubuntu/xstilts/mlflow.db"
    assert options["--artifacts-destination"] == "$XSTILTS_S3_PREFIX/mlflow-artifacts"
    assert "source /home/ubuntu/xstilts/env.sh" in server


# ----------------------------------------------------------------------------- nodes and scaling

def test_gpu_workers_scale_from_zero(cfg):
    gpu_types = gpu_node_types(cfg)
    assert gpu_types, "no node type advertises a GPU"
    assert cfg["head_node_type"] not in gpu_types
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0, name
        assert 1 <= node_type["max_workers"] <= cfg["max_workers"], name
    assert cfg["idle_timeout_minutes"] > 0
    assert cfg["available_node_types"][cfg["head_node_type"]]["max_workers"] == 0


def test_head_offers_the_trial_driver_resource(cfg):
    """study/runner.py asks a cluster for TRAIN_DRIVER; only the head has it, so trial drivers
    stay there, and it allows at least one trial per GPU."""
    head = cfg["available_node_types"][cfg["head_node_type"]]
    gpus = sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu_node_types(cfg).values())
    assert head["resources"].get("TRAIN_DRIVER", 0) >= min(gpus, cfg["max_workers"])
    for name, node_type in cfg["available_node_types"].items():
        if name != cfg["head_node_type"]:
            assert "TRAIN_DRIVER" not in node_type["resources"], name


def _torch_pin() -> str:
    """The exact torch CI tests with (constraints.txt; pyproject.toml holds a range)."""
    [pin] = [line.strip() for line in (REPO / "constraints.txt").read_text().splitlines() if re.match(r"torch\s*==", line)]
    return pin.replace(" ", "")


@pytest.mark.parametrize("kind", ["head_setup_commands", "worker_setup_commands"])
def test_setup_installs_xstilts_with_pinned_torch(cfg, kind):
    pin = _torch_pin()
    installs = [c for c in cfg[kind] if "pip install" in c and SRC_ON_NODES in c]
    assert installs, f"{kind} does not install xstilts from {SRC_ON_NODES}"
    for command in installs:
        assert f'"{pin}"' in command or f" {pin} " in command, (pin, command)
        assert "--reinstall-package xstilts" in command  # same version string, new code
        assert f"-c {SRC_ON_NODES}/constraints.txt" in command  # the versions CI tested
    # Any other torch install on the node uses the same pin.
    for command in cfg[kind]:
        for spec in re.findall(r"torch[=<>~!]=?[^\s\"']*", command):
            assert spec == pin, command


def test_the_installed_source_is_this_checkout(cfg):
    assert cfg["file_mounts"] == {SRC_ON_NODES: "."}
    assert ".gitignore" in cfg["rsync_filter"]
    assert "**/.git" in cfg["rsync_exclude"]


def test_every_node_points_mlflow_at_the_head_private_ip(cfg):
    command = env_sh_command(cfg)
    assert 'HEAD_IP="${RAY_HEAD_IP:-' in command  # workers: the head's internal IP, from Ray
    assert "169.254.169.254/latest/meta-data/local-ipv4" in command  # head: its own private IP
    assert '"export MLFLOW_TRACKING_URI=http://$HEAD_IP:5000"' in command
    assert '"export XSTILTS_HEAD_IP=$HEAD_IP"' in command
    assert "'export PATH=/home/ubuntu/xstilts/venv/bin:$PATH'" in command
    assert re.search(r"'export XSTILTS_S3_PREFIX=s3://[^'\s]+'", command)
    # The environment is in place before each raylet starts, so every Ray worker inherits it.
    for kind in ("head_start_ray_commands", "worker_start_ray_commands"):
        [start] = [c for c in cfg[kind] if "ray start" in c]
        assert start.startswith("source /home/ubuntu/xstilts/env.sh &&"), start


def test_env_sh_written_as_expected(cfg, tmp_path):
    """Run the env.sh command as on a worker (RAY_HEAD_IP set, so no metadata-service call)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    command = env_sh_command(cfg).replace("/home/ubuntu/xstilts/env.sh", str(tmp_path / "env.sh"))
    env = dict(os.environ, RAY_HEAD_IP="10.0.1.23")
    subprocess.run([bash, "-c", command], check=True, env=env, timeout=30)
    lines = (tmp_path / "env.sh").read_text().splitlines()
    assert "export MLFLOW_TRACKING_URI=http://10.0.1.23:5000" in lines
    assert "export XSTILTS_HEAD_IP=10.0.1.23" in lines
    assert "export PATH=/home/ubuntu/xstilts/venv/bin:$PATH" in lines


# ----------------------------------------------------------------------------- the doc

def test_doc_creates_the_group_the_config_describes(raw):
    doc = CLUSTER_DOC.read_text()
    cidr = raw["metadata"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"]
    assert re.search(rf"^SSH_CIDR={re.escape(cidr)}\s", doc, re.M)
    assert f"--group-name {raw['metadata']['security_group']['GroupName']} " in doc
    ingress = [line for line in doc.splitlines() if "authorize-security-group-ingress" in line]
    assert len(ingress) == 2, ingress
    for line in ingress:
        ssh = '--protocol tcp --port 22 --cidr "$SSH_CIDR"' in line
        intra = '--protocol -1 --source-group "$SG"' in line
        assert ssh != intra, line
    for line in doc.splitlines():
        if "0.0.0.0/0" in line:
            assert "never" in line or "Ray 2.60" in line or "opens SSH" in line, line
