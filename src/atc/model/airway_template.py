"""The CustomResourceDefinition an Airway declares, as the ATC rewrites and applies it.

- ``mutate_template`` prepares ``spec.template`` the way yoke does: every
  version gets the status subresource and a ``status.conditions`` schema the
  ATC can write its Ready condition into, and a user status schema must be
  compatible with it (``InvalidAirwayError`` with yoke's texts);
- ``storage_version`` picks the version the instance controller reads and writes;
- ``conversion_webhook`` is the ``conversion`` stanza of an Airway with a converter;
- ``airway_crd`` wraps the template into the CRD object owned by the Airway.

Used by the Airway reconciler (before its server-side apply with field manager
``yoke``; docs/controller.md, "The other reconcilers") and by the Airway admission
webhook (for its dry-run).

Two deliberate differences from yoke (docs/compatibility.md, "Others"):
- a user ``scale`` subresource is kept (yoke replaces ``subresources`` by
  ``{status: {}}``): it only adds ``/scale`` for HPAs and
  ``kubectl scale`` and never touches status; ``status`` is always set;
- extra properties in a user's conditions schema are allowed (yoke compares them
  with an empty schema and rejects them); every property yoke
  expects must still be present and compatible.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from atc.model.constants import API_VERSION
from atc.model.types import Object


class InvalidAirwayError(ValueError):
    """The Airway's template cannot be used (``invalid airway: ...``)."""


def conditions_schema() -> Object:
    """The schema of ``status.conditions`` (yoke's ``flight.Conditions``: []metav1.Condition keyed by type)."""
    text: Object = {"type": "string"}
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "lastTransitionTime": dict(text),
                "message": dict(text),
                "observedGeneration": {"type": "integer"},
                "reason": dict(text),
                "status": dict(text),
                "type": dict(text),
            },
        },
        "x-kubernetes-list-map-keys": ["type"],
        "x-kubernetes-list-type": "map",
    }


def _quote(text: str) -> str:
    """Go's ``%q`` for the plain strings of schema types and keys."""
    return json.dumps(text, ensure_ascii=False)


def _schema_dict(value: Any) -> Object:
    return value if isinstance(value, dict) else {}


def _object_mismatch(actual: Object, expected: Object) -> str:
    required = actual.get("required") or []
    for key in expected.get("required") or []:
        if key not in required:
            return f"{_quote(key)} is required but was not"
    actual_props = _schema_dict(actual.get("properties"))
    expected_props = _schema_dict(expected.get("properties"))
    if len(actual_props) < len(expected_props):
        return f"has {len(actual_props)} properties but expected at least {len(expected_props)}"
    for key in sorted(expected_props):
        if key not in actual_props:
            return f"{key}: missing property"
        detail = schema_mismatch(_schema_dict(actual_props[key]), _schema_dict(expected_props[key]))
        if detail:
            return f"{key}: {detail}"
    return ""


def schema_mismatch(actual: Object, expected: Object) -> str:
    """Why ``actual`` does not satisfy ``expected`` (yoke's ``openapi.Satisfies``), or "" when it does.

    Types must be equal; objects must require what ``expected`` requires, have
    at least as many properties and match each expected property; arrays
    compare their item schemas. Properties ``expected`` does not know are
    allowed (yoke rejects them; docs/compatibility.md, "Others").
    """
    actual_type, expected_type = str(actual.get("type", "")), str(expected.get("type", ""))
    if actual_type != expected_type:
        return f"expected type {_quote(expected_type)} but got {_quote(actual_type)}"
    if actual_type == "object":
        return _object_mismatch(actual, expected)
    if actual_type == "array":
        return schema_mismatch(_schema_dict(actual.get("items")), _schema_dict(expected.get("items")))
    return ""


def _status_schema(status: Object) -> Object:
    """A user's ``properties.status``, checked and completed with ``conditions``."""
    status_type = status.get("type", "")
    if status_type != "object":
        raise InvalidAirwayError(f"invalid airway: status must be an object but got type: {_quote(str(status_type))}")
    properties = status.get("properties")
    if not isinstance(properties, dict):
        properties = status["properties"] = {}
    conditions = properties.setdefault("conditions", conditions_schema())
    detail = schema_mismatch(_schema_dict(conditions), conditions_schema())
    if detail:
        raise InvalidAirwayError(f"invalid airway: invalid status: conditions does not have expected schema: {detail}")
    return status


def _root_schema(version: Object) -> Object:
    """The version's ``openAPIV3Schema`` with ``properties``, created when missing."""
    schema = version.get("schema")
    if not isinstance(schema, dict):
        schema = version["schema"] = {}
    root = schema.get("openAPIV3Schema")
    if not isinstance(root, dict):
        root = schema["openAPIV3Schema"] = {"type": "object", "properties": {}}
    if not isinstance(root.get("properties"), dict):
        root["properties"] = {}
    return root


def _drop_required_status(root: Object) -> None:
    required = root.get("required")
    if isinstance(required, list) and "status" in required:
        required.remove("status")


def _mutate_version(version: Object) -> None:
    subresources = _schema_dict(version.get("subresources"))
    version["subresources"] = {"status": {}}
    if "scale" in subresources:
        version["subresources"]["scale"] = subresources["scale"]
    root = _root_schema(version)
    properties = root["properties"]
    status = properties.get("status")
    if status is None:
        properties["status"] = {"type": "object", "properties": {"conditions": conditions_schema()}}
    else:
        properties["status"] = _status_schema(_schema_dict(status))
    _drop_required_status(root)


def mutate_template(template: Object) -> Object:
    """A copy of an Airway's ``spec.template`` ready to apply; ``InvalidAirwayError`` when unusable."""
    mutated = copy.deepcopy(template)
    for version in mutated.get("versions") or []:
        if isinstance(version, dict):
            _mutate_version(version)
    return mutated


def storage_version(template: Object) -> str:
    """The name of the version with ``storage: true`` (the last one if several; "" if none)."""
    name = ""
    for version in template.get("versions") or []:
        if isinstance(version, dict) and version.get("storage") is True:
            name = str(version.get("name", ""))
    return name


def conversion_path(airway_name: str) -> str:
    """Where an Airway's CRD conversions are served: ``/crdconvert/<airway name>``."""
    return f"/crdconvert/{airway_name}"


def conversion_webhook(client_config: Object) -> Object:
    """The CRD ``conversion`` stanza sending conversions to the webhook at ``client_config``
    (built with ``atc.model.webhook_configs.webhook_client_config`` for ``conversion_path(airway)``)."""
    return {"strategy": "Webhook", "webhook": {"clientConfig": client_config, "conversionReviewVersions": ["v1"]}}


def airway_crd(airway: Object, template: Object) -> Object:
    """The CustomResourceDefinition named after ``airway``, owned by it, with ``template`` as its spec."""
    metadata = _schema_dict(airway.get("metadata"))
    name = str(metadata.get("name", ""))
    owner = {
        "apiVersion": API_VERSION,
        "kind": "Airway",
        "name": name,
        "uid": str(metadata.get("uid", "")),
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": template,
    }
