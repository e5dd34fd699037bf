"""cluster.yaml: valid for the installed Ray's cluster launcher, GPU workers, no credentials.

Validated offline with Ray's own code: ``prepare_config`` (merges the AWS defaults, setup
commands and per-type worker limits, as ``ray up`` does first) and ``validate_config`` (the
autoscaler's ``ray-schema.json`` through ``jsonschema``, plus Ray's cross-field checks). The
steps of ``ray up`` that call AWS (instance-type lookup, IAM, VPC) are not run.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.helpers import FAKE_SECRETS

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"

# An access key id (long-term AKIA, temporary ASIA), or a 40-character secret-like run.
ACCESS_KEY_RE = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
SECRET_RE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")
CREDENTIAL_NAMES_RE = re.compile(
    r"aws_access_key_id|aws_secret_access_key|aws_session_token|secretaccesskey|accesskeyid",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def prepared(config: dict[str, Any]) -> dict[str, Any]:
    return prepare_config(copy.deepcopy(config))


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def all_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [*all_strings(k), *all_strings(v)]]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return []


def test_valid_for_the_installed_autoscaler(config, prepared):
    schema = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert schema.is_file(), "the installed Ray ships no autoscaler schema"
    validate_config(copy.deepcopy(config))  # as written
    validate_config(prepared)  # after Ray merged its AWS defaults, as `ray up` does
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_the_validator_rejects_a_broken_config(config):
    """The check above has teeth: the schema refuses what `ray up` would refuse."""
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_spot"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)
    broken = copy.deepcopy(config)
    broken["docker"]["imagee"] = broken["docker"]["image"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_region_has_an_ami_for_latest_dlami(prepared):
    """``ImageId: latest_dlami`` resolves offline from Ray's per-region table."""
    from ray.autoscaler._private.aws.config import DEFAULT_AMI, _check_ami

    resolved = copy.deepcopy(prepared)
    _check_ami(resolved)
    for spec in resolved["available_node_types"].values():
        assert spec["node_config"]["ImageId"] == DEFAULT_AMI[resolved["provider"]["region"]]


def test_gpu_workers_autoscale_and_the_head_has_no_gpu(config, prepared):
    gpu = {n: s for n, s in worker_types(prepared).items() if s["resources"].get("GPU", 0) >= 1}
    assert gpu, "no worker type offers a GPU"
    for spec in gpu.values():
        assert spec["min_workers"] == 0
        assert spec["max_workers"] >= 1
        assert spec["node_config"]["InstanceType"].startswith(("g", "p"))
    assert prepared["max_workers"] >= max(s["max_workers"] for s in gpu.values())
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) >= 1, "the head should still run CPU tasks"
    assert head["max_workers"] == 0
    assert 0 < config["idle_timeout_minutes"] <= 60


def test_image_is_the_gpu_image_of_the_installed_ray(config):
    docker = config["docker"]
    assert not {"head_image", "worker_image"} & set(docker), "one image for every node"
    match = re.fullmatch(
        r"rayproject/ray:(?P<ray>[^-]+)-py(?P<py>\d)(?P<minor>\d+)-gpu", docker["image"]
    )
    assert match, docker["image"]
    assert match["ray"] == ray.__version__
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.fullmatch(r">=(\d+)\.(\d+)", requires)
    assert low, requires
    assert (int(match["py"]), int(match["minor"])) >= (int(low[1]), int(low[2]))


def test_project_installed_on_every_node(config, prepared):
    assert config["file_mounts"] == {"~/brats": "."}
    assert (ROOT / config["file_mounts"]["~/brats"] / "pyproject.toml").is_file()
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        assert any(re.search(r'pip install .*-e "?\$HOME/brats\[gpu\]', c) for c in commands)
    excluded = set(config["rsync_exclude"])
    assert {".venv", ".git"} <= excluded


def test_instance_profile_on_every_node_type(config):
    for name, spec in config["available_node_types"].items():
        profile = spec["node_config"].get("IamInstanceProfile")
        assert profile, f"{name}: no IamInstanceProfile (S3 access must come from it)"
        if "Arn" in profile:
            assert re.fullmatch(
                r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@/-]+", profile["Arn"]
            )
        else:
            assert profile["Name"]


def test_no_credentials_anywhere(text, config):
    assert ACCESS_KEY_RE.search(FAKE_SECRETS[0]), "the key detector must catch a key id"
    assert not ACCESS_KEY_RE.search(text)
    assert not CREDENTIAL_NAMES_RE.search(text)
    for value in all_strings(config):
        assert not SECRET_RE.search(value), value
        assert "AWS_" not in value, value
    assert not any(secret in text for secret in FAKE_SECRETS)
    assert "aws_credentials" not in json.dumps(config).lower()


def test_token_auth_stays_on(config):
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "ray get-auth-token --generate" in head_start
    assert re.search(r"RAY_AUTH_MODE=token (\S+=\S+ )*ray start --head", head_start)
    assert re.search(r"RAY_AUTH_MODE=token ray start --address", worker_start)
    assert "disabled" not in head_start + worker_start
    assert "~/.ray/auth_token" in config["cluster_synced_files"]


# --- spot workers, on-demand fallback ------------------------------------------------------------


def gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in worker_types(config).items() if s["resources"].get("GPU", 0) >= 1}


def test_gpu_workers_are_spot_with_an_identical_on_demand_fallback_and_the_head_on_demand(
    config, prepared
):
    gpus = gpu_types(prepared)
    spot = {n for n, s in gpus.items() if "InstanceMarketOptions" in s["node_config"]}
    assert spot == {"gpu_spot"}
    assert gpus["gpu_spot"]["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    fallback = gpus["gpu_on_demand"]
    assert fallback["resources"] == gpus["gpu_spot"]["resources"]
    strip = {"InstanceMarketOptions"}
    assert {k: v for k, v in gpus["gpu_spot"]["node_config"].items() if k not in strip} == (
        fallback["node_config"]
    )
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert "InstanceMarketOptions" not in head["node_config"]
    start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTOSCALER_UTILIZATION_SCORER=brats.autoscaler.spot_first_scorer" in start


def _nodes_to_add(config: dict[str, Any], availability: dict[str, bool]) -> dict[str, int]:
    from ray.autoscaler._private.loader import load_function_or_class
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilityRecord,
        NodeAvailabilitySummary,
        UnavailableNodeInformation,
    )
    from ray.autoscaler._private.resource_demand_scheduler import get_nodes_for

    summary = NodeAvailabilitySummary(
        {
            node_type: NodeAvailabilityRecord(
                node_type=node_type,
                is_available=ok,
                last_checked_timestamp=0,
                unavailable_node_information=None
                if ok
                else UnavailableNodeInformation("InsufficientInstanceCapacity", "no spot"),
            )
            for node_type, ok in availability.items()
        }
    )
    # Loaded by name, as the autoscaler does from the head's environment.
    scorer = load_function_or_class("brats.autoscaler.spot_first_scorer")

    def score(resources: Any, demands: Any, node_type: str) -> Any:
        return scorer(resources, demands, node_type, node_availability_summary=summary)

    added, left = get_nodes_for(
        config["available_node_types"], {}, config["head_node_type"], 8, [{"GPU": 1}] * 3, score
    )
    assert left == []
    return dict(added)


def test_the_autoscaler_launches_spot_and_falls_back_to_on_demand_when_spot_fails(prepared):
    assert _nodes_to_add(prepared, {}) == {"gpu_spot": 3}
    assert _nodes_to_add(prepared, {"gpu_spot": True}) == {"gpu_spot": 3}
    assert _nodes_to_add(prepared, {"gpu_spot": False}) == {"gpu_on_demand": 3}
    # CPU-only demand still lands on no GPU node type it does not need.
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary,
    )

    from brats.autoscaler import spot_first_scorer

    empty = NodeAvailabilitySummary({})
    gpu = spot_first_scorer({"CPU": 4, "GPU": 1}, [{"CPU": 1}], "gpu_spot",
                            node_availability_summary=empty)  # fmt: skip
    assert gpu is not None and gpu[1] is False  # Ray's "GPU node for a CPU task" penalty kept
    assert (
        spot_first_scorer({"CPU": 4}, [{"GPU": 1}], "cpu", node_availability_summary=empty) is None
    )
