"""Whether a live Kubernetes object is ready, by yoke's rules (spec 11.1) and custom ConfigMap rules (11.2).

``is_ready`` checks, in yoke's order: the built-in kinds (Namespace, Pod,
Service, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CRD, yoke.cd
kinds), then airway instances (an ownerReference to an Airway), then the
custom rules of ``CustomReadiness``, and otherwise reports ready. Used by the
instance and Flight reconcilers after a takeoff, and when waiting for a CRD.

``CustomReadiness`` holds the rules of ConfigMaps labelled
``resource.yoke.cd/readiness`` (``conditions`` or ``lua``); the controller's
ConfigMap watch feeds it with ``apply_configmap`` / ``remove_configmap``.
Lua rules run in a fresh sandboxed Lua 5.4 state per evaluation (see
``LuaRule``).

One deliberate difference from yoke: a ReplicaSet is ready when its
observedGeneration matches and ``replicas == readyReplicas ==
availableReplicas``. yoke (QUIRK 15.11) also compares ``updatedReplicas``,
which ReplicaSets never report, so its ReplicaSets are only ready at 0
replicas. StatefulSets keep the four-way comparison (they do report it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lupa import lua54  # type: ignore[import-untyped]

from atc.k8s.client import KubeClient
from atc.k8s.refs import ApiVersionError, split_api_version
from atc.model.conditions import meets_conditions, object_generation
from atc.model.constants import API_VERSION
from atc.model.types import Object

LABEL_READINESS = "resource.yoke.cd/readiness"
READINESS_CONDITIONS = "conditions"
READINESS_LUA = "lua"
READINESS_SELECTOR = f"{LABEL_READINESS} in ({READINESS_LUA},{READINESS_CONDITIONS})"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WILDCARD_KIND = "_"
DEFAULT_LUA_INSTRUCTIONS = 1_000_000
DEFAULT_LUA_MEMORY = 64 * 1024 * 1024


class ReadinessError(Exception):
    """The object can never become ready as it is (``job has failed``) or its readiness rule failed."""


# --- built-in rules (spec 11.1) -------------------------------------------------------------------


def _status(obj: Object) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _status_int(obj: Object, key: str) -> int:
    """``status.<key>`` as an integer; missing or not an integer counts as 0 (``NestedInt64``)."""
    value = _status(obj).get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _equal_ints(obj: Object, *keys: str) -> bool:
    return len({_status_int(obj, key) for key in keys}) <= 1


def _generation_observed(obj: Object) -> bool:
    return _status_int(obj, "observedGeneration") == object_generation(obj)


def _namespace_ready(obj: Object) -> bool:
    return _status(obj).get("phase") == "Active"


def _pod_ready(obj: Object) -> bool:
    return meets_conditions(obj, "Initialized", "ContainersReady", "Ready")


def _deployment_ready(obj: Object) -> bool:
    return (
        _generation_observed(obj)
        and meets_conditions(obj, "Available")
        and _equal_ints(obj, "replicas", "availableReplicas", "readyReplicas", "updatedReplicas")
    )


def _replicaset_ready(obj: Object) -> bool:
    # Intended rule; yoke also compares updatedReplicas, which ReplicaSets do not have (QUIRK 15.11).
    return _generation_observed(obj) and _equal_ints(obj, "replicas", "availableReplicas", "readyReplicas")


def _statefulset_ready(obj: Object) -> bool:
    return _generation_observed(obj) and _equal_ints(
        obj, "replicas", "availableReplicas", "readyReplicas", "updatedReplicas"
    )


def _daemonset_ready(obj: Object) -> bool:
    return _generation_observed(obj) and _equal_ints(
        obj,
        "currentNumberScheduled",
        "desiredNumberScheduled",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberReady",
    )


def _job_ready(obj: Object) -> bool:
    if meets_conditions(obj, "Failed"):
        raise ReadinessError("job has failed")
    return meets_conditions(obj, "Complete")


def _crd_ready(obj: Object) -> bool:
    return meets_conditions(obj, "Established")


def _flight_ready(obj: Object) -> bool:
    return meets_conditions(obj, "Ready")


_BUILTIN: dict[tuple[str, str], Callable[[Object], bool]] = {
    ("", "Namespace"): _namespace_ready,
    ("", "Pod"): _pod_ready,
    ("apps", "Deployment"): _deployment_ready,
    ("apps", "ReplicaSet"): _replicaset_ready,
    ("apps", "StatefulSet"): _statefulset_ready,
    ("apps", "DaemonSet"): _daemonset_ready,
    ("batch", "Job"): _job_ready,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd_ready,
    ("yoke.cd", "Airway"): _flight_ready,
    ("yoke.cd", "Flight"): _flight_ready,
    ("yoke.cd", "ClusterFlight"): _flight_ready,
}


def _metadata(obj: Object) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _group_kind(obj: Object) -> tuple[str, str]:
    try:
        group, _ = split_api_version(str(obj.get("apiVersion", "")))
    except ApiVersionError:
        group = ""
    return group, str(obj.get("kind", ""))


def _owned_by_airway(obj: Object) -> bool:
    references = _metadata(obj).get("ownerReferences")
    return isinstance(references, list) and any(
        isinstance(ref, dict) and ref.get("apiVersion") == API_VERSION and ref.get("kind") == "Airway"
        for ref in references
    )


async def _service_ready(kube: KubeClient, obj: Object) -> bool:
    """Ready once any EndpointSlice of the Service exists (yoke's rule; QUIRK 15.11 keeps it that loose)."""
    metadata = _metadata(obj)
    path = f"/apis/discovery.k8s.io/v1/namespaces/{metadata.get('namespace', '')}/endpointslices"
    query = {"labelSelector": f"{SERVICE_NAME_LABEL}={metadata.get('name', '')}", "limit": "1"}
    slices = await kube.get(path, query=query)
    return bool(slices.get("items"))


async def is_ready(kube: KubeClient, live: Object, custom: CustomReadiness | None = None) -> bool:
    """Whether ``live`` (as read from the API server) is ready; ``ReadinessError`` when it never will be.

    API errors of the Service lookup propagate as ``KubeError``.
    """
    group, kind = _group_kind(live)
    builtin = _BUILTIN.get((group, kind))
    if builtin is not None:
        return builtin(live)
    if (group, kind) == ("", "Service"):
        return await _service_ready(kube, live)
    if _owned_by_airway(live):
        return meets_conditions(live, "Ready")
    rule = custom.rule_for(group, kind) if custom is not None else None
    return rule.ready(live) if rule is not None else True


# --- custom rules (spec 11.2) ---------------------------------------------------------------------


def parse_group_kind(text: str) -> tuple[str, str]:
    """``Kind.group`` -> (group, kind), ``Kind`` -> ("", kind), as Go's ``schema.ParseGroupKind``."""
    kind, _, group = text.partition(".")
    return group, kind


@dataclass(frozen=True)
class ConditionsRule:
    """Ready when every listed condition type is met (``MeetsConditions``)."""

    types: tuple[str, ...]

    def ready(self, obj: Object) -> bool:
        return meets_conditions(obj, *self.types)


# The sandbox prelude: runs once in each fresh Lua state before the user's script. It receives the
# pieces it needs from the unrestricted globals, then removes everything outside the core libraries.
# An instruction-count hook enforces the budget in every coroutine; once the budget is spent the hook
# fires on every instruction, so pcall loops cannot outlive it. Code that Lua runs with hooks disabled
# is kept out of reach: __gc finalizers are refused, xpcall handlers are skipped and dead coroutines are
# not closed once the budget is spent.
_LUA_PRELUDE = r"""
local budget, sethook, raw_load, raw_xpcall, raw_setmetatable, co = ...
local LIMIT = "instruction limit of " .. budget .. " exceeded"
local STEP = 1000
local spent = 0
local function hook()
  spent = spent + STEP
  if spent > budget then
    sethook(hook, "", 1)
    error(LIMIT, 0)
  end
end
local function exhausted() return spent > budget end
sethook(hook, "", STEP)

local create, resume, close = co.create, co.resume, co.close
local function hooked(f)
  if type(f) ~= "function" then error("bad argument #1 (function expected)", 3) end
  return function(...)
    sethook(hook, "", exhausted() and 1 or STEP)
    return f(...)
  end
end
local function unwrap(thread, ok, ...)
  if ok then return ... end
  if not exhausted() then close(thread) end
  error((...), 0)
end
co.create = function(f) return create(hooked(f)) end
co.wrap = function(f)
  local thread = create(hooked(f))
  return function(...) return unwrap(thread, resume(thread, ...)) end
end
co.close = function(thread)
  if exhausted() then error(LIMIT, 0) end
  return close(thread)
end

xpcall = function(f, handler, ...)
  return raw_xpcall(f, function(e)
    if exhausted() then return e end
    return handler(e)
  end, ...)
end
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in readiness scripts", 2)
  end
  return raw_setmetatable(t, mt)
end
load = function(chunk, name, mode, ...) return raw_load(chunk, name, "t", ...) end
print = function() end
warn = function() end
for _, name in ipairs({"io", "os", "package", "require", "debug", "dofile", "loadfile", "python"}) do
  _G[name] = nil
end
"""


def _lua_error_text(exc: Exception) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory"
    return str(exc) or type(exc).__name__


def _lua_kind(value: Any) -> str:
    """The Lua type name of a value returned to Python."""
    if isinstance(value, str | bytes):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return str(lua54.lua_type(value) or type(value).__name__)


@dataclass(frozen=True)
class LuaRule:
    """A Lua chunk returning ``function(obj) -> boolean``; each evaluation runs in a fresh, limited state.

    The state has Lua 5.4's core libraries (base, string, table, math, utf8,
    coroutine) without io, os, package/require, debug, dofile/loadfile,
    binary chunks or output; it is capped at ``memory`` bytes and
    ``instructions`` VM instructions (a ``while true do end`` fails with
    ``instruction limit of N exceeded``). C library calls are not interrupted
    by the instruction hook, so a pathological pattern match can still run
    long; the memory cap bounds everything else.
    """

    name: str
    script: str
    instructions: int = DEFAULT_LUA_INSTRUCTIONS
    memory: int = DEFAULT_LUA_MEMORY

    def _runtime(self) -> tuple[Any, Any]:
        """A sandboxed state and its unrestricted ``load``."""
        runtime = lua54.LuaRuntime(register_eval=False, register_builtins=False, max_memory=self.memory)
        lua_globals = runtime.globals()
        raw_load = lua_globals.load
        prelude = raw_load(_LUA_PRELUDE, "=sandbox", "t")
        prelude(
            self.instructions,
            lua_globals.debug.sethook,
            raw_load,
            lua_globals.xpcall,
            lua_globals.setmetatable,
            lua_globals.coroutine,
        )
        return runtime, raw_load

    def _function(self, raw_load: Any) -> Any:
        try:
            loaded = raw_load(self.script, "=" + self.name, "t")
        except lua54.LuaError as exc:
            raise ReadinessError(f"failed to load lua script: {_lua_error_text(exc)}") from exc
        if isinstance(loaded, tuple):
            raise ReadinessError(f"failed to load lua script: {loaded[1]}")
        try:
            result = loaded()
        except lua54.LuaError as exc:
            raise ReadinessError(f"failed to execute lua script: {_lua_error_text(exc)}") from exc
        return result[0] if isinstance(result, tuple) else result

    def _invoke(self, runtime: Any, function: Any, obj: Object) -> Any:
        try:
            table = runtime.table_from(obj, recursive=True)
        except (lua54.LuaError, MemoryError) as exc:
            raise ReadinessError(f"failed to convert resource into lua table: {_lua_error_text(exc)}") from exc
        if lua54.lua_type(function) != "function":
            kind = "nil" if function is None else _lua_kind(function)
            raise ReadinessError(f"failed to invoke lua readiness function: attempt to call a {kind} value")
        try:
            result = function(table)
        except lua54.LuaError as exc:
            raise ReadinessError(f"failed to invoke lua readiness function: {_lua_error_text(exc)}") from exc
        return result[0] if isinstance(result, tuple) else result

    def ready(self, obj: Object) -> bool:
        try:
            runtime, raw_load = self._runtime()
        except (lua54.LuaError, MemoryError) as exc:
            raise ReadinessError(f"failed to initialize lua state: {_lua_error_text(exc)}") from exc
        value = self._invoke(runtime, self._function(raw_load), obj)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ReadinessError(f"expected result to be a boolean but got: {_lua_kind(value)}")
        return value


ReadinessRule = ConditionsRule | LuaRule


class CustomReadiness:
    """Readiness rules by GroupKind, from ConfigMaps labelled ``resource.yoke.cd/readiness``.

    Each data key of a ConfigMap is a GroupKind (``Kind.group``, ``Kind`` for
    the core group, ``_.<group>`` for every kind of a group) and its value the
    rule. Rules are kept per ConfigMap, so an update that drops a key drops
    its rule and deleting a ConfigMap restores what another ConfigMap says
    for the same key (yoke keeps dropped keys until the ConfigMap is deleted,
    then forgets the key whoever defined it). When ConfigMaps disagree on a
    key, the one that appeared last wins; updates and resyncs keep a
    ConfigMap's place.
    """

    def __init__(
        self, *, lua_instructions: int = DEFAULT_LUA_INSTRUCTIONS, lua_memory: int = DEFAULT_LUA_MEMORY
    ) -> None:
        self._sources: dict[str, dict[tuple[str, str], ReadinessRule]] = {}
        self._rules: dict[tuple[str, str], ReadinessRule] = {}
        self._lua_instructions = lua_instructions
        self._lua_memory = lua_memory

    def __len__(self) -> int:
        return len(self._rules)

    def _rule(self, label: str, key: str, value: str) -> ReadinessRule:
        if label == READINESS_CONDITIONS:
            return ConditionsRule(tuple(value.split()))
        return LuaRule(key, value, self._lua_instructions, self._lua_memory)

    def _merge(self) -> None:
        self._rules = {}
        for rules in self._sources.values():
            self._rules.update(rules)

    def apply_configmap(self, configmap: Object) -> None:
        """Register the data keys of an added or updated ConfigMap (one without a lua/conditions label is removed)."""
        labels = _metadata(configmap).get("labels") or {}
        label = labels.get(LABEL_READINESS) if isinstance(labels, dict) else None
        if label not in (READINESS_LUA, READINESS_CONDITIONS):
            self.remove_configmap(configmap)
            return
        rules = {parse_group_kind(key): self._rule(label, key, value) for key, value in _data(configmap).items()}
        self._sources[_source(configmap)] = rules
        self._merge()

    def remove_configmap(self, configmap: Object) -> None:
        """Forget the rules of a deleted ConfigMap."""
        if self._sources.pop(_source(configmap), None) is not None:
            self._merge()

    def rule_for(self, group: str, kind: str) -> ReadinessRule | None:
        """The rule for exactly ``Kind.group``, else the group's wildcard ``_.<group>``."""
        return self._rules.get((group, kind)) or self._rules.get((group, WILDCARD_KIND))


def _source(configmap: Object) -> str:
    metadata = _metadata(configmap)
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def _data(configmap: Object) -> dict[str, str]:
    data = configmap.get("data")
    if not isinstance(data, dict):
        return {}
    return {str(key): str(value) for key, value in data.items()}
