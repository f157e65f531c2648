"""Entry point of ``atc-controller`` (the console script): read settings, set up logging, run ``app.run``.

Exit codes: 0 after a graceful shutdown, 1 on an unexpected error or when the docker config Secret
(``DOCKER_CONFIG_SECRET_NAME``) cannot be read at start (one line on stderr), 2 for bad settings (a bad
value, a missing kubeconfig or CA file, unusable module verification keys, an unusable kubeconfig):
one line on stderr naming the setting and the expected form, no traceback.

The service's modules are imported inside ``main``, with the cyclic garbage collector paused
(``atc.service.startup``): importing them is most of the start-up time (docs/design.md, "Start-up").
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from atc.service.startup import gc_paused

DESCRIPTION = "Air Traffic Controller: reconciles Airways, their instances, Flights and ClusterFlights."


def main(argv: Sequence[str] | None = None) -> int:
    with gc_paused():
        import asyncio
        import logging

        from atc.service.logs import configure_logging
        from atc.service.runtime import startup_exit_code
        from atc.service.settings import SettingsError, check_startup, load_settings

        from .settings import ControllerSettings

        try:
            settings = load_settings(ControllerSettings, argv, prog="atc-controller", description=DESCRIPTION)
            check_startup(settings)
        except SettingsError as exc:
            print(f"atc-controller: {exc}", file=sys.stderr)
            return 2
        from . import app

    configure_logging(settings.log_format, logging.DEBUG if settings.verbose else logging.INFO)
    logging.getLogger("atc.controller").info("starting atc-controller", extra={"concurrency": settings.concurrency})
    try:
        return asyncio.run(app.run(settings))
    except Exception as exc:
        code = startup_exit_code("atc-controller", exc)
        if code is None:
            logging.getLogger("atc.controller").exception("program exiting with error")
        return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
