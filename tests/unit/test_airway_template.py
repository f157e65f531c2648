"""The CRD an Airway declares: yoke's template mutations, storage version, conversion, ownership."""

from __future__ import annotations

import base64
import copy
from types import SimpleNamespace
from typing import Any

import pytest

from atc.k8s.crds import airway_schema, flight_schema
from atc.model.airway_template import (
    InvalidAirwayError,
    airway_crd,
    conditions_schema,
    conversion_path,
    conversion_webhook,
    mutate_template,
    schema_mismatch,
    storage_version,
)
from atc.model.types import Object
from atc.model.webhook_configs import webhook_client_config

STATUS_WITH_CONDITIONS = {"type": "object", "properties": {"conditions": conditions_schema()}}


def template(*versions: Object) -> Object:
    return {
        "group": "examples.com",
        "names": {"kind": "Backend", "plural": "backends", "singular": "backend"},
        "scope": "Namespaced",
        "versions": list(versions) or [version()],
    }


def version(name: str = "v1", storage: bool = True, **extra: Any) -> Object:
    return {"name": name, "served": True, "storage": storage, **extra}


def spec_schema(**properties: Any) -> Object:
    return {"schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}, **properties}}}}


def mutated_version(**extra: Any) -> Object:
    versions: list[Object] = mutate_template(template(version(**extra)))["versions"]
    return versions[0]


def test_conditions_schema_is_the_one_of_yokes_golden_schemas() -> None:
    assert airway_schema()["properties"]["status"]["properties"]["conditions"] == conditions_schema()
    assert flight_schema()["properties"]["status"]["properties"]["conditions"] == conditions_schema()


def test_mutation_returns_a_new_template() -> None:
    original = template(version(**spec_schema()))
    before = copy.deepcopy(original)
    mutated = mutate_template(original)
    assert original == before
    assert mutated is not original
    assert mutated["group"] == "examples.com"
    assert mutated["names"] == before["names"]


def test_status_subresource_is_always_set() -> None:
    assert mutated_version()["subresources"] == {"status": {}}
    assert mutated_version(subresources={})["subresources"] == {"status": {}}


def test_user_scale_subresource_is_kept() -> None:
    # yoke drops it (docs/compatibility.md, "Others"); keeping it is harmless and lets HPAs and `kubectl scale` work.
    scale = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    assert mutated_version(subresources={"scale": scale})["subresources"] == {"status": {}, "scale": scale}


def test_missing_schema_becomes_an_object_with_a_status() -> None:
    assert mutated_version()["schema"] == {
        "openAPIV3Schema": {"type": "object", "properties": {"status": STATUS_WITH_CONDITIONS}}
    }


def test_missing_openapi_schema_and_missing_properties() -> None:
    assert mutated_version(schema={})["schema"]["openAPIV3Schema"] == {
        "type": "object",
        "properties": {"status": STATUS_WITH_CONDITIONS},
    }
    root = mutated_version(schema={"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    assert root["schema"]["openAPIV3Schema"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"status": STATUS_WITH_CONDITIONS},
    }


def test_absent_status_gets_the_conditions_schema_and_spec_is_untouched() -> None:
    root = mutated_version(**spec_schema())["schema"]["openAPIV3Schema"]
    assert root["properties"] == {"spec": {"type": "object"}, "status": STATUS_WITH_CONDITIONS}


def test_user_status_gets_conditions_added() -> None:
    status = {"type": "object", "properties": {"phase": {"type": "string"}}}
    root = mutated_version(**spec_schema(status=status))["schema"]["openAPIV3Schema"]
    assert root["properties"]["status"] == {
        "type": "object",
        "properties": {"phase": {"type": "string"}, "conditions": conditions_schema()},
    }


def test_user_status_without_properties_gets_conditions() -> None:
    root = mutated_version(**spec_schema(status={"type": "object"}))["schema"]["openAPIV3Schema"]
    assert root["properties"]["status"] == STATUS_WITH_CONDITIONS


def test_user_conditions_schema_equal_to_the_expected_one_is_kept() -> None:
    status = {"type": "object", "properties": {"conditions": conditions_schema()}}
    root = mutated_version(**spec_schema(status=status))["schema"]["openAPIV3Schema"]
    assert root["properties"]["status"] == status


def test_status_is_removed_from_required() -> None:
    schema = spec_schema(status={"type": "object"})
    schema["schema"]["openAPIV3Schema"]["required"] = ["spec", "status"]
    root = mutated_version(**schema)["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"]


@pytest.mark.parametrize(("given", "shown"), [({"type": "string"}, '"string"'), ({}, '""'), ("x", '""')])
def test_status_must_be_an_object(given: Any, shown: str) -> None:
    with pytest.raises(InvalidAirwayError) as error:
        mutate_template(template(version(**spec_schema(status=given))))
    assert str(error.value) == f"invalid airway: status must be an object but got type: {shown}"


def conditions_error(conditions: Any) -> str:
    status = {"type": "object", "properties": {"conditions": conditions}}
    with pytest.raises(InvalidAirwayError) as error:
        mutate_template(template(version(**spec_schema(status=status))))
    prefix = "invalid airway: invalid status: conditions does not have expected schema: "
    message = str(error.value)
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def test_conditions_must_be_an_array() -> None:
    assert conditions_error({"type": "object"}) == 'expected type "array" but got "object"'


def test_condition_items_must_be_objects() -> None:
    assert conditions_error({"type": "array", "items": {"type": "string"}}) == 'expected type "object" but got "string"'
    assert conditions_error({"type": "array"}) == 'expected type "object" but got ""'


def test_condition_items_must_require_what_conditions_require() -> None:
    items = copy.deepcopy(conditions_schema()["items"])
    items["required"] = ["type", "status", "lastTransitionTime", "reason"]
    assert conditions_error({"type": "array", "items": items}) == '"message" is required but was not'


def test_condition_items_need_as_many_properties() -> None:
    items = copy.deepcopy(conditions_schema()["items"])
    del items["properties"]["observedGeneration"]
    assert conditions_error({"type": "array", "items": items}) == "has 5 properties but expected at least 6"


def test_condition_property_types_are_compared_with_their_key_path() -> None:
    items = copy.deepcopy(conditions_schema()["items"])
    items["properties"]["observedGeneration"] = {"type": "string"}
    assert conditions_error({"type": "array", "items": items}) == (
        'observedGeneration: expected type "integer" but got "string"'
    )


def test_extra_condition_properties_are_allowed() -> None:
    # yoke rejects them with `<key>: expected type "" but got "<type>"`.
    items = copy.deepcopy(conditions_schema()["items"])
    items["properties"]["severity"] = {"type": "string"}
    conditions = {**conditions_schema(), "items": items}
    root = mutated_version(**spec_schema(status={"type": "object", "properties": {"conditions": conditions}}))
    assert root["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"] == conditions


def test_an_extra_property_cannot_stand_in_for_an_expected_one() -> None:
    items = copy.deepcopy(conditions_schema()["items"])
    del items["properties"]["observedGeneration"]
    items["properties"]["severity"] = {"type": "string"}
    assert conditions_error({"type": "array", "items": items}) == "observedGeneration: missing property"


def test_schema_mismatch_is_empty_when_satisfied() -> None:
    assert schema_mismatch(conditions_schema(), conditions_schema()) == ""
    assert schema_mismatch({"type": "string", "format": "date-time"}, {"type": "string"}) == ""


def test_every_version_is_mutated() -> None:
    mutated = mutate_template(template(version("v1", storage=False), version("v2", **spec_schema())))
    assert [v["subresources"] for v in mutated["versions"]] == [{"status": {}}, {"status": {}}]
    assert all("status" in v["schema"]["openAPIV3Schema"]["properties"] for v in mutated["versions"])


def test_storage_version_is_the_last_flagged_one() -> None:
    assert storage_version(template(version("v1", storage=False), version("v2"))) == "v2"
    assert storage_version(template(version("v1"), version("v2"))) == "v2"
    assert storage_version(template(version("v1"), version("v2", storage=False))) == "v1"
    assert storage_version({"versions": []}) == ""


def test_conversion_webhook_points_at_crdconvert() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    target = SimpleNamespace(webhook_url="", svc_name="atc", svc_namespace="atc", svc_port=443, tls_ca_cert="")
    client = webhook_client_config(target, conversion_path("backends.examples.com"), ca_bundle=pem)
    assert conversion_webhook(client) == {
        "strategy": "Webhook",
        "webhook": {
            "clientConfig": {
                "service": {
                    "namespace": "atc",
                    "name": "atc",
                    "path": "/crdconvert/backends.examples.com",
                    "port": 443,
                },
                "caBundle": base64.b64encode(pem).decode(),
            },
            "conversionReviewVersions": ["v1"],
        },
    }
    local = SimpleNamespace(
        webhook_url="https://127.0.0.1:8443", svc_name="", svc_namespace="", svc_port=443, tls_ca_cert=""
    )
    url_client = webhook_client_config(local, conversion_path("a.b"), ca_bundle=pem)
    assert url_client["url"] == "https://127.0.0.1:8443/crdconvert/a.b"


def test_airway_crd_is_named_after_and_owned_by_the_airway() -> None:
    airway = {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": "backends.examples.com", "uid": "1234"},
        "spec": {"template": template()},
    }
    spec = mutate_template(template())
    assert airway_crd(airway, spec) == {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "backends.examples.com",
            "ownerReferences": [
                {
                    "apiVersion": "yoke.cd/v1alpha1",
                    "kind": "Airway",
                    "name": "backends.examples.com",
                    "uid": "1234",
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
