"""Airways: the CRD an Airway declares, and the instance controller serving it.

``AirwayReconciler.reconcile(name)``:
1. adds the ``yoke.cd/strip.airway`` finalizer; on deletion runs ``_delete``;
2. loads the flight (and converter) module, so a bad URL, checksum or
   allow-list denial shows on the Airway before any instance needs it;
3. server-side applies the CRD from ``spec.template`` (with yoke's mutations:
   a status subresource and a ``status.conditions`` schema; conversion wired
   to the webhook when a converter is set) and waits until it is Established;
4. starts the instance controller (a reflector over the CRD's storage
   version plus an ``InstanceReconciler``), or restarts it when the Airway or
   its CRD changed, which re-evaluates every instance;
5. sets ``Ready`` (``Flight-Controller launched``) or ``Error`` with the message.

Unlike yoke, a reconcile that finds the same Airway generation and CRD already
served leaves the running instance controller alone (docs/controller.md,
"Where this controller differs from yoke's"). Deletion deletes the
CRD (foreground, so every instance is torn down by its finalizer first),
then stops the instance controller and removes the finalizer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass

from atc.k8s.client import KubeError
from atc.k8s.crds import AIRWAYS_PATH
from atc.k8s.crds import CRD_PATH as CRDS_PATH
from atc.k8s.discovery import NoMatchError, RestMapping
from atc.k8s.events import NORMAL, WARNING
from atc.k8s.reflector import Reflector, changed_beyond_status
from atc.k8s.refs import owner_of
from atc.model.airway_template import (
    InvalidAirwayError,
    airway_crd,
    conversion_path,
    conversion_webhook,
    mutate_template,
    storage_version,
)
from atc.model.constants import FIELD_MANAGER_APPLY, FIELD_MANAGER_ATC, FINALIZER_AIRWAY
from atc.model.specs import AirwaySpec
from atc.model.types import Object
from atc.model.webhook_configs import VALIDATING_CONFIGS_PATH, instance_webhook_config, webhook_client_config
from atc.wasm.errors import ModuleError, ModuleNotAllowedError
from atc_controller.context import ControllerContext
from atc_controller.core.results import Result, TerminalError

from .finalizers import add_finalizer, remove_finalizer
from .instance import InstanceReconciler, instance_controller_name
from .status import ready_condition, set_condition

log = logging.getLogger("atc.controller.airway")
ESTABLISHED_TIMEOUT = 60.0


@dataclass
class RunningInstances:
    """An instance controller serving one Airway."""

    controller_name: str
    generation: int
    crd_version: str
    reconciler: InstanceReconciler
    reflector: Reflector
    task: asyncio.Task[None]


class AirwayReconciler:
    """Reconciles Airways (cluster-scoped, key = name)."""

    controller_name = "airway"

    def __init__(self, context: ControllerContext, airways: Reflector) -> None:
        self.context = context
        self.airways = airways
        self.running: dict[str, RunningInstances] = {}
        # CRD path -> (digest of the body applied, resourceVersion once Established): an unchanged
        # Airway whose CRD nobody touched since is not applied again on every resync
        self._applied_crds: dict[str, tuple[str, str]] = {}

    async def reconcile(self, key: str) -> Result:
        airway = self.airways.get("", key)
        if airway is None:
            await self._stop_instances(key)
            return Result()
        meta = airway["metadata"]
        if not meta.get("deletionTimestamp") and FINALIZER_AIRWAY not in (meta.get("finalizers") or []):
            await add_finalizer(self.context.kube, f"{AIRWAYS_PATH}/{key}", airway, FINALIZER_AIRWAY)
            return Result()
        if meta.get("deletionTimestamp") and FINALIZER_AIRWAY in (meta.get("finalizers") or []):
            await self._delete(airway)
            return Result()
        try:
            await self._launch(airway)
        except (TerminalError, InvalidAirwayError) as exc:
            await self._error(airway, str(exc))
            raise TerminalError(str(exc)) from None
        except Exception as exc:
            await self._error(airway, str(exc))
            raise
        return Result()

    # ------------------------------------------------------------------------------------ launch
    async def _launch(self, airway: Object) -> None:
        name, generation = airway["metadata"]["name"], int(airway["metadata"].get("generation", 0))
        spec = AirwaySpec.model_validate(airway["spec"])
        running = self.running.get(name)
        if running is None:
            await self._condition(airway, "False", "InProgress", "Initializing flight controller")
        await self._warm_modules(spec)
        crd = await self._apply_crd(airway, spec)
        version = storage_version(crd["spec"])
        crd_state = f"{crd['metadata'].get('uid')}/{version}"
        if running is not None and running.generation == generation and running.crd_version == crd_state:
            self._refresh_metadata(running, airway)
            await self._condition(airway, "True", "Ready", "Flight-Controller launched")
            return
        if running is not None:
            await self._condition(airway, "False", "InProgress", "Cleaning up previous flight controller")
            await self._stop_instances(name)
        await self._apply_instance_webhook(airway)
        await self.context.mapper.refresh(force=True)
        mapping = await self._instance_mapping(crd, version)
        await self._start_instances(airway, mapping, generation, crd_state)
        await self._condition(airway, "True", "Ready", "Flight-Controller launched")
        self.context.events.record(
            airway, NORMAL, "FlightControllerLaunched", f"serving {mapping.kind}.{mapping.group} {version}"
        )

    def _refresh_metadata(self, running: RunningInstances, airway: Object) -> None:
        """Same spec, new metadata (an annotation such as the privileged opt-in): instances see it now."""
        old = running.reconciler.airway["metadata"].get("annotations") or {}
        running.reconciler.airway = airway
        if (airway["metadata"].get("annotations") or {}) != old:
            for instance in running.reflector.list():
                meta = instance["metadata"]
                self.context.manager.enqueue(running.controller_name, f"{meta.get('namespace', '')}/{meta['name']}")

    async def _warm_modules(self, spec: AirwaySpec) -> None:
        urls = [(spec.wasm_urls.flight, spec.wasm_urls.flight_checksum)]
        if spec.wasm_urls.converter:
            urls.append((spec.wasm_urls.converter, spec.wasm_urls.converter_checksum))
        for url, checksum in urls:
            try:
                await self.context.modules.load(url, checksum=checksum, insecure=spec.insecure)
            except ModuleNotAllowedError as exc:
                raise TerminalError(f"failed to setup cache: failed to warm cache: {exc}") from None
            except ModuleError as exc:
                raise RuntimeError(f"failed to setup cache: failed to warm cache: {exc}") from None

    def _crd_body(self, airway: Object, spec: AirwaySpec) -> Object:
        template = mutate_template(spec.template)
        if spec.wasm_urls.converter:
            settings = self.context.settings
            if not self.context.ca_bundle:
                raise TerminalError(
                    "airway has a converter but the controller has no TLS_CA_CERT for the conversion webhook"
                )
            path = conversion_path(airway["metadata"]["name"])
            template["conversion"] = conversion_webhook(
                webhook_client_config(settings, path, ca_bundle=self.context.ca_bundle)
            )
        return airway_crd(airway, template)

    async def _apply_crd(self, airway: Object, spec: AirwaySpec) -> Object:
        body = self._crd_body(airway, spec)
        path = f"{CRDS_PATH}/{body['metadata']['name']}"
        existing = await self.context.kube.get_or_none(path)
        if existing is not None and (owner := owner_of(existing)):
            raise TerminalError(
                f'failed to apply airway\'s template crd: failed to validate resource release: expected release "" '
                f'but resource is already owned by "{owner}"'
            )
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if existing is not None and self._unchanged_since_applied(path, digest, existing):
            return existing
        try:
            await self.context.kube.apply(path, body, field_manager=FIELD_MANAGER_APPLY, force=False)
        except KubeError as exc:
            self._applied_crds.pop(path, None)
            raise TerminalError(f"failed to apply airway's template crd: {exc}") from None
        crd = await self._wait_established(path)
        self._applied_crds[path] = (digest, crd["metadata"].get("resourceVersion", ""))
        return crd

    def _unchanged_since_applied(self, path: str, digest: str, existing: Object) -> bool:
        """This body was applied, and the CRD is Established and untouched since (same resourceVersion)."""
        applied = (digest, existing["metadata"].get("resourceVersion", ""))
        return _established(existing) and self._applied_crds.get(path) == applied

    async def _apply_instance_webhook(self, airway: Object) -> None:
        """The ValidatingWebhookConfiguration that dry-runs this Airway's instances, one per Airway.

        Only when the webhook is configured (TLS_CA_CERT): a Fail-policy hook pointing at no webhook
        would block every instance write.
        """
        if not self.context.ca_bundle:
            return
        config = instance_webhook_config(airway, self.context.settings, ca_bundle=self.context.ca_bundle)
        path = f"{VALIDATING_CONFIGS_PATH}/{config['metadata']['name']}"
        try:
            await self.context.kube.apply(path, config, field_manager=FIELD_MANAGER_ATC, force=True)
        except KubeError as exc:
            raise RuntimeError(f"failed to create validation webhook: {exc}") from None

    async def _wait_established(self, path: str) -> Object:
        deadline = time.monotonic() + ESTABLISHED_TIMEOUT
        while True:
            crd = await self.context.kube.get(path)
            if _established(crd):
                return crd
            if time.monotonic() > deadline:
                raise RuntimeError("airway's template crd failed to become ready: timed out after 1m0s")
            await asyncio.sleep(1)

    async def _instance_mapping(self, crd: Object, version: str) -> RestMapping:
        spec = crd["spec"]
        try:
            return await self.context.mapper.mapping(
                spec["group"], spec["names"]["kind"], version, refresh_on_miss=True
            )
        except NoMatchError as exc:
            raise RuntimeError(f"failed to get rest mapping for gk: {exc}") from None

    # ------------------------------------------------------------------------------------ instance controllers
    async def _start_instances(self, airway: Object, mapping: RestMapping, generation: int, crd_state: str) -> None:
        name = airway["metadata"]["name"]
        controller_name = instance_controller_name(name)
        manager = self.context.manager

        def on_event(event_type: str, obj: Object, old: Object | None) -> None:
            meta = obj["metadata"]
            key = f"{meta.get('namespace', '')}/{meta['name']}"
            if event_type == "MODIFIED" and (
                (old is not None and not changed_beyond_status(old, obj)) or reconciler.absorbs(key, obj)
            ):
                return
            nothing_new = event_type == "RESYNC" or (event_type == "ADDED" and not reflector.synced.is_set())
            manager.enqueue(controller_name, key, backlog=nothing_new)

        reflector = Reflector(
            self.context.kube,
            mapping.collection_path(),
            name=controller_name,
            handler=on_event,
            resync_period=self.context.settings.resync_seconds,
        )
        reconciler = InstanceReconciler(self.context, airway, mapping, reflector)
        manager.register(controller_name, reconciler)
        task = asyncio.create_task(reflector.run(), name=f"reflector-{controller_name}")
        self.running[name] = RunningInstances(controller_name, generation, crd_state, reconciler, reflector, task)
        try:
            await asyncio.wait_for(reflector.synced.wait(), timeout=60)
        except TimeoutError:
            raise RuntimeError(f"instance cache of {mapping.kind}.{mapping.group} did not sync within 60s") from None

    async def _stop_instances(self, name: str) -> None:
        running = self.running.pop(name, None)
        if running is None:
            return
        self.context.manager.unregister(running.controller_name)
        self.context.external_watches.forget(running.controller_name)
        running.reflector.stop()
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    def instances_for(self, group: str, kind: str) -> InstanceReconciler | None:
        """The instance reconciler serving the CRD with this group and kind, if one runs."""
        for running in self.running.values():
            mapping = running.reconciler.mapping
            if (mapping.group, mapping.kind) == (group, kind):
                return running.reconciler
        return None

    async def stop(self) -> None:
        for name in list(self.running):
            await self._stop_instances(name)

    # ------------------------------------------------------------------------------------ deletion
    async def _delete(self, airway: Object) -> None:
        name = airway["metadata"]["name"]
        await self._condition(airway, "False", "Terminating", "cleaning up resources")
        try:
            await self.context.kube.request("DELETE", f"{VALIDATING_CONFIGS_PATH}/{name}")
        except KubeError as exc:
            if not exc.not_found:
                raise RuntimeError(f"failed to remove admission validation webhook: {exc}") from None
        path = f"{CRDS_PATH}/{name}"
        self._applied_crds.pop(path, None)
        crd = await self.context.kube.get_or_none(path)
        if crd is None:
            await remove_finalizer(self.context.kube, f"{AIRWAYS_PATH}/{name}", FINALIZER_AIRWAY)
            await self._stop_instances(name)
            return
        if not crd["metadata"].get("deletionTimestamp"):
            try:
                await self.context.kube.request("DELETE", path, body={"propagationPolicy": "Foreground"})
            except KubeError as exc:
                if not exc.not_found:
                    raise RuntimeError(
                        f"failed to remove custom resource definiton associated to airway: {exc}"
                    ) from None
        # the CRD's own deletion events bring us back here until it is gone

    # ------------------------------------------------------------------------------------ helpers
    async def _condition(self, airway: Object, status: str, reason: str, message: str) -> None:
        generation = int(airway["metadata"].get("generation", 0))
        await set_condition(
            self.context.kube,
            f"{AIRWAYS_PATH}/{airway['metadata']['name']}",
            generation,
            ready_condition(status, reason, message, generation),
        )

    async def _error(self, airway: Object, message: str) -> None:
        await self._condition(airway, "False", "Error", message)
        self.context.events.record(airway, WARNING, "AirwayFailed", message)


def _established(crd: Object) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
