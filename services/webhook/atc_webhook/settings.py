"""Settings of the webhook service (``atc-webhook --help`` lists them).

Read by ``atc_webhook.__main__``; names follow yoke's ATC (``PORT``, ``TLS_*``,
``SVC_*``) where it has one. ``TLS_GENERATE_DIR``, ``REGISTER_WEBHOOKS`` and
``WEBHOOK_URL`` (shared with the controller) are for local and test runs,
where no chart provides certificates and webhook configurations.
"""

from __future__ import annotations

from pydantic import Field

from atc.service.settings import CommonSettings


class WebhookSettings(CommonSettings):
    """Everything the webhook reads from flags and environment."""

    port: int = Field(3000, ge=1, le=65535, description="HTTPS listen port")
    address: str = Field("0.0.0.0", description="HTTPS listen address")
    tls_ca_cert: str = Field("", description="CA certificate file; its bytes become every caBundle")
    tls_server_cert: str = Field("", description="serving certificate file (reloaded when it changes)")
    tls_server_key: str = Field("", description="serving key file (reloaded when it changes)")
    tls_generate_dir: str = Field(
        "",
        description="for local and test runs: when the TLS files are missing, generate a CA and a serving "
        "certificate (SANs 127.0.0.1, localhost, <SVC_NAME>.<SVC_NAMESPACE>.svc) into this directory as ca.crt, "
        "server.crt and server.key; TLS_* settings left empty default to those files",
    )
    tls_reload_seconds: float = Field(
        5.0, gt=0, le=3600, description="how often the certificate and key files are checked for changes"
    )
    register_webhooks: bool = Field(
        False,
        description="server-side apply the ValidatingWebhookConfigurations this service serves at startup (and "
        "again when the CA changes); never deleted on shutdown. For local and test runs: a chart owns them otherwise",
    )
    cache_sync_wait_seconds: float = Field(
        5.0,
        ge=0,
        le=9,
        description="how long an admission request that needs the caches waits for them to sync after a start "
        "before it fails (HTTP 503)",
    )
    shutdown_timeout_seconds: float = Field(
        10.0, gt=0, description="on SIGTERM, how long in-flight requests and pending Events get to finish"
    )
    max_request_mib: int = Field(
        32,
        ge=1,
        le=1024,
        description="largest request body accepted, in MiB (admission reviews hold one or two objects of at most "
        "about 1.5 MiB each; conversion reviews may hold many); larger bodies get HTTP 413",
    )
    signal_queue_size: int = Field(
        1000, ge=1, description="child-changed Events waiting to be written before admission waits for room"
    )
