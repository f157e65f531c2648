"""Settings of the controller service (``atc-controller --help`` lists them).

Read by ``atc_controller.__main__``; names follow yoke's ATC where it has one
and controller-runtime's conventions for what yoke lacks (probes, metrics,
leader election).
"""

from __future__ import annotations

import os

from pydantic import Field

from atc.service.settings import CommonSettings


class ControllerSettings(CommonSettings):
    """Everything the controller reads from flags and environment."""

    concurrency: int = Field(
        default_factory=lambda: 4 * (os.cpu_count() or 1),
        ge=1,
        description="reconcile workers (a reconcile mostly waits on the API server: 4 per CPU by default)",
    )
    health_port: int = Field(8081, ge=0, le=65535, description="port of /healthz and /readyz (0 disables)")
    metrics_port: int = Field(8080, ge=0, le=65535, description="port of /metrics (0 disables)")
    leader_elect: bool = Field(True, description="hold a coordination.k8s.io Lease before reconciling")
    lease_duration_seconds: float = Field(15.0, gt=0, description="leader election lease duration")
    renew_deadline_seconds: float = Field(10.0, gt=0, description="how long the leader keeps trying to renew")
    retry_period_seconds: float = Field(2.0, gt=0, description="interval between leader election attempts")
    leader_election_namespace: str = Field(
        "", description="namespace of the leader election Lease (default SVC_NAMESPACE)"
    )
    leader_election_id: str = Field("atc-controller", description="name of the leader election Lease")
    resync_seconds: float = Field(600.0, ge=0, description="re-check every instance this often (0 disables)")
    tls_ca_cert: str = Field("", description="CA certificate of the webhook; its bytes become CRD conversion caBundles")
    disable_custom_readiness: bool = Field(False, description="ignore readiness rules from labelled ConfigMaps")
