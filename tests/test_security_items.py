"""The security items of issue 14: the train state loads with `torch.load(weights_only=True)` (a
crafted state file cannot run code), a secret inside a tracking URI is redacted in what the study
records (the real URI still connects), and a local Ray listens on loopback only."""
from __future__ import annotations

import ipaddress
import pickle
from pathlib import Path

import pytest
import yaml

from xstilts.study.config import DEFAULT_CONFIG, load_config
from xstilts.study.runner import ResolvedStudy, _config_yaml, _real_tracking_uri, _study_params
from xstilts.study.study_run import is_redacted, redact_uri

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55"


# --- torch.load(weights_only=True) ------------------------------------------------------------

def _real_train_state():
    """A train state as xstilts.trainables.train_loop checkpoints it between epochs."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, get_linear_schedule_with_warmup

    from xstilts.trainables.train_loop import _rng_state

    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(XLMRobertaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    loss = model(input_ids=torch.tensor([[0, 5, 6, 2]]), labels=torch.tensor([1])).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    early = {"best_score": 41.5, "best_epoch": 0, "bad_epochs": 1, "best_model": model.state_dict()}
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": 0, "rng": _rng_state(), "early_stopping": early, "stopped": False}


def test_the_real_train_state_loads_with_weights_only(tmp_path):
    import random

    import torch

    from xstilts.trainables.train_loop import TRAIN_STATE, _set_rng_state

    state = _real_train_state()
    torch.save(state, tmp_path / TRAIN_STATE)
    loaded = torch.load(tmp_path / TRAIN_STATE, map_location="cpu", weights_only=True)
    assert loaded["epoch"] == 0 and loaded["stopped"] is False
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert loaded["scheduler"] == state["scheduler"]
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["early_stopping"]["best_score"] == 41.5
    _set_rng_state(loaded["rng"])  # what a resumed worker does with it
    assert random.getstate() == state["rng"]["python"]
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_train_state_does_not_run_code(tmp_path):
    import torch

    marker = tmp_path / "ran"
    crafted = tmp_path / "train_state.pt"
    torch.save({"epoch": 0, "stopped": True, "payload": _Payload(str(marker))}, crafted)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(crafted, map_location="cpu", weights_only=True)
    assert not marker.exists()


def test_train_loop_loads_its_state_with_weights_only():
    source = (REPO / "trainables" / "train_loop.py").read_text()
    loads = [line for line in source.splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for line in loads), loads


# --- secrets in URIs ----------------------------------------------------------------------------

@pytest.mark.parametrize("uri,redacted", [
    (f"postgresql://alice:{SECRET}@host/db", "postgresql://alice:***@host/db"),
    (f"http://u:{SECRET}@host:5000", "http://u:***@host:5000"),
    (f"mysql+pymysql://bob:{SECRET}@[::1]:3306/db?charset=utf8", "mysql+pymysql://bob:***@[::1]:3306/db?charset=utf8"),
    (f"postgresql://host/db?user=alice&password={SECRET}", "postgresql://host/db?user=alice&password=***"),
    ("sqlite:////abs/xstilts_runs/mlflow.db", "sqlite:////abs/xstilts_runs/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("xlm-roberta-large", "xlm-roberta-large"),
])
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted
    assert SECRET not in redact_uri(uri)
    assert is_redacted(redact_uri(uri)) == (redacted != uri)


def _study(tracking_uri: str) -> ResolvedStudy:
    config = load_config(DEFAULT_CONFIG)
    return ResolvedStudy(config, "secret-study", "/abs/xstilts_runs", tracking_uri)


@pytest.mark.parametrize("uri", [f"postgresql://alice:{SECRET}@db.internal/mlflow", f"http://alice:{SECRET}@mlflow:5000"])
def test_the_parent_run_and_the_stored_config_hold_no_password(uri):
    study = _study(uri)
    params = _study_params(study, "/abs/xstilts_runs/embedded_models/tiny")
    text = _config_yaml(study)
    assert SECRET not in repr(params) and SECRET not in text
    assert params["mlflow.tracking_uri"] == redact_uri(uri) and "alice:***@" in params["mlflow.tracking_uri"]
    assert yaml.safe_load(text)["mlflow"]["tracking_uri"] == redact_uri(uri)


def test_resume_connects_with_the_real_uri_not_the_redacted_one():
    """What `load_for_resume` does with the stored config: the redacted URI is replaced by the
    URI the study was found at; an unredacted stored URI stays as it was stored."""
    from xstilts.study.config import parse_config

    uri = f"postgresql://alice:{SECRET}@db.internal/mlflow"
    stored = parse_config(yaml.safe_load(_config_yaml(_study(uri))), "the stored study config")
    assert stored.mlflow.tracking_uri == "postgresql://alice:***@db.internal/mlflow"
    assert _real_tracking_uri(stored, uri).mlflow.tracking_uri == uri
    plain = parse_config(yaml.safe_load(_config_yaml(_study("sqlite:////a/mlflow.db"))), "the stored study config")
    assert _real_tracking_uri(plain, "sqlite:////elsewhere/mlflow.db").mlflow.tracking_uri == "sqlite:////a/mlflow.db"


# --- the local Ray binds to loopback ------------------------------------------------------------

def _listening(process) -> list[str]:
    import psutil

    connections = process.net_connections(kind="inet") if hasattr(process, "net_connections") else \
        process.connections(kind="inet")
    return [c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN]


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.mark.e2e
def test_a_local_ray_listens_on_loopback_only():
    import psutil
    import ray

    from xstilts.study.runner import _start_ray

    assert not ray.is_initialized()
    _start_ray(None, 1, lambda *_: None)
    try:
        nodes = ray.nodes()
        assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]

        @ray.remote(num_cpus=0)
        def worker_listens():  # a worker's own gRPC server, too (defined here: workers cannot import tests)
            import psutil as p

            process = p.Process()
            connections = process.net_connections(kind="inet") if hasattr(process, "net_connections") else \
                process.connections(kind="inet")
            return [c.laddr.ip for c in connections if c.status == p.CONN_LISTEN]

        worker = ray.get(worker_listens.remote())
        addresses = {}
        for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                addresses[f"{process.name()}[{process.pid}]"] = _listening(process)
            except psutil.Error:
                continue
        names = " ".join(addresses)
        assert "gcs_server" in names and "raylet" in names
        public = {name: ips for name, ips in addresses.items() if any(not _is_loopback(ip) for ip in ips)}
        assert not public, public
        assert worker and all(_is_loopback(ip) for ip in worker), worker
    finally:
        ray.shutdown()
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER  # switched off only while the local runtime started
