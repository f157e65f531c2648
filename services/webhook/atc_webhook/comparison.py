"""Pure comparisons behind ``/validations/resources`` (docs/webhook.md, "The resources guard").

- ``changed_yoke_annotations(prev, next)``: which of yoke's ownership annotations an update changes;
  ``annotations_message`` words the denial (``cannot modify yoke annotations: <a>``, or a bullet list);
- ``is_noop_update(prev, next)``: equal but for generation, resourceVersion and managedFields;
- ``strip_absent(update, desired)``: the update without every field the desired object does not set
  (recursively in maps; element-wise over the first ``min(len)`` items of lists, extra items kept);
- ``modifies_desired(update, desired)``: whether, after ``strip_absent``, the update differs from the
  desired object ignoring generation, resourceVersion, managedFields and status. Server defaults, status
  and labels or annotations the flight did not set are therefore harmless; changing or removing a
  field the flight set is not.

Called by ``atc_webhook.decisions``.
"""

from __future__ import annotations

from typing import Any

from atc.model.constants import ANNOTATION_INSTANCE_REF, ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE
from atc.model.gocompat import join_errors
from atc.model.types import Object

YOKE_ANNOTATIONS = (ANNOTATION_RELEASE, ANNOTATION_RELEASE_NAMESPACE, ANNOTATION_INSTANCE_REF)
VOLATILE_METADATA = frozenset({"generation", "resourceVersion", "managedFields"})


def annotations_of(obj: Object | None) -> dict[str, str]:
    """The object's annotations; {} when it has none, or when metadata or annotations are not objects."""
    metadata = (obj or {}).get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def changed_yoke_annotations(prev: Object | None, next_: Object) -> list[str]:
    """yoke's annotations whose value (missing counts as "") differs between ``prev`` and ``next_``."""
    before, after = annotations_of(prev), annotations_of(next_)
    return [name for name in YOKE_ANNOTATIONS if before.get(name, "") != after.get(name, "")]


def annotations_message(changed: list[str]) -> str:
    return join_errors("cannot modify yoke annotations", changed)


def without_volatile(obj: Object, *, drop_status: bool) -> Object:
    """A shallow copy without generation, resourceVersion and managedFields (and ``status`` if asked)."""
    trimmed = {key: value for key, value in obj.items() if not (drop_status and key == "status")}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        trimmed["metadata"] = {key: value for key, value in metadata.items() if key not in VOLATILE_METADATA}
    return trimmed


def is_noop_update(prev: Object, next_: Object) -> bool:
    return without_volatile(prev, drop_status=False) == without_volatile(next_, drop_status=False)


def strip_absent(update: Any, desired: Any) -> Any:
    """``update`` keeping only what ``desired`` sets, where both are maps or both are lists."""
    if isinstance(update, dict) and isinstance(desired, dict):
        return {key: strip_absent(value, desired[key]) for key, value in update.items() if key in desired}
    if isinstance(update, list) and isinstance(desired, list):
        common = min(len(update), len(desired))
        return [strip_absent(update[i], desired[i]) for i in range(common)] + update[common:]
    return update


def modifies_desired(update: Object, desired: Object) -> bool:
    """Whether ``update`` changes (or removes) something the flight's desired object sets."""
    stripped = strip_absent(update, desired)
    return without_volatile(stripped, drop_status=True) != without_volatile(desired, drop_status=True)
