"""The errors raised while finding, fetching and verifying flight modules.

Raised by ``atc.wasm.sources`` (fetching), ``atc.wasm.oci`` (registries),
``atc.wasm.checksum`` (verification), ``atc.wasm.signatures`` (signatures) and the
module cache (allow-list); callers such as the reconcilers and the admission webhook
catch ``ModuleError`` and show ``str(error)`` to users, so each message is the text
yoke would print::

    ModuleError
    ├── ModuleFetchError        the bytes could not be obtained (any scheme)
    ├── ChecksumMismatchError   the bytes do not hash to the expected sha256
    ├── ModuleVerificationError the module's signature is missing or does not verify
    └── ModuleNotAllowedError   the URL matches no glob of MODULE_ALLOW_LIST
"""

from __future__ import annotations


class ModuleError(Exception):
    """Base of every error about a flight module."""


class ModuleFetchError(ModuleError):
    """A module's bytes could not be read, downloaded, pulled or decompressed."""


class ChecksumMismatchError(ModuleError):
    """The module's sha256 differs from the expected checksum."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f'cannot verify module against expected checksum: wanted "{expected}" but got "{actual}"')
        self.expected = expected
        self.actual = actual


class ModuleNotAllowedError(ModuleError):
    """The module URL is not matched by the configured allow-list."""

    def __init__(self, url: str) -> None:
        super().__init__(f'module "{url}" not allowed')
        self.url = url


class ModuleVerificationError(ModuleError):
    """The module is not signed by one of MODULE_VERIFICATION_KEYS_PATH's keys: ``failed to verify module: ...``.

    ``reason`` is yoke's text without the prefix (``module is unsigned``, ``invalid signature``, ...).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"failed to verify module: {reason}")
        self.reason = reason
