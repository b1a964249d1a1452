"""Signed storage URLs: the sandbox's stand-in for S3 presigning.

Storage needs no token: the signature is the permission, as with S3. A URL carries
``X-Sandbox-Expires`` (epoch seconds) and ``X-Sandbox-Signature`` = HMAC-SHA256, under the
database's secret, of the method, the object and the expiry (and, for a part, the
multipart upload id and part number), so it cannot be altered or reused elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from gcbatch.sandbox.store import UploadRow


def part_message(upload_pk: str, s3_id: str, number: int, expires: int | str) -> str:
    return f"PUT\n{upload_pk}\n{s3_id}\n{number}\n{expires}"


def object_message(key: str, expires: int | str) -> str:
    return f"GET\n{key}\n{expires}"


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, message: str) -> str:
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def valid(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)

    def part_url(self, base: str, up: UploadRow, number: int, expires: int) -> str:
        """Where a client PUTs part ``number`` of ``up`` until ``expires``."""
        sig = self.sign(part_message(up.pk, up.s3_upload_id, number, expires))
        query = urlencode(
            [
                ("uploadId", up.s3_upload_id),
                ("partNumber", str(number)),
                ("X-Sandbox-Expires", str(expires)),
                ("X-Sandbox-Signature", sig),
            ]
        )
        return f"{base}/_storage/uploads/{up.pk}?{query}"

    def object_url(self, base: str, key: str, expires: int) -> str:
        """Where a client GETs the protected object ``key`` until ``expires``."""
        sig = self.sign(object_message(key, expires))
        query = urlencode([("X-Sandbox-Expires", str(expires)), ("X-Sandbox-Signature", sig)])
        return f"{base}/_storage/protected/{key}?{query}"
