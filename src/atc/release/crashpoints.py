"""Named points where a test can kill the process, to prove a reconcile resumes from any of them.

``crash_point(name)`` does nothing unless the environment variable ``ATC_CRASH_POINT`` names that
point; then the process exits at once with status 137 (as after SIGKILL), no clean-up, no flush.
The takeoff calls it between its steps (``atc.release.takeoff``); ``tests/e2e/test_crash_points.py`` starts
the controller with each point in turn and checks the next reconcile repairs everything. Setting it
in production is a way to kill the controller, nothing more.
"""

from __future__ import annotations

import os

CRASH_POINTS = ("after_pending_revision", "after_apply", "after_prune", "after_activate")


def crash_point(name: str) -> None:
    if os.environ.get("ATC_CRASH_POINT") == name:
        os._exit(137)
