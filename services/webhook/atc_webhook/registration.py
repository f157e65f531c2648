"""Applies the webhook configurations this service serves, for local and test runs (``REGISTER_WEBHOOKS``).

``Registrar`` server-side applies (field manager ``yoke.cd/atc-webhook``, forced)
each static ValidatingWebhookConfiguration of ``atc.model.webhook_configs`` whose paths the
app actually serves, so a path nobody serves yet is never registered (with
failurePolicy Fail it would block every write it matches). It retries until the
API server accepts them and applies them again when ``refresh`` is called (the
TLS watcher does when the CA file changes, so the caBundle follows). It never
deletes them: in a cluster the chart owns them, and a replica shutting down
must not disable admission for the others (docs/webhook.md).

``atc_webhook.server`` creates and runs it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atc.k8s.client import KubeClient, KubeError
from atc.k8s.reflector import retry_backoff
from atc.model.webhook_configs import VALIDATING_CONFIGS_PATH, WebhookTarget, static_webhook_configs, webhook_paths

log = logging.getLogger("atc.webhook.registration")

FIELD_MANAGER = "yoke.cd/atc-webhook"


class Registrar:
    """Keeps the served static webhook configurations applied."""

    def __init__(self, kube: KubeClient, settings: WebhookTarget, served_paths: set[str]) -> None:
        self._kube = kube
        self._settings = settings
        self._served = served_paths
        self._refresh = asyncio.Event()
        self._refresh.set()
        self.applied = asyncio.Event()

    def configs(self) -> list[dict[str, Any]]:
        """The static configurations whose every path is served here."""
        return [config for config in static_webhook_configs(self._settings) if webhook_paths(config) <= self._served]

    async def apply(self) -> list[str]:
        """Apply them once; returns their names."""
        names = []
        for config in self.configs():
            name = config["metadata"]["name"]
            await self._kube.apply(f"{VALIDATING_CONFIGS_PATH}/{name}", config, field_manager=FIELD_MANAGER, force=True)
            names.append(name)
        return names

    def refresh(self) -> None:
        """Apply them again soon (the CA changed)."""
        self._refresh.set()

    async def run(self) -> None:
        """Apply now, retrying with backoff, then again after every ``refresh``; until cancelled."""
        backoff = retry_backoff()
        while True:
            await self._refresh.wait()
            self._refresh.clear()
            try:
                names = await self.apply()
            except (KubeError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("failed to apply webhook configurations", extra={"error": str(exc), "retryIn": delay})
                self._refresh.set()
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.applied.set()
            log.info("webhook configurations applied", extra={"configs": names})
