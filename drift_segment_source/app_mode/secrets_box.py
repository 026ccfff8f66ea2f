"""Secrets at rest (org tokens, write keys): Fernet with a key derived from ``SECRET_KEY``."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# A distinct label per purpose: the same SECRET_KEY also signs sessions and OAuth state,
# and a key derived for one use must not be usable for another.
PURPOSE = b"drift-segment-source/secrets-at-rest/v1"


class SecretUnreadable(ValueError):
    """A stored secret cannot be decrypted (SECRET_KEY changed, or the value is damaged)."""


class SecretBox:
    """Encrypts and decrypts short secrets; ciphertexts are authenticated and timestamped."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, plaintext: str) -> bytes:
        """The ciphertext of ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode())

    def open(self, ciphertext: bytes) -> str:
        """The plaintext of a value :meth:`seal` made; SecretUnreadable otherwise."""
        try:
            return self._fernet.decrypt(bytes(ciphertext)).decode()
        except InvalidToken:
            raise SecretUnreadable("stored secret cannot be decrypted "
                                   "(was SECRET_KEY changed?)") from None
