"""Optional payload capture, encrypted per data subject (crypto-shredding).

:func:`encrypt_payload` seals a payload with AES-256-GCM under the subject's own key; the record
keeps only the ciphertext, the subject's pseudonym (``kid``) and the key generation. Erasing the
subject destroys that key: the ciphertext stays in the log (which still verifies byte for byte)
and :func:`read_payload` answers :data:`ERASED` for it from then on.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from servecore.audit.errors import AuditKeyError
from servecore.audit.keys import AuditKeys

ERASED: Literal["erased"] = "erased"
ALGORITHM = "A256GCM"
_AAD = b"servecore-audit-payload\x00"


def encrypt_payload(
    keys: AuditKeys, subject: str, data: bytes, *, max_bytes: int | None = None
) -> dict[str, Any]:
    """The record fragment for *data* sealed under *subject*'s key.

    With *max_bytes*, longer payloads are cut to that size first and the fragment says so
    (``truncated_from``), so the cut is on record.
    """
    truncated_from = None
    if max_bytes is not None and len(data) > max_bytes:
        truncated_from, data = len(data), data[:max_bytes]
    pid = keys.subject_pid(subject)
    generation, key = keys.subject_key(subject, create=True)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, data, _AAD + pid.encode() + generation)
    out: dict[str, Any] = {
        "alg": ALGORITHM,
        "kid": pid,
        "gen": generation.hex(),
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(sealed).decode(),
    }
    if truncated_from is not None:
        out["truncated_from"] = truncated_from
    return out


def read_payload(keys: AuditKeys, fragment: Mapping[str, Any]) -> bytes | Literal["erased"]:
    """The plaintext of a fragment from :func:`encrypt_payload`, or :data:`ERASED` when its
    subject's key (that generation of it) is gone. A damaged fragment raises
    :class:`AuditKeyError`."""
    try:
        if fragment["alg"] != ALGORITHM:
            raise AuditKeyError(f"unknown payload algorithm {fragment['alg']!r}")
        pid, generation = str(fragment["kid"]), bytes.fromhex(fragment["gen"])
        nonce = base64.b64decode(fragment["nonce"], validate=True)
        sealed = base64.b64decode(fragment["ct"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise AuditKeyError(f"not a payload fragment: {exc}") from None
    found = keys.key_by_pid(pid)
    if found is None or found[0] != generation:
        return ERASED
    try:
        return AESGCM(found[1]).decrypt(nonce, sealed, _AAD + pid.encode() + generation)
    except InvalidTag:
        raise AuditKeyError("payload does not decrypt: it was altered") from None
