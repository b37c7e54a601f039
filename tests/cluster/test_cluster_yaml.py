"""The `ray up` cluster files: valid under Ray's own cluster-config schema (the one `ray up`
checks), and the properties that matter: a head without GPUs, GPU workers autoscaling from
zero, no dashboard or SSH open to the world, the project installed with the vllm extra, and
shared storage for run directories and checkpoints."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

FILES = [REPO / "cluster" / "gpu.yaml", REPO / "cluster" / "gcp-gpu.yaml"]
SHARED = "/mnt/shared"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture(params=FILES, ids=lambda p: p.name)
def cluster(request) -> tuple[Path, dict]:
    return request.param, load(request.param)


def test_valid_under_rays_schema_as_written_and_as_ray_up_prepares_it(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    _, cfg = cluster
    jsonschema.validate(cfg, ray_schema())
    validate_config(prepare_config(copy.deepcopy(cfg)))  # defaults merged in, as `ray up` does


def test_the_schema_check_rejects_a_broken_file(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    _, cfg = cluster
    bad = copy.deepcopy(cfg)
    bad["available_node_types"][bad["head_node_type"]]["resources"]["GPU"] = 0.5  # not an int
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = copy.deepcopy(cfg)
    bad["head_start_ray_command"] = bad.pop("head_start_ray_commands")  # misspelt key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, ray_schema())


def test_head_has_no_gpu_and_gpu_workers_scale_from_zero(cluster):
    path, cfg = cluster
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"]["GPU"] == 0
    machine = head["node_config"].get("InstanceType") or head["node_config"]["machineType"]
    assert re.match(r"^(m\d|c\d|r\d|n2|n2d|c3|e2)", machine), machine  # a CPU machine family
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 for t in workers.values())
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers.values())
    assert cfg["max_workers"] >= max(t["max_workers"] for t in workers.values())


def test_no_dashboard_or_ssh_open_to_the_world(cluster):
    path, cfg = cluster
    text = path.read_text()
    assert "0.0.0.0" not in text and "::/0" not in text
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--include-dashboard=true" not in head_start
    types = cfg["available_node_types"].values()
    if cfg["provider"]["type"] == "aws":
        # every node joins the user's group (SSH from their CIDR only): without one Ray
        # creates a group with SSH open to 0.0.0.0/0
        assert "security_group" not in cfg["provider"]
        assert all(t["node_config"].get("SecurityGroupIds") for t in types)
        script = (REPO / "cluster" / "aws-security-group.sh").read_text()
        assert '--port 22 --cidr "$cidr"' in script
    else:
        # every node on the dedicated VPC whose firewall allows SSH from one CIDR only
        for t in types:
            (nic,) = t["node_config"]["networkInterfaces"]
            assert nic["subnetwork"].endswith("/subnetworks/coalition-ray")
            assert t["node_config"]["tags"]["items"] == ["coalition-ray"]
        script = (REPO / "cluster" / "gcp-network.sh").read_text()
        assert '--allow tcp:22 --source-ranges "$cidr"' in script


def test_setup_installs_the_project_with_the_vllm_extra(cluster):
    _, cfg = cluster
    setup = "\n".join(cfg["setup_commands"])
    extras = re.search(r"pip install .*-c constraints\.txt -e \"\.\[([a-z,-]+)\]\"", setup)
    assert extras and "vllm" in extras.group(1).split(","), setup  # the GPU engine
    assert "torch==2.13.0" in setup
    assert cfg["file_mounts"] == {"~/coalition": "."}
    # python and ray on every node are the project's virtualenv
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("~/venv/bin/ray" in c for c in starts)


def test_shared_storage_is_mounted_on_every_node(cluster):
    _, cfg = cluster
    mounts = [c for c in cfg["setup_commands"] if f" {SHARED}" in c and "mount -t nfs" in c]
    assert len(mounts) == 1  # setup_commands run on the head and on every worker
    fs = {"aws": "efs.us-west-2.amazonaws.com:/", "gcp": ":/coalition"}[cfg["provider"]["type"]]
    assert fs in mounts[0]
    for t in cfg["available_node_types"].values():
        assert "worker_setup_commands" not in t  # no node type skips the common setup


def test_the_gpu_sweep_writes_to_the_shared_storage():
    sweep = load(REPO / "configs" / "sweeps" / "gpu-families.yaml")
    assert sweep["run_dir"].startswith(SHARED + "/")
