"""Entry point of ``atc-webhook``: read settings, set up logging, serve admission over HTTPS."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from atc.logs import configure_logging
from atc.settings import SettingsError, load_settings

from .settings import WebhookSettings

DESCRIPTION = "Air Traffic Controller admission and conversion webhooks."


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(WebhookSettings, argv, prog="atc-webhook", description=DESCRIPTION)
    except SettingsError as exc:
        print(f"atc-webhook: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    logging.getLogger("atc.webhook").info("settings loaded", extra={"port": settings.port})
    return 0


if __name__ == "__main__":
    sys.exit(main())
