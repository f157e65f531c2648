"""What the conversion webhook carries over from the objects the API server sent (``keep_from_original``).

The API server refuses a converted object without ``metadata``, and server-side apply sends it objects
without any (the fields one manager owns); a Go converter then drops the empty metadata. ``status``
is kept as yoke means to. Everything else is the converter's.
"""

from __future__ import annotations

from atc.model.types import Object
from atc_webhook.conversion import keep_from_original


def test_metadata_the_converter_dropped_comes_back_from_the_request() -> None:
    original: Object = {"apiVersion": "examples.com/v1", "kind": "Backend", "metadata": {"name": "c4ts"}}
    converted: Object = {"apiVersion": "examples.com/v2", "kind": "Backend", "spec": {"img": "x"}}
    keep_from_original(original, converted)
    assert converted == {
        "apiVersion": "examples.com/v2",
        "kind": "Backend",
        "metadata": {"name": "c4ts"},
        "spec": {"img": "x"},
    }
    converted["metadata"]["name"] = "changed"
    assert original["metadata"]["name"] == "c4ts"  # a copy, not the request's own object


def test_an_object_sent_without_metadata_gets_empty_metadata() -> None:
    original: Object = {"apiVersion": "examples.com/v1", "kind": "Backend", "spec": {"image": "x"}}
    converted: Object = {"apiVersion": "examples.com/v2", "kind": "Backend", "spec": {"img": "x"}}
    keep_from_original(original, converted)
    assert converted["metadata"] == {}


def test_the_converters_metadata_and_fields_stay_and_status_is_kept() -> None:
    original: Object = {"metadata": {"name": "c4ts", "labels": {"a": "1"}}, "status": {"phase": "Ready"}}
    converted: Object = {"metadata": {"name": "c4ts", "labels": {"a": "2"}}, "status": {"phase": "lost"}}
    keep_from_original(original, converted)
    assert converted == {"metadata": {"name": "c4ts", "labels": {"a": "2"}}, "status": {"phase": "Ready"}}


def test_metadata_that_is_not_an_object_is_replaced() -> None:
    converted: Object = {"metadata": None}
    keep_from_original({"metadata": {"name": "c4ts"}}, converted)
    assert converted["metadata"] == {"name": "c4ts"}
