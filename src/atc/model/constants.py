"""yoke's identifiers (docs/compatibility.md, "The same as yoke"): labels, annotations, finalizers, field managers.

They are the compatibility contract with yoke's CLI and flights, so every
module that reads or writes them imports them from here.
"""

from __future__ import annotations

API_GROUP = "yoke.cd"
API_VERSION = "yoke.cd/v1alpha1"

FIELD_MANAGER_APPLY = "yoke"  # resources, CRDs, revision secrets
FIELD_MANAGER_ATC = "yoke.cd/atc"  # status and metadata updates

FINALIZER_INSTANCE = "yoke.cd/mayday.flight"
FINALIZER_AIRWAY = "yoke.cd/strip.airway"

ANNOTATION_INSTANCE_REF = "instance.atc.yoke.cd/instanceRef"
ANNOTATION_RELEASE = "instance.atc.yoke.cd/release"
ANNOTATION_RELEASE_NAMESPACE = "instance.atc.yoke.cd/namespace"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_ATC = "atc.yoke"
MANAGED_BY_YOKE = "yoke"
LABEL_DEPRECATED_RELEASE = "app.kubernetes.io/yoke-release"
LABEL_DEPRECATED_RELEASE_NAMESPACE = "app.kubernetes.io/yoke-release-namespace"

ANNOTATION_OVERRIDE_FLIGHT = "overrides.yoke.cd/flight"
ANNOTATION_OVERRIDE_MODE = "overrides.yoke.cd/mode"

DEFAULT_YOKE_VERSION = "v0.20.12"  # what flights see as YOKE_VERSION (docs/flight-runtime.md, "One run")
