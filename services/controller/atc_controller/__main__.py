"""Entry point of ``atc-controller``: read settings, set up logging, run the controller (``app.run``)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from atc.logs import configure_logging
from atc.settings import SettingsError, load_settings

from . import app
from .settings import ControllerSettings

DESCRIPTION = "Air Traffic Controller: reconciles Airways, their instances, Flights and ClusterFlights."


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(ControllerSettings, argv, prog="atc-controller", description=DESCRIPTION)
    except SettingsError as exc:
        print(f"atc-controller: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, logging.DEBUG if settings.verbose else logging.INFO)
    logging.getLogger("atc.controller").info("starting atc-controller", extra={"concurrency": settings.concurrency})
    try:
        return asyncio.run(app.run(settings))
    except Exception:
        logging.getLogger("atc.controller").exception("program exiting with error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
