"""Whether a live Kubernetes object is ready, by yoke's rules and custom ConfigMap rules.

``is_ready`` checks, in yoke's order: the built-in kinds (Namespace, Pod,
Service, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CRD, yoke.cd
kinds), then airway instances (an ownerReference to an Airway), then the
custom rules of ``CustomReadiness``, and otherwise reports ready (docs/controller.md,
"The reconcile loop to read first", step 5). Used by the instance and Flight
reconcilers after a takeoff, and when waiting for a CRD.

``CustomReadiness`` holds the rules of ConfigMaps labelled
``resource.yoke.cd/readiness`` (``conditions`` or ``lua``); the controller's
ConfigMap watch feeds it with ``apply_configmap`` / ``remove_configmap``.
Lua rules run in a fresh sandboxed Lua 5.4 state per evaluation (see
``LuaRule``), on a few worker threads of their own so the event loop keeps
serving, and within a time limit (docs/controller.md, "Custom readiness
rules").

One deliberate difference from yoke: a ReplicaSet is ready when its
observedGeneration matches and ``replicas == readyReplicas ==
availableReplicas``. yoke also compares ``updatedReplicas``,
which ReplicaSets never report, so its ReplicaSets are only ready at 0
replicas. StatefulSets keep the four-way comparison (they do report it).
See docs/compatibility.md, "Others".
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from lupa import lua54  # type: ignore[import-untyped]

from atc.k8s.client import KubeClient
from atc.k8s.refs import ApiVersionError, split_api_version
from atc.model.conditions import meets_conditions, object_generation
from atc.model.constants import API_VERSION
from atc.model.gocompat import seconds_to_duration_text
from atc.model.types import Object

LABEL_READINESS = "resource.yoke.cd/readiness"
READINESS_CONDITIONS = "conditions"
READINESS_LUA = "lua"
READINESS_SELECTOR = f"{LABEL_READINESS} in ({READINESS_LUA},{READINESS_CONDITIONS})"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
WILDCARD_KIND = "_"
DEFAULT_LUA_INSTRUCTIONS = 1_000_000
DEFAULT_LUA_MEMORY = 64 * 1024 * 1024
DEFAULT_LUA_SECONDS = 1.0
LUA_WORKERS = 4  # Lua evaluations at once, each of up to DEFAULT_LUA_MEMORY
LUA_GRACE_SECONDS = 1.0  # how much longer than its limit a caller waits for a rule stuck in a C call


class ReadinessError(Exception):
    """The object can never become ready as it is (``job has failed``) or its readiness rule failed."""


# --- built-in rules ------------------------------------------------------------------------------


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
    # Intended rule; yoke also compares updatedReplicas, which ReplicaSets do not have.
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
    """Ready once any EndpointSlice of the Service exists (yoke's rule, kept that loose on purpose)."""
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
    return await rule.evaluate(live) if rule is not None else True


# --- custom rules --------------------------------------------------------------------------------


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

    async def evaluate(self, obj: Object) -> bool:
        """``ready``, for callers on the event loop (cheap, so it runs there)."""
        return self.ready(obj)


# The sandbox prelude: runs once in each fresh Lua state before the user's script. It receives the
# pieces it needs from the unrestricted globals, then removes everything outside the core libraries.
# An instruction-count hook enforces the budget and the deadline (``clock`` is Python's
# ``time.monotonic``) in every coroutine; once either is spent the hook fires on every instruction, so
# pcall loops cannot outlive it. Code that Lua runs with hooks disabled is kept out of reach: __gc
# finalizers are refused, xpcall handlers are skipped and dead coroutines are not closed once the
# budget is spent.
_LUA_PRELUDE = r"""
local budget, time_limit, clock, deadline, sethook, raw_load, raw_xpcall, raw_setmetatable, co = ...
local LIMIT = "instruction limit of " .. budget .. " exceeded"
local TIMEOUT = "time limit of " .. time_limit .. " exceeded"
local STEP = 1000
local spent = 0
local stopped = nil
local function hook()
  spent = spent + STEP
  if stopped == nil then
    if spent > budget then
      stopped = LIMIT
    elseif clock() > deadline then
      stopped = TIMEOUT
    end
  end
  if stopped ~= nil then
    sethook(hook, "", 1)
    error(stopped, 0)
  end
end
local function exhausted() return stopped ~= nil end
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
  if exhausted() then error(stopped, 0) end
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
    binary chunks or output; it is capped at ``memory`` bytes,
    ``instructions`` VM instructions (a ``while true do end`` fails with
    ``instruction limit of N exceeded``) and ``seconds`` of wall time from the
    start of the evaluation (``time limit of 1s exceeded``). Both limits are
    checked by a hook every 1000 instructions, which raises a Lua error, so the
    evaluation really ends. C library calls are not interrupted by the hook,
    so a pathological pattern match can still run long: ``evaluate`` stops
    waiting for it after ``seconds + LUA_GRACE_SECONDS``; the memory cap
    bounds everything else.

    ``ready`` runs on the calling thread; ``evaluate`` runs it on a Lua worker
    thread and is what the event loop uses.
    """

    name: str
    script: str
    instructions: int = DEFAULT_LUA_INSTRUCTIONS
    memory: int = DEFAULT_LUA_MEMORY
    seconds: float = DEFAULT_LUA_SECONDS

    def _time_limit_text(self) -> str:
        return f"time limit of {seconds_to_duration_text(self.seconds)} exceeded"

    def _runtime(self, deadline: float) -> tuple[Any, Any]:
        """A sandboxed state whose hook stops at ``deadline`` (``time.monotonic``), and its unrestricted ``load``."""
        runtime = lua54.LuaRuntime(register_eval=False, register_builtins=False, max_memory=self.memory)
        lua_globals = runtime.globals()
        raw_load = lua_globals.load
        prelude = raw_load(_LUA_PRELUDE, "=sandbox", "t")
        prelude(
            self.instructions,
            seconds_to_duration_text(self.seconds),
            time.monotonic,
            deadline,
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
        """Evaluate the rule for ``obj`` on this thread (blocking, for at most about ``seconds``)."""
        deadline = time.monotonic() + self.seconds
        try:
            runtime, raw_load = self._runtime(deadline)
        except (lua54.LuaError, MemoryError) as exc:
            raise ReadinessError(f"failed to initialize lua state: {_lua_error_text(exc)}") from exc
        value = self._invoke(runtime, self._function(raw_load), obj)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ReadinessError(f"expected result to be a boolean but got: {_lua_kind(value)}")
        return value

    async def evaluate(self, obj: Object) -> bool:
        """``ready`` on a Lua worker thread: the event loop keeps serving while the rule runs."""
        future = _WORKERS.submit(lambda: self.ready(obj))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.seconds + LUA_GRACE_SECONDS)
        except TimeoutError:
            raise ReadinessError(f"failed to evaluate lua readiness rule: {self._time_limit_text()}") from None


class _LuaWorkers:
    """``count`` daemon threads running Lua evaluations from a queue, started on first use.

    Daemon threads, not a ``ThreadPoolExecutor``: an evaluation stuck in a
    long C call (which no hook interrupts) must not hold up the process's exit.
    A job whose caller stopped waiting before it started is skipped.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._jobs: queue.SimpleQueue[tuple[Future[bool], Callable[[], bool]]] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], bool]) -> Future[bool]:
        future: Future[bool] = Future()
        self._jobs.put((future, job))
        self._start()
        return future

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for index in range(self._count):
                threading.Thread(target=self._work, name=f"lua-readiness-{index}", daemon=True).start()

    def _work(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the waiting coroutine
                future.set_exception(exc)


_WORKERS = _LuaWorkers(LUA_WORKERS)


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
        self,
        *,
        lua_instructions: int = DEFAULT_LUA_INSTRUCTIONS,
        lua_memory: int = DEFAULT_LUA_MEMORY,
        lua_seconds: float = DEFAULT_LUA_SECONDS,
    ) -> None:
        self._sources: dict[str, dict[tuple[str, str], ReadinessRule]] = {}
        self._rules: dict[tuple[str, str], ReadinessRule] = {}
        self._lua_instructions = lua_instructions
        self._lua_memory = lua_memory
        self._lua_seconds = lua_seconds

    def __len__(self) -> int:
        return len(self._rules)

    def _rule(self, label: str, key: str, value: str) -> ReadinessRule:
        if label == READINESS_CONDITIONS:
            return ConditionsRule(tuple(value.split()))
        return LuaRule(key, value, self._lua_instructions, self._lua_memory, self._lua_seconds)

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
