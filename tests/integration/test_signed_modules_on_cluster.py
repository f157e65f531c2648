"""``atc-webhook`` with ``MODULE_VERIFICATION_KEYS_PATH`` behind the real API server: yoke's denial texts.

The webhook (a subprocess registered with kube-apiserver by the harness) loads an Ed25519 key file.
An Airway or Flight naming an unsigned module is denied with the exact strings yoke's own tests
compare; the same module signed by ``yoke sign`` (the real CLI) is admitted; an allow-listed URL
skips the check. Module URLs are local files, which the webhook reads directly.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yokecli
from cryptography.hazmat.primitives.asymmetric import ed25519
from harness import Harness
from signing import private_pem, public_pem
from support import open_crd_spec

from atc.k8s.client import KubeError
from atc.k8s.crds import AIRWAYS_PATH, install_yoke_crds

pytestmark = pytest.mark.cluster
UNSIGNED = "failed to verify module: module is unsigned"


def airway(url: str) -> dict[str, Any]:
    group = f"t{secrets.token_hex(4)}.examples.com"
    template = open_crd_spec(group, "Backend")
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Airway",
        "metadata": {"name": f"backends.{group}"},
        "spec": {"wasmUrls": {"flight": url}, "template": template},
    }


def flight(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "yoke.cd/v1alpha1",
        "kind": "Flight",
        "metadata": {"name": f"f-{secrets.token_hex(3)}"},
        "spec": {"wasmUrl": url, "input": "{}"},
    }


async def denial(harness: Harness, path: str, body: dict[str, Any]) -> str:
    with pytest.raises(KubeError) as refused:
        await harness.kube.request("POST", path, body=body, query={"dryRun": "All"})
    return refused.value.message


async def test_the_webhook_denies_unsigned_modules_with_yokes_words(
    harness: Harness, build_flight: Callable[[str], Path], tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    keys, private = tmp_path / "keys.json", tmp_path / "private.pem"
    keys.write_text(json.dumps([public_pem(key)]))
    private.write_text(private_pem(key))
    unsigned, signed = tmp_path / "flights" / "basic.wasm", tmp_path / "signed" / "basic.wasm"
    unsigned.parent.mkdir()
    signed.parent.mkdir()
    unsigned.write_bytes(build_flight("basic").read_bytes())
    await asyncio.to_thread(yokecli.run_yoke, ["sign", "-key", str(private), "-o", str(signed), str(unsigned)])
    await install_yoke_crds(harness.kube)
    await harness.start_webhook(MODULE_VERIFICATION_KEYS_PATH=str(keys))
    flights = f"/apis/yoke.cd/v1alpha1/namespaces/{harness.namespace}/flights"

    message = await denial(harness, AIRWAYS_PATH, airway(str(unsigned)))
    assert message == (
        f'admission webhook "airways.yoke.cd" denied the request: failed to validate flight url "{unsigned}": '
        f"{UNSIGNED}"
    )
    assert await denial(harness, flights, flight(str(unsigned))) == (
        f'admission webhook "flights.yoke.cd" denied the request: {UNSIGNED}'
    )
    admitted = await harness.kube.request("POST", AIRWAYS_PATH, body=airway(str(signed)), query={"dryRun": "All"})
    assert admitted["spec"]["wasmUrls"]["flight"] == str(signed)


async def test_an_allow_listed_url_skips_the_signature_check(
    harness: Harness, build_flight: Callable[[str], Path], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([public_pem(ed25519.Ed25519PrivateKey.generate())]))
    unsigned = tmp_path / "basic.wasm"
    unsigned.write_bytes(build_flight("basic").read_bytes())
    await install_yoke_crds(harness.kube)
    await harness.start_webhook(MODULE_VERIFICATION_KEYS_PATH=str(keys), MODULE_ALLOW_LIST=f"{tmp_path}/*.wasm")
    admitted = await harness.kube.request("POST", AIRWAYS_PATH, body=airway(str(unsigned)), query={"dryRun": "All"})
    assert admitted["metadata"]["name"].startswith("backends.")
