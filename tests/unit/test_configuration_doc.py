"""docs/configuration.md must match the settings classes it is generated from (``tools/configdoc.py``)."""

from __future__ import annotations

import configdoc

from atc.service.settings import CommonSettings, env_name, flag_name
from atc_controller.settings import ControllerSettings
from atc_webhook.settings import WebhookSettings


def test_configuration_page_is_up_to_date() -> None:
    written = configdoc.PAGE.read_text() if configdoc.PAGE.exists() else ""
    assert written == configdoc.render(), (
        "docs/configuration.md is out of date with the settings classes; regenerate it with: " + configdoc.COMMAND
    )


def test_every_setting_of_both_services_is_documented() -> None:
    page = configdoc.render()
    for model in (CommonSettings, ControllerSettings, WebhookSettings):
        for field in model.model_fields:
            assert f"| `{flag_name(field)}` | `{env_name(field)}` |" in page, field
