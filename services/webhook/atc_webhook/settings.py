"""Settings of the webhook service (``atc-webhook --help`` lists them).

Read by ``atc_webhook.__main__``; names follow yoke's ATC (``PORT``, ``TLS_*``).
"""

from __future__ import annotations

from pydantic import Field

from atc.settings import CommonSettings


class WebhookSettings(CommonSettings):
    """Everything the webhook reads from flags and environment."""

    port: int = Field(3000, ge=1, le=65535, description="HTTPS listen port")
    address: str = Field("0.0.0.0", description="HTTPS listen address")
    tls_ca_cert: str = Field("", description="CA certificate file; its bytes become every caBundle")
    tls_server_cert: str = Field("", description="serving certificate file (reloaded when it changes)")
    tls_server_key: str = Field("", description="serving key file (reloaded when it changes)")
