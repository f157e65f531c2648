"""Flight stdout becomes stages of objects."""

from __future__ import annotations

import json

import pytest

from atc.release.stages import EMPTY_OUTPUT, OutputError, parse_stages

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x.y"}}


def test_single_json_object_is_one_stage() -> None:
    assert parse_stages(json.dumps(CM).encode()) == [[CM]]


def test_yaml_document_stream_is_one_stage() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n---\n"
    )
    assert parse_stages(text.encode()) == [[CM, DEPLOY]]


def test_stream_stops_at_first_document_that_is_not_an_object() -> None:
    text = json.dumps(CM) + "\n---\nnot: a kubernetes object\n---\n" + json.dumps(DEPLOY)
    assert parse_stages(text.encode()) == [[CM]]


def test_list_of_objects_is_one_stage() -> None:
    assert parse_stages(json.dumps([CM, DEPLOY]).encode()) == [[CM, DEPLOY]]


def test_list_of_lists_is_stages_in_order() -> None:
    assert parse_stages(json.dumps([[CM], [DEPLOY]]).encode()) == [[CM], [DEPLOY]]


def test_namespaces_and_crds_get_a_stage_before_the_rest_of_theirs() -> None:
    out = json.dumps([[CM, NS], [DEPLOY, CRD]]).encode()
    assert parse_stages(out) == [[NS], [CM], [CRD], [DEPLOY]]


def test_empty_stages_are_dropped() -> None:
    assert parse_stages(json.dumps([[], [CM], []]).encode()) == [[CM]]


def test_a_kind_list_is_not_expanded() -> None:
    as_list = {"apiVersion": "v1", "kind": "List", "items": [CM]}
    assert parse_stages(json.dumps(as_list).encode()) == [[as_list]]


@pytest.mark.parametrize("stdout", [b"", b"   \n", b"\n---\n"[:1]])
def test_empty_output_is_an_error(stdout: bytes) -> None:
    with pytest.raises(OutputError, match=EMPTY_OUTPUT):
        parse_stages(stdout)


@pytest.mark.parametrize(
    "stdout",
    [b"this is not yaml: [::", b"42", b'["a", "b"]', b'[[{"kind": "X"}], "y"]', b'{"no": "kind"}', b"\xff\xfe"],
)
def test_garbage_is_a_clear_error_that_quotes_the_output(stdout: bytes) -> None:
    with pytest.raises(OutputError) as error:
        parse_stages(stdout)
    message = str(error.value)
    assert message.startswith(
        "failed to parse output into valid flight output: "
        "input must be resource, list of resources, or list of list of resources"
    )
    assert "output starts with" in message
