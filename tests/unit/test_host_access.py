"""Host-function answers: access rules, matcher grammar, error states and lookup tracking."""

from __future__ import annotations

import json

import pytest
from fakes import NAMESPACE, SECRET, FakeGateway, secret

from atc.k8s.access import (
    FORBIDDEN_OUTSIDE_RELEASE,
    ClusterAccess,
    GatewayError,
    State,
    answer_lookup,
    answer_rest_mapping,
    matcher_contains,
    matches_resource,
)

OBJ = ("foo", "Deployment.apps", "test")


@pytest.mark.parametrize(
    "matcher",
    [
        "*",
        "foo/Deployment.apps:test",
        "Deployment.apps:test",
        "Deployment.apps",
        "*/*",
        "*/Deployment.apps",
        "foo/Deployment.apps:*",
    ],
)
def test_matchers_that_match_foo_deployment_test(matcher: str) -> None:
    assert matches_resource(matcher, *OBJ)


@pytest.mark.parametrize(
    "matcher",
    ["", "/", "Deployment", "bar/Deployment.apps", "Deployment.custom:test", "Deployment.apps:other", "bar/*"],
)
def test_matchers_that_do_not_match_foo_deployment_test(matcher: str) -> None:
    assert not matches_resource(matcher, *OBJ)


def test_matcher_contains_a_ref() -> None:
    assert matcher_contains("default/Secret", "default/Secret:db")
    assert matcher_contains("*", "default/Secret:db")
    assert not matcher_contains("other/Secret", "default/Secret:db")
    assert not matcher_contains("default/Secret:a", "default/Secret:db")


def access(gateway: FakeGateway, *matchers: str, enabled: bool = True) -> ClusterAccess:
    return ClusterAccess(enabled, "rel", "ns", matchers, gateway)


def test_without_cluster_access_the_state_is_feature_not_granted() -> None:
    answer = answer_lookup(access(FakeGateway(), enabled=False), "x", "ns", "Secret", "v1")
    assert (answer.state, answer.payload) == (State.FEATURE_NOT_GRANTED, b"feature not granted")
    assert answer_rest_mapping(access(FakeGateway(), enabled=False), "", "Secret").state == State.FEATURE_NOT_GRANTED


def test_owned_object_is_returned_and_tracked_internal() -> None:
    owned = secret("db", "ns", "rel", "ns")
    grant = access(FakeGateway((SECRET, owned)))
    answer = answer_lookup(grant, "db", "ns", "Secret", "v1")
    assert answer.state == State.OK
    assert json.loads(answer.payload) == owned
    assert grant.tracker.internal == {"ns/Secret:db"}


def test_unowned_object_is_forbidden_with_yokes_message() -> None:
    grant = access(FakeGateway((SECRET, secret("db", "ns", "other", "ns"))))
    answer = answer_lookup(grant, "db", "ns", "Secret", "v1")
    assert (answer.state, answer.payload.decode()) == (State.FORBIDDEN, FORBIDDEN_OUTSIDE_RELEASE)
    assert not grant.tracker.internal
    assert not grant.tracker.external


def test_matcher_grants_access_and_tracks_external() -> None:
    grant = access(FakeGateway((SECRET, secret("db", "ns"))), "ns/Secret:db")
    assert answer_lookup(grant, "db", "ns", "Secret", "v1").state == State.OK
    assert grant.tracker.external == {"ns/Secret:db"}


def test_not_found_is_state_3_and_tracked_as_candidate_or_external() -> None:
    grant = access(FakeGateway(), "ns/Secret:watched")
    missing = answer_lookup(grant, "gone", "", "Secret", "v1")
    assert (missing.state, missing.payload) == (State.NOT_FOUND, b'secrets "gone" not found')
    answer_lookup(grant, "watched", "ns", "Secret", "v1")
    assert grant.tracker.candidate == {"default/Secret:gone"}  # namespaced kinds default to "default"
    assert grant.tracker.external == {"ns/Secret:watched"}


def test_cluster_scoped_lookup_ignores_the_namespace() -> None:
    gateway = FakeGateway((NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
    answer_lookup(access(gateway, "*"), "n", "ignored", "Namespace", "v1")
    assert gateway.gets == [("namespaces", "", "n")]


@pytest.mark.parametrize(
    ("status", "state"), [(401, State.UNAUTHENTICATED), (403, State.FORBIDDEN), (500, State.ERROR)]
)
def test_api_errors_map_to_states(status: int, state: State) -> None:
    grant = access(FakeGateway(fail=GatewayError(status, "boom")))
    assert answer_lookup(grant, "db", "ns", "Secret", "v1").state == state


@pytest.mark.parametrize(("api_version", "kind"), [("a/b/c", "Secret"), ("v1", "Nope")])
def test_bad_api_version_or_unknown_kind_is_state_2(api_version: str, kind: str) -> None:
    answer = answer_lookup(access(FakeGateway()), "x", "ns", kind, api_version)
    assert answer.state == State.ERROR
    assert answer.payload


def test_rest_mapping_payload_has_gos_field_names() -> None:
    answer = answer_rest_mapping(access(FakeGateway()), "", "Secret")
    assert answer.state == State.OK
    assert answer.payload == b'{"Group":"","Version":"v1","Kind":"Secret","Resource":"secrets","Namespaced":true}'
    assert answer_rest_mapping(access(FakeGateway()), "", "Missing").state == State.ERROR
