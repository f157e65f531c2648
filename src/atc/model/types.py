"""The one type for JSON objects: Kubernetes objects, admission reviews, flight output, API answers.

Every module that handles such an object as a plain dictionary imports ``Object`` from here.
"""

from __future__ import annotations

from typing import Any, TypeAlias

Object: TypeAlias = dict[str, Any]
