"""Turn a flight's stdout into stages of Kubernetes objects.

A flight prints one of: a stream of YAML/JSON documents (one object each), a
list of objects, or a list of lists of objects (explicit stages). Namespaces
and CustomResourceDefinitions of a stage move into a stage of their own just
before the rest, so they exist before anything that needs them; empty stages
are dropped. Errors say what was wrong and show the start of the output.
Called by the takeoff pipeline (reconcile and admission dry-run).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from atc.model.types import Object

Stages = list[list[Object]]

# libyaml's loader is about 10x faster on large (helm-sized) outputs; PyYAML's wheels ship it.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

EMPTY_OUTPUT = "resource provided is either empty or invalid"
WRONG_SHAPE = "input must be resource, list of resources, or list of list of resources"
EARLY_KINDS = {("Namespace", ""), ("CustomResourceDefinition", "apiextensions.k8s.io")}


class OutputError(ValueError):
    """stdout is not something yoke can apply."""


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("kind"), str) and bool(value["kind"])


def _document_stream(text: str) -> list[Object]:
    """Objects from a ``---`` separated stream, up to the first document that is not an object."""
    objects: list[Object] = []
    try:
        for document in yaml.load_all(text, Loader=_Loader):
            if document is None:
                continue
            if not _is_object(document):
                break
            objects.append(document)
    except yaml.YAMLError:
        pass  # keep what decoded before the broken document, as yoke's streaming decoder does
    return objects


def _whole_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return None


def _explicit_stages(value: Any) -> Stages | None:
    if not isinstance(value, list):
        return None
    if all(_is_object(item) for item in value):
        return [value]
    if all(isinstance(stage, list) and all(_is_object(item) for item in stage) for stage in value):
        return [list(stage) for stage in value]
    return None


def _preview(text: str) -> str:
    head = text.strip()[:80]
    return f'(output starts with "{head}")' if head else ""


def parse_stages(stdout: bytes) -> Stages:
    """Stages of objects from a flight's stdout; raises ``OutputError`` with yoke's wording."""
    text = stdout.decode("utf-8", errors="replace")
    if not text.strip():
        raise OutputError(EMPTY_OUTPUT)
    stripped = text.lstrip()
    stages: Stages | None = None
    if not stripped.startswith("["):
        objects = _document_stream(text)
        stages = [objects] if objects else None
    if stages is None:
        stages = _explicit_stages(_whole_value(text))
    if stages is None:
        raise OutputError(f"failed to parse output into valid flight output: {WRONG_SHAPE} {_preview(text)}".rstrip())
    for index, obj in enumerate(obj for stage in stages for obj in stage):
        if problem := _shape_problem(obj):
            raise OutputError(f"failed to parse output into valid flight output: resource {index}: {problem}")
    return split_early_kinds(stages)


def _shape_problem(obj: Object) -> str:
    """What makes a printed object unusable as a Kubernetes object ("" when nothing does).

    ``null`` metadata, labels, annotations and ownerReferences mean absent, as in Go, and are dropped.
    """
    if obj.get("metadata", {}) is None:
        del obj["metadata"]
    metadata = obj.get("metadata")
    for field in ("labels", "annotations", "ownerReferences"):
        if isinstance(metadata, dict) and field in metadata and metadata[field] is None:
            del metadata[field]
    if not isinstance(obj.get("apiVersion", ""), str):
        return "apiVersion must be a string"
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    for field in ("name", "namespace"):
        if not isinstance(metadata.get(field, ""), str):
            return f"metadata.{field} must be a string"
    for field in ("labels", "annotations"):
        values = metadata.get(field, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return f"metadata.{field} must map strings to strings"
    if not isinstance(metadata.get("ownerReferences", []), list):
        return "metadata.ownerReferences must be a list"
    return ""


def _group(obj: Object) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def split_early_kinds(stages: Stages) -> Stages:
    """Move Namespaces and CRDs of each stage into a stage right before it; drop empty stages."""
    result: Stages = []
    for stage in stages:
        early = [obj for obj in stage if (obj.get("kind"), _group(obj)) in EARLY_KINDS]
        rest = [obj for obj in stage if (obj.get("kind"), _group(obj)) not in EARLY_KINDS]
        result.extend(part for part in (early, rest) if part)
    return result
