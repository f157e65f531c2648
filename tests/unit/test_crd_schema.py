"""``atc.model.crd_schema``: a custom resource checked offline against its CRD's schema."""

from __future__ import annotations

from typing import Any

import pytest

from atc.model import crd_schema
from atc.model.crd_schema import MAX_DEPTH, MAX_PROBLEMS, can_check, check, schema_problems
from atc.model.types import Object


def crd(spec_schema: Object, *, status: bool = False, served: bool = True, **root: Any) -> Object:
    """A CRD of Gadget (stages.test) whose v1 schema has ``spec_schema`` for ``spec``."""
    version: Object = {
        "name": "v1",
        "served": served,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}, **root}},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.stages.test"},
        "spec": {"group": "stages.test", "names": {"kind": "Gadget"}, "scope": "Namespaced", "versions": [version]},
    }


def gadget(spec: Any, **extra: Any) -> Object:
    return {"apiVersion": "stages.test/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": spec, **extra}


def problems(field: Object, value: Any) -> list[str]:
    """The problems of ``spec.f`` = ``value`` under ``field``."""
    return schema_problems(gadget({"f": value}), crd({"type": "object", "properties": {"f": field}}))


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("object", [{}, {"a": 1}], [[], "x", 1, True]),
        ("array", [[], [1, "a"]], [{}, "x", 1]),
        ("string", ["", "x"], [1, True, [], {}]),
        ("integer", [0, -3, 2**70], [1.5, True, "1", []]),
        ("number", [0, 1.5, -2], [True, "1", {}]),
        ("boolean", [True, False], [0, "true", []]),
    ],
)
def test_types(kind: str, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        assert problems({"type": kind}, value) == [], value
    for value in bad:
        assert problems({"type": kind}, value) == [f"spec.f: must be of type {kind}"], value


def test_null_needs_nullable_except_where_the_api_server_prunes_it() -> None:
    assert problems({"type": "string", "nullable": True}, None) == []
    assert problems({"type": "string"}, None) == []  # a null field is pruned: absent
    required = crd({"type": "object", "required": ["f"], "properties": {"f": {"type": "string"}}})
    assert schema_problems(gadget({"f": None}), required) == ["spec.f: Required value"]
    items = crd({"type": "array", "items": {"type": "string"}})
    assert schema_problems(gadget(["a", None]), items) == ["spec[1]: must be of type string"]
    nullable_items = crd({"type": "array", "items": {"type": "string", "nullable": True}})
    assert schema_problems(gadget(["a", None]), nullable_items) == []


def test_required_and_nested_paths() -> None:
    schema = crd(
        {
            "type": "object",
            "required": ["name", "inner"],
            "properties": {
                "name": {"type": "string"},
                "inner": {"type": "object", "required": ["deep"], "properties": {"deep": {"type": "integer"}}},
            },
        },
        required=["spec"],
    )
    assert schema_problems(gadget({"inner": {}}), schema) == [
        "spec.name: Required value",
        "spec.inner.deep: Required value",
    ]
    no_spec = gadget({})
    del no_spec["spec"]
    assert schema_problems(no_spec, schema) == ["spec: Required value"]


def test_arrays_items_and_counts() -> None:
    items = {"type": "object", "properties": {"name": {"type": "string"}}}
    schema = crd({"type": "object", "properties": {"items": {"type": "array", "items": items, "maxItems": 3}}})
    spec = {"items": [{"name": "a"}, {"name": "b"}, {"name": 3}, {"name": "d"}]}
    assert schema_problems(gadget(spec), schema) == [
        "spec.items[2].name: must be of type string",
        "spec.items: must have at most 3 items",
    ]
    assert problems({"type": "array", "minItems": 2}, [1]) == ["spec.f: must have at least 2 items"]


def test_additional_properties() -> None:
    as_schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert problems(as_schema, {"a": 1, "b": 2}) == []
    assert problems(as_schema, {"a": 1, "b": "x"}) == ["spec.f[…]: must be of type integer"]  # keys are data
    assert problems(as_schema, {"a": 1, "evil key with spaces": "x"}) == ["spec.f[…]: must be of type integer"]
    assert problems({"type": "object", "additionalProperties": True}, {"a": "x"}) == []
    counted = {"type": "object", "minProperties": 1, "maxProperties": 2, "additionalProperties": True}
    assert problems(counted, {}) == ["spec.f: must have at least 1 properties"]
    assert problems(counted, {"a": 1, "b": 2, "c": 3}) == ["spec.f: must have at most 2 properties"]


def test_unknown_fields_are_not_problems_but_are_reported_apart() -> None:
    schema = crd({"type": "object", "properties": {"known": {"type": "string"}}})
    result = check(gadget({"known": "k", "extra": 1, "other": {"x": 1}}), schema)
    assert result.problems == []
    assert result.unknown == ["spec.extra", "spec.other"]
    assert check(gadget({}, top="x"), schema).unknown == ["top"]


def test_preserve_unknown_fields() -> None:
    preserve = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"n": {"type": "integer"}},
    }
    result = check(gadget({"anything": {"goes": [1]}, "n": 1}), crd(preserve))
    assert (result.problems, result.unknown) == ([], [])
    assert schema_problems(gadget({"n": "x"}), crd(preserve)) == ["spec.n: must be of type integer"]
    untyped = {"x-kubernetes-preserve-unknown-fields": True}
    assert problems(untyped, [1, {"a": None}]) == []


def test_int_or_string() -> None:
    field = {"x-kubernetes-int-or-string": True, "minimum": 1, "maxLength": 4}
    assert problems(field, 5) == []
    assert problems(field, "50%") == []
    assert problems(field, 0) == ["spec.f: must be greater than or equal to 1"]
    assert problems(field, "half a") == ["spec.f: must be at most 4 characters long"]
    bad_values: list[Any] = [1.5, True, [], {}]
    for bad in bad_values:
        assert problems(field, bad) == ["spec.f: must be an integer or a string"]


def test_embedded_resource_is_an_object_that_allows_apiversion_kind_and_metadata() -> None:
    field = {"x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}}
    result = check(
        gadget({"f": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}}),
        crd({"type": "object", "properties": {"f": field}}),
    )
    assert (result.problems, result.unknown) == ([], [])
    assert problems(field, "pod") == ["spec.f: must be of type object"]


def test_enum() -> None:
    field = {"enum": ["small", "large", 1]}
    assert problems(field, "small") == []
    assert problems(field, 1) == []
    assert problems(field, True) == ['spec.f: Unsupported value: supported values: "small", "large", 1']
    assert problems(field, "medium") == ['spec.f: Unsupported value: supported values: "small", "large", 1']
    assert problems({"enum": [True]}, 1) != []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ({"minimum": 0}, -1, "must be greater than or equal to 0"),
        ({"minimum": 0, "exclusiveMinimum": True}, 0, "must be greater than 0"),
        ({"exclusiveMinimum": 0}, 0, "must be greater than 0"),
        ({"maximum": 10}, 11, "must be less than or equal to 10"),
        ({"maximum": 10, "exclusiveMaximum": True}, 10, "must be less than 10"),
        ({"exclusiveMaximum": 2.5}, 3, "must be less than 2.5"),
        ({"minimum": 0.5}, 0.25, "must be greater than or equal to 0.5"),
        ({"minLength": 2}, "a", "must be at least 2 characters long"),
        ({"maxLength": 2}, "abc", "must be at most 2 characters long"),
    ],
)
def test_limits(field: Object, value: Any, message: str) -> None:
    assert problems(field, value) == [f"spec.f: {message}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ({"minimum": 0}, 0),
        ({"minimum": 0, "exclusiveMinimum": False}, 0),
        ({"maximum": 10}, 10),
        ({"minLength": 2, "maxLength": 2}, "ab"),
        ({"pattern": "^[a-z]+$"}, "ABC"),  # patterns are left to the API server (module docstring)
        ({"pattern": "(a+)+$"}, "a" * 64 + "!"),  # which a backtracking regex engine here could not bear
        ({"minimum": "zero"}, -5),  # a limit of the wrong type is ignored
        ({"minLength": 3}, 5),  # a string limit does not apply to a number
    ],
)
def test_values_within_limits(field: Object, value: Any) -> None:
    assert problems(field, value) == []


def test_combinators() -> None:
    all_of = {"allOf": [{"minimum": 0}, {"maximum": 5}]}
    assert problems(all_of, 3) == []
    assert problems(all_of, 9) == ["spec.f: must be less than or equal to 5"]
    any_of = {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}
    assert problems(any_of, 1) == []
    assert problems(any_of, "xy") == []
    assert problems(any_of, "xyz") == ["spec.f: must match at least one of the schemas in anyOf"]
    one_of = {"oneOf": [{"minimum": 0}, {"maximum": 10}]}
    assert problems(one_of, -1) == []
    assert problems(one_of, 5) == ["spec.f: must match exactly one of the schemas in oneOf (matches 2)"]
    assert problems({"not": {"type": "string"}}, 1) == []
    assert problems({"not": {"type": "string"}}, "s") == ["spec.f: must not match the schema in not"]


def test_unserved_or_unknown_version() -> None:
    unserved = crd({"type": "object"}, served=False)
    message = (
        "apiVersion: version is not served by the CustomResourceDefinition gadgets.stages.test (it serves no version)"
    )
    assert schema_problems(gadget({}), unserved) == [message]
    assert can_check(gadget({}), unserved)
    other = gadget({}, apiVersion="stages.test/v2")
    assert schema_problems(other, crd({"type": "object"})) == [
        "apiVersion: version is not served by the CustomResourceDefinition gadgets.stages.test (served: v1)"
    ]


def test_a_version_without_a_schema_cannot_be_checked() -> None:
    definition = crd({"type": "object"})
    del definition["spec"]["versions"][0]["schema"]
    assert not can_check(gadget({}), definition)
    assert schema_problems(gadget({"size": "x"}), definition) == []
    legacy = crd({"type": "object"})
    del legacy["spec"]["versions"][0]["schema"]
    legacy["spec"]["validation"] = {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "string"}}}}
    assert can_check(gadget({}), legacy)
    assert schema_problems(gadget({}), legacy) == ["spec: must be of type string"]


def test_status_is_ignored_only_with_the_status_subresource() -> None:
    status_schema = {"status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}
    obj = gadget({}, status={"ready": "yes"})
    assert schema_problems(obj, crd({"type": "object"}, status=True, properties={"spec": {}, **status_schema})) == []
    without = crd({"type": "object"}, properties={"spec": {"type": "object"}, **status_schema})
    assert schema_problems(obj, without) == ["status.ready: must be of type boolean"]


def test_apiversion_kind_and_metadata_are_not_checked() -> None:
    strict = crd({"type": "object"}, required=["apiVersion", "kind", "metadata", "spec"])
    strict["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"] = {"type": "string"}
    result = check(gadget({}), strict)
    assert (result.problems, result.unknown) == ([], [])


def test_values_are_never_echoed() -> None:
    secret = "s3cr3t-value-do-not-echo"
    fields = {
        "a": {"type": "integer"},
        "b": {"maxLength": 3},
        "c": {"minLength": 100},
        "d": {"enum": ["x"]},
        "e": {"x-kubernetes-int-or-string": True},
        "f": {"type": "object", "additionalProperties": {"type": "integer"}},
        "g": {"anyOf": [{"type": "integer"}]},
    }
    spec = {"a": secret, "b": secret, "c": secret, "d": secret, "e": [secret], "f": {secret: secret}, "g": secret}
    found = schema_problems(gadget(spec), crd({"type": "object", "properties": fields}))
    assert len(found) == 7
    assert all(secret not in problem for problem in found)


def test_the_number_of_problems_is_bounded() -> None:
    schema = crd({"type": "array", "items": {"type": "integer"}})
    found = schema_problems(gadget(["x"] * 1000), schema)
    assert found == [f"spec[{i}]: must be of type integer" for i in range(MAX_PROBLEMS)]


def test_the_depth_is_bounded() -> None:
    node: Object = {"type": "object"}
    schema = node
    for _ in range(MAX_DEPTH + 10):
        child: Object = {"type": "object"}
        node["properties"] = {"n": child}
        node = child
    value: Object = {}
    spec = value
    for _ in range(MAX_DEPTH + 10):
        spec["n"] = {}
        spec = spec["n"]
    [found] = schema_problems(gadget(value), crd(schema))
    assert found.endswith(f": nested more than {MAX_DEPTH} levels deep")
    assert found.startswith("spec.n.n.")


def test_the_work_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crd_schema, "MAX_STEPS", 50)
    schema = crd({"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "integer"}]}})
    found = schema_problems(gadget(list(range(100))), schema)
    assert found == ["<root>: too complex to check offline (more than 50 checks)"]


def test_hostile_input_does_not_crash() -> None:
    for definition in ({}, {"spec": None}, {"spec": {"versions": "v1"}}, {"spec": {"versions": [None, 1]}}):
        assert schema_problems(gadget({}), definition)  # unserved
    weird = crd({"type": "object", "properties": "nope", "required": "spec", "items": 3, "allOf": "x"})
    assert schema_problems(gadget({"a": 1}), weird) == []
