"""A refusal is a configuration problem, not a per-object retry.

An upload refused by a bucket policy (a bucket that demands encryption or an ACL), an IAM policy, a
KMS key (disabled, or its policy), or a setting the store does not take fails the same way for
every object: trying each object again only hides the cause. A side that sees REFUSAL_STREAK
refusals in a row, with no success between (of more than one object, unless nothing succeeded yet),
stops with exit 2 and one line that names the endpoint, the S3 error and the settings that usually
fix it. What was staged stays staged.
"""

from __future__ import annotations

import re

from .errors import ConfigError

REFUSAL_STREAK = 3
# S3 error codes that no retry of the same request changes; KMS.* (a KMS key that cannot be used)
# is matched apart
CODES = ("AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId", "SignatureDoesNotMatch",
         "InvalidStorageClass", "AccessControlListNotSupported", "InvalidEncryptionAlgorithmError",
         "InvalidSecurity", "NotSignedUp", "UnauthorizedAccess")
_CODE = re.compile(r"\b(KMS\.[A-Za-z]+|" + "|".join(CODES) + r")\b")


class Refused(ConfigError):
    """The side stops: its store refuses what it must do (exit 2)."""


def code_of(error: str) -> str | None:
    """The refusal an error message (s5cmd's, or s3.describe_error's) names, or None."""
    m = _CODE.search(error or "")
    return m.group(1) if m else None


def advice(side, code: str) -> str:
    """The settings that usually fix a refusal of this code on this side."""
    name = side.name
    if code.startswith("KMS."):
        if name == "source":
            return "the objects' KMS key cannot be used to read them: enable it, or grant kms:Decrypt on it"
        return ("the KMS key cannot be used: enable it, fix its key policy (kms:GenerateDataKey), or set "
                "destination.sse_kms_key_id to a key that can")
    if code == "InvalidStorageClass":
        return f"the store does not take storage class {side.writes.storage_class}: change destination.storage_class"
    if code == "AccessControlListNotSupported":
        return "the bucket has ACLs disabled (Object Ownership: bucket owner enforced): remove destination.acl"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurity", "NotSignedUp"):
        return f"the credentials are not valid there: check {name}.access_key, secret_access_key and region"
    if name == "source":
        return ("check that the source credentials may read the objects (s3:GetObject), and kms:Decrypt on the "
                "key of KMS-encrypted objects")
    return ("a bucket policy, an IAM policy or a KMS key policy refuses the upload: a bucket that demands "
            "encryption needs destination.sse (aws:kms, and destination.sse_kms_key_id for a given key), one "
            "that demands an ACL needs destination.acl (e.g. bucket-owner-full-control); else check that the "
            "credentials may write (s3:PutObject, and kms:GenerateDataKey for SSE-KMS)")


class Streak:
    """Refusals in a row on one side (thread-safe enough: counts only go up between successes)."""

    def __init__(self, side, what: str) -> None:
        self.side = side
        self.what = what  # "uploads", "reads"
        self.count = 0
        self.keys: set[str] = set()
        self.succeeded_once = False
        self.last: tuple[str, str, str] | None = None  # (key, code, error)
        self.stopping = False  # tripped: the side stops, and nothing after changes that

    def succeeded(self) -> None:
        if self.stopping:
            return
        self.succeeded_once = True
        self.count = 0
        self.keys.clear()

    def failed(self, key: str, error: str) -> None:
        if self.stopping:
            return
        code = code_of(error)
        if code is None:
            self.count = 0
            self.keys.clear()
            return
        self.count += 1
        self.keys.add(key)
        self.last = (key, code, error)
        # enough refusals in a row to stop: of several objects, or of one before anything worked
        # (one object refused among many that move is set aside like any other failure)
        self.stopping = self.count >= REFUSAL_STREAK and (len(self.keys) > 1 or not self.succeeded_once)

    @property
    def tripped(self) -> bool:
        return self.stopping

    def check(self) -> None:
        """Raise Refused, naming the endpoint, the error and the fix, when tripped."""
        if not self.tripped or self.last is None:
            return
        key, code, error = self.last
        where = self.side.endpoint or f"AWS {self.side.region}"
        error = " ".join(error.split()).split(", request id")[0]  # S3's IDs say nothing to an operator
        raise Refused(f"the {self.side.name} at {where} refuses {self.what} ({self.count} in a row, the last of "
                      f"{key!r}): {error[:300]}; {advice(self.side, code)}. Staged data is kept; fix it, then start "
                      "again")
