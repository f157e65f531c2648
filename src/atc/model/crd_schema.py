"""Check a custom resource against the schema of the CustomResourceDefinition that defines it, offline.

A dry-run takeoff cannot ask the API server about an object whose kind a CustomResourceDefinition
of an earlier stage of the same release defines: the dry run created nothing, so the kind is not
served yet. ``atc.release.takeoff`` (its ``_dry_run``) checks such an object here instead, against
the ``openAPIV3Schema`` of the served version the object names (docs/webhook.md, "Stage-aware dry
runs").

What is checked is the structural-schema subset Kubernetes uses: ``type`` (with ``nullable``),
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, the numeric, length,
item and property-count limits, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource`` and
``allOf``/``anyOf``/``oneOf``/``not``. Not checked: ``format``, defaults and
``x-kubernetes-validations`` (CEL rules), which only the API server can apply, and ``pattern``: the
pattern comes from the same untrusted flight as the object, and Python's backtracking ``re`` (unlike
the API server's linear-time Go engine) could be made to run for hours on one string. Fields the schema
does not know are not problems (the API server prunes them); they are reported apart.

The object is untrusted input: problems name paths, types and schema limits, never the object's
values, and their number, the nesting depth and the work done are bounded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from atc.model.types import Object

MAX_PROBLEMS = 10
MAX_DEPTH = 64
MAX_STEPS = 200_000  # schema-and-value visits, allOf/anyOf/oneOf/not branches included (about 0.2 s)
_LIMIT_TEXT = 200  # characters of an enum's values quoted in a problem

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}
_IMPLICIT = frozenset({"apiVersion", "kind", "metadata"})  # checked by the API server, not the schema
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\-/]{1,63}")


@dataclass
class SchemaCheck:
    """What ``check`` found: problems (each ``<path>: <message>``) and paths of fields the schema does not know."""

    problems: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def schema_problems(obj: Object, crd: Object) -> list[str]:
    """The problems of ``obj`` against the CRD that defines its kind (at most ``MAX_PROBLEMS``)."""
    return check(obj, crd).problems


def can_check(obj: Object, crd: Object) -> bool:
    """Whether ``check`` can judge ``obj``: its version is not served (a problem), or it has a schema."""
    version = _version(obj, crd)
    return version is None or _schema_of(version, crd) is not None


def check(obj: Object, crd: Object) -> SchemaCheck:
    """Check ``obj`` against the schema of its version in ``crd``; see the module docstring."""
    result = SchemaCheck()
    version = _version(obj, crd)
    if version is None:
        result.problems.append(f"apiVersion: {_unserved(crd)}")
        return result
    schema = _schema_of(version, crd)
    if schema is None:
        return result
    ignored = set(_IMPLICIT)
    if _has_status(version, crd):
        ignored.add("status")
    body = {key: value for key, value in obj.items() if key not in ignored}
    validator = _Validator(result, _Budget())
    try:
        validator.validate(body, schema, "", 0, root_ignored=frozenset(ignored))
    except _BudgetExhaustedError:
        del result.problems[MAX_PROBLEMS - 1 :]
        result.problems.append(f"<root>: too complex to check offline (more than {MAX_STEPS} checks)")
    return result


# ----------------------------------------------------------------------------------------------- the CRD
def _versions(crd: Object) -> list[Object]:
    spec = crd.get("spec")
    versions = spec.get("versions") if isinstance(spec, dict) else None
    return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []


def _version(obj: Object, crd: Object) -> Object | None:
    """The CRD's served version entry for the object's apiVersion, else None."""
    api_version = str(obj.get("apiVersion", ""))
    name = api_version.rsplit("/", 1)[-1]
    for version in _versions(crd):
        if version.get("name") == name and version.get("served") is True:
            return version
    return None


def _unserved(crd: Object) -> str:
    served = [str(v.get("name")) for v in _versions(crd) if v.get("served") is True]
    crd_name = str((crd.get("metadata") or {}).get("name", ""))
    listed = f" (served: {', '.join(served)})" if served else " (it serves no version)"
    return f"version is not served by the CustomResourceDefinition {crd_name}{listed}"[: 2 * _LIMIT_TEXT]


def _schema_of(version: Object, crd: Object) -> Object | None:
    """The version's ``openAPIV3Schema`` (or the v1beta1 CRD-wide ``validation``), else None."""
    for holder in (version.get("schema"), (crd.get("spec") or {}).get("validation")):
        if isinstance(holder, dict) and isinstance(holder.get("openAPIV3Schema"), dict):
            schema: Object = holder["openAPIV3Schema"]
            return schema
    return None


def _has_status(version: Object, crd: Object) -> bool:
    for subresources in (version.get("subresources"), (crd.get("spec") or {}).get("subresources")):
        if isinstance(subresources, dict) and "status" in subresources:
            return True
    return False


# ----------------------------------------------------------------------------------------------- validation
class _BudgetExhaustedError(Exception):
    """The step budget ran out."""


@dataclass
class _Budget:
    steps: int = 0

    def spend(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _BudgetExhaustedError


@dataclass
class _Validator:
    result: SchemaCheck
    budget: _Budget
    limit: int = MAX_PROBLEMS
    record_unknown: bool = True

    @property
    def full(self) -> bool:
        return len(self.result.problems) >= self.limit

    def problem(self, path: str, message: str) -> None:
        if not self.full:
            self.result.problems.append(f"{path or '<root>'}: {message}")

    def validate(
        self, value: Any, schema: Any, path: str, depth: int, *, root_ignored: frozenset[str] = frozenset()
    ) -> None:
        if not isinstance(schema, dict) or self.full:
            return
        if depth > MAX_DEPTH:
            self.problem(path, f"nested more than {MAX_DEPTH} levels deep")
            return
        self.budget.spend()
        if value is None and (schema.get("nullable") is True or not self._typed(schema)):
            return
        if not self._type_ok(value, schema, path):
            return
        if isinstance(value, dict):
            self._object(value, schema, path, depth, root_ignored)
        elif isinstance(value, list):
            self._array(value, schema, path, depth)
        elif isinstance(value, str):
            self._string(value, schema, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(value, schema, path)
        self._enum(value, schema, path)
        self._combinators(value, schema, path, depth)

    @staticmethod
    def _typed(schema: Object) -> bool:
        return schema.get("type") in _TYPES or schema.get("x-kubernetes-int-or-string") is True

    def _type_ok(self, value: Any, schema: Object, path: str) -> bool:
        if schema.get("x-kubernetes-int-or-string") is True:
            if _TYPES["integer"](value) or isinstance(value, str):
                return True
            self.problem(path, "must be an integer or a string")
            return False
        kind = schema.get("type")
        if kind is None and schema.get("x-kubernetes-embedded-resource") is True:
            kind = "object"
        if kind in _TYPES and not _TYPES[kind](value):
            self.problem(path, f"must be of type {kind}")
            return False
        return True

    # ------------------------------------------------------------------------------- objects
    def _object(self, value: Object, schema: Object, path: str, depth: int, root_ignored: frozenset[str]) -> None:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        additional = schema.get("additionalProperties")
        # the API server prunes a null field whose schema is not nullable: it counts as absent
        value = {key: item for key, item in value.items() if item is not None or _nullable(properties, additional, key)}
        for name in required if isinstance(required, list) else []:
            if isinstance(name, str) and name not in value and name not in root_ignored:
                self.problem(_join(path, name), "Required value")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key, item in value.items():
            if self.full:
                return
            if key in properties:
                self.validate(item, properties[key], _join(path, key), depth + 1)
            elif isinstance(additional, dict):
                self.validate(item, additional, _key(path), depth + 1)
            elif additional is True or preserve or (embedded and key in _IMPLICIT):
                continue
            elif self.record_unknown and len(self.result.unknown) < MAX_PROBLEMS:
                self.result.unknown.append(_join(path, key) if _SAFE_KEY.fullmatch(key) else _key(path))
        self._count(len(value), schema, path, "minProperties", "maxProperties", "properties")

    # ------------------------------------------------------------------------------- arrays
    def _array(self, value: list[Any], schema: Object, path: str, depth: int) -> None:
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                if self.full:
                    return
                self.validate(item, items, f"{path}[{index}]", depth + 1)
        self._count(len(value), schema, path, "minItems", "maxItems", "items")

    def _count(self, count: int, schema: Object, path: str, least: str, most: str, what: str) -> None:
        low, high = _int_limit(schema.get(least)), _int_limit(schema.get(most))
        if low is not None and count < low:
            self.problem(path, f"must have at least {low} {what}")
        if high is not None and count > high:
            self.problem(path, f"must have at most {high} {what}")

    # ------------------------------------------------------------------------------- scalars
    def _string(self, value: str, schema: Object, path: str) -> None:
        low, high = _int_limit(schema.get("minLength")), _int_limit(schema.get("maxLength"))
        if low is not None and len(value) < low:
            self.problem(path, f"must be at least {low} characters long")
        if high is not None and len(value) > high:
            self.problem(path, f"must be at most {high} characters long")

    def _number(self, value: float, schema: Object, path: str) -> None:
        if math.isnan(value):
            return
        minimum, maximum = _number_limit(schema.get("minimum")), _number_limit(schema.get("maximum"))
        exclusive_min, exclusive_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if minimum is not None:
            if exclusive_min is True and value <= minimum:
                self.problem(path, f"must be greater than {_number_text(minimum)}")
            elif exclusive_min is not True and value < minimum:
                self.problem(path, f"must be greater than or equal to {_number_text(minimum)}")
        if maximum is not None:
            if exclusive_max is True and value >= maximum:
                self.problem(path, f"must be less than {_number_text(maximum)}")
            elif exclusive_max is not True and value > maximum:
                self.problem(path, f"must be less than or equal to {_number_text(maximum)}")
        # JSON Schema's numeric form (exclusiveMinimum: 0) as well as OpenAPI 3.0's boolean one
        if (bound := _number_limit(exclusive_min)) is not None and value <= bound:
            self.problem(path, f"must be greater than {_number_text(bound)}")
        if (bound := _number_limit(exclusive_max)) is not None and value >= bound:
            self.problem(path, f"must be less than {_number_text(bound)}")

    def _enum(self, value: Any, schema: Object, path: str) -> None:
        allowed = schema.get("enum")
        if not isinstance(allowed, list) or not allowed:
            return
        if any(_same(value, option) for option in allowed):
            return
        self.problem(path, f"Unsupported value: supported values: {_quoted_list(allowed)}")

    # ------------------------------------------------------------------------------- combinators
    def _combinators(self, value: Any, schema: Object, path: str, depth: int) -> None:
        all_of = schema.get("allOf")
        for branch in all_of if isinstance(all_of, list) else []:
            self._branch(value, branch, path, depth, into=self)
        any_of = schema.get("anyOf")
        if isinstance(any_of, list) and any_of and not any(self._passes(value, b, path, depth) for b in any_of):
            self.problem(path, "must match at least one of the schemas in anyOf")
        one_of = schema.get("oneOf")
        if isinstance(one_of, list) and one_of:
            matched = sum(self._passes(value, branch, path, depth) for branch in one_of)
            if matched != 1:
                self.problem(path, f"must match exactly one of the schemas in oneOf (matches {matched})")
        if isinstance(schema.get("not"), dict) and self._passes(value, schema["not"], path, depth):
            self.problem(path, "must not match the schema in not")

    def _branch(self, value: Any, branch: Any, path: str, depth: int, *, into: _Validator) -> None:
        # a branch's properties do not make a field known: structural schemas repeat them outside
        sub = _Validator(into.result, self.budget, into.limit, record_unknown=False)
        sub.validate(value, branch, path, depth + 1)

    def _passes(self, value: Any, branch: Any, path: str, depth: int) -> bool:
        scratch = _Validator(SchemaCheck(), self.budget, 1, record_unknown=False)
        scratch.validate(value, branch, path, depth + 1)
        return not scratch.result.problems


# ----------------------------------------------------------------------------------------------- helpers
def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str) -> str:
    """A map key in a path: Kubernetes writes ``labels[app]``, but a map's keys are data, so they are hidden."""
    return f"{path}[…]"


def _nullable(properties: Object, additional: Any, key: str) -> bool:
    """Whether a null ``key`` stays: its schema (if the object's schema has one) says ``nullable``."""
    schema = properties.get(key, additional if isinstance(additional, dict) else None)
    return not isinstance(schema, dict) or schema.get("nullable") is True


def _int_limit(limit: Any) -> int | None:
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _number_limit(limit: Any) -> float | None:
    if isinstance(limit, (int, float)) and not isinstance(limit, bool):
        return limit
    return None


def _number_text(limit: float) -> str:
    return str(int(limit)) if isinstance(limit, float) and limit.is_integer() and abs(limit) < 2**53 else str(limit)


def _same(value: Any, option: Any) -> bool:
    """JSON equality: ``true`` is not ``1``; ``1`` is ``1.0``."""
    if isinstance(value, bool) or isinstance(option, bool):
        return isinstance(value, bool) and isinstance(option, bool) and value == option
    if isinstance(value, (int, float)) and isinstance(option, (int, float)):
        return value == option
    if type(value) is not type(option):
        return False
    try:
        return bool(value == option)
    except RecursionError:
        return False


def _quoted_list(options: list[Any]) -> str:
    try:
        text = ", ".join(json.dumps(option, sort_keys=True) for option in options)
    except (TypeError, ValueError, RecursionError):
        text = f"{len(options)} values"
    return text if len(text) <= _LIMIT_TEXT else text[:_LIMIT_TEXT] + "…"
