"""SandboxPolicy: frozen, validated, printable, and it survives the trip to the zygote."""

from __future__ import annotations

import dataclasses

import pytest

from codeinterp.errors import InvalidRequest
from codeinterp.sandbox.policy import MEMORY_TIERS, GiB, Limits, MiB, SandboxPolicy


def test_default_policy_has_the_documented_limits() -> None:
    """1 GiB memory, 256 processes, 1 CPU, loopback-only network and seccomp on."""
    policy = SandboxPolicy()
    assert policy.limits.memory == 1 * GiB
    assert policy.limits.processes == 256
    assert policy.limits.cpus == 1.0
    assert policy.limits.output == 1 * MiB
    assert policy.network == "loopback"
    assert policy.seccomp is True


def test_policy_is_frozen() -> None:
    """A policy cannot be changed after it is made."""
    policy = SandboxPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.hostname = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("tier", "expected"), [("1g", 1), ("4g", 4), ("16g", 16), ("64g", 64)])
def test_memory_tiers_map_to_the_memory_limit(tier: str, expected: int) -> None:
    """Each OpenAI container tier sets the memory cgroup limit to that many GiB."""
    assert SandboxPolicy.for_memory_tier(tier).limits.memory == expected * GiB
    assert set(MEMORY_TIERS) == {"1g", "4g", "16g", "64g"}


def test_unknown_tier_names_the_valid_ones() -> None:
    """An unknown tier is refused with the list of valid tiers."""
    with pytest.raises(InvalidRequest, match="1g, 4g, 16g, 64g"):
        SandboxPolicy.for_memory_tier("2g")


@pytest.mark.parametrize(
    "changes",
    [{"memory": 0}, {"memory": 10 * MiB}, {"processes": 0}, {"cpus": 0}, {"workspace": -1}],
)
def test_invalid_limits_are_refused(changes: dict[str, int]) -> None:
    """Limits that would make a session unusable are rejected before anything runs."""
    with pytest.raises(InvalidRequest):
        Limits(**changes)


def test_only_loopback_networking_exists() -> None:
    """No policy can give a session a network beyond its own loopback."""
    with pytest.raises(InvalidRequest, match="loopback"):
        SandboxPolicy(network="host")


def test_bind_paths_must_be_absolute_and_normalised() -> None:
    """Relative or `..` bind paths are refused."""
    for bad in ("usr", "/usr/../etc", "/usr/"):
        with pytest.raises(InvalidRequest):
            SandboxPolicy(readonly_binds=(bad,))


def test_policy_round_trips_through_json() -> None:
    """The dict sent to the zygote rebuilds an equal policy."""
    policy = SandboxPolicy.for_memory_tier("4g").with_limits(processes=64, cpus=0.5)
    assert SandboxPolicy.from_dict(policy.to_dict()) == policy
    assert '"processes": 64' in policy.to_json()


def test_address_space_limit_leaves_headroom_above_memory() -> None:
    """RLIMIT_AS is the memory limit plus the headroom, so huge allocations fail politely."""
    limits = Limits(memory=2 * GiB, address_space_headroom=1 * GiB)
    assert limits.address_space == 3 * GiB


def test_describe_lists_every_protection() -> None:
    """The printable form names memory, processes, network, seccomp and the binds."""
    text = "\n".join(SandboxPolicy().describe())
    for word in ("memory limit", "processes", "network", "seccomp", "/usr", "/mnt/data quota"):
        assert word in text
