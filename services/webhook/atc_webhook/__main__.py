"""Entry point of ``atc-webhook``: read settings, set up logging, serve admission over HTTPS until SIGTERM.

The service runs on uvloop (with uvicorn's httptools parser, ``atc_webhook.server``): together they take
about a third less CPU per admission request than asyncio's loop and h11 (``bench/admission.py``).
Exit codes: 0 after a graceful shutdown, 1 when TLS cannot be set up or the docker config Secret
(``DOCKER_CONFIG_SECRET_NAME``) cannot be read at start, 2 for bad settings (a bad value, a missing
kubeconfig or TLS file, unusable module verification keys, an unusable kubeconfig): one line on
stderr naming the setting and the expected form, no traceback. Called as the ``atc-webhook`` console
script or ``python -m atc_webhook``.

The service's modules are imported inside ``main``, with the cyclic garbage collector paused
(``atc.service.startup``): importing them is most of the start-up time (docs/design.md, "Start-up").
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from atc.service.startup import gc_paused

DESCRIPTION = "Air Traffic Controller admission and conversion webhooks."
log = logging.getLogger("atc.webhook")


def main(argv: Sequence[str] | None = None) -> int:
    with gc_paused():
        import asyncio

        import uvloop

        from atc.service.logs import configure_logging
        from atc.service.runtime import startup_exit_code
        from atc.service.settings import SettingsError, check_startup, load_settings

        from .settings import WebhookSettings

        try:
            settings = load_settings(WebhookSettings, argv, prog="atc-webhook", description=DESCRIPTION)
            check_startup(settings)
        except SettingsError as exc:
            print(f"atc-webhook: {exc}", file=sys.stderr)
            return 2
        from .server import serve
        from .tls import TlsSetupError

    configure_logging(settings.log_format)
    log.info("starting", extra={"address": settings.address, "port": settings.port})
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings))
    except TlsSetupError as exc:
        log.error("cannot serve TLS", extra={"error": str(exc)})
        return 1
    except Exception as exc:
        code = startup_exit_code("atc-webhook", exc)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())
