"""Encryption of sensitive view columns when AGENTLEDGER_CIPHER_KEY is set.

The event store encrypts whole event payloads (eventsourcing's AES-GCM); the views would
otherwise hold the same prompts, outputs and transcripts in plain text in the same
database. `AesSealer` seals those columns with the same key; queries unseal them.
"""

from __future__ import annotations

import base64

from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

__all__ = ["AesSealer"]

_PREFIX = "aes1:"


class AesSealer:
    """AES-GCM for text columns: `aes1:<base64>`; plain text passes `unseal` unchanged
    (views written before the key was set stay readable)."""

    def __init__(self, key: str) -> None:
        self._cipher = AESCipher(Environment(env={"CIPHER_KEY": key}))

    def seal(self, text: str) -> str:
        return _PREFIX + base64.b64encode(self._cipher.encrypt(text.encode())).decode()

    def unseal(self, text: str) -> str:
        if not text.startswith(_PREFIX):
            return text
        return self._cipher.decrypt(base64.b64decode(text[len(_PREFIX) :])).decode()
