"""What a connect test tells of a side's store: its default encryption, whether its ETags can be
MD5s, which objects carry checksums, how uploads are written, and so the evidence a transfer will
have (evidence.py). Two requests at most beside the listing: GetBucketEncryption, and a HeadObject
of one listed object. And where the side's credentials come from (credentials)."""

from __future__ import annotations

import datetime
from collections import Counter

from . import evidence, s3


def credentials(side) -> str:
    """The connect test's line on the side's credentials: which of botocore's providers gave them
    (its `method`), and when they expire. Obtaining them runs a profile's credential_process, or
    reads its SSO token, once (botocore keeps them); a failure raises (s3.describe_error names it)."""
    creds = s3.credentials(side)
    if creds is None:
        return credentials_line(side, None, None, "")
    return credentials_line(side, creds.method, getattr(creds, "_expiry_time", None), creds.access_key or "")


def credentials_line(side, method: str | None, expiry: datetime.datetime | None, key_id: str) -> str:
    """Pure: `credentials: <where> (<provider method>)`, the key id's last four characters (never the
    whole id, never the secret) and, for credentials that refresh, when they expire."""
    if side.has_credentials:
        where = "static keys from config.yaml"
    elif method is None:
        return (f"credentials: none found by the AWS credential chain; set {side.name}.access_key and "
                f"secret_access_key, or {side.name}.profile")
    elif side.profile:
        where = f"profile {side.profile!r} ({method})"
    else:
        where = f"AWS credential chain ({method})"
    if len(key_id) >= 16:
        where += f", key id ****{key_id[-4:]}"
    if expiry is not None:
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(datetime.timezone.utc)
        where += f", expires {expiry:%Y-%m-%d %H:%M:%S} UTC"
    return f"credentials: {where}"


def bucket_encryption(side, client) -> tuple[str, str]:
    """(the bucket's default encryption, as said) and its KMS key ("" none); ("", why) when it
    cannot be read (not allowed, or a store without the call, such as a Snowball)."""
    try:
        got = client.get_bucket_encryption(Bucket=side.bucket)
    except Exception as exc:  # noqa: BLE001 - told as unknown, with the reason
        code = s3.error_code(exc)
        if code == "ServerSideEncryptionConfigurationNotFoundError":
            return "none", ""
        return "", code or type(exc).__name__
    rules = got.get("ServerSideEncryptionConfiguration", {}).get("Rules") or [{}]
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    return str(default.get("SSEAlgorithm") or "none"), str(default.get("KMSMasterKeyID") or "")


def lines(side, client, checksums: Counter, objects: int, sample: str | None) -> list[str]:
    """The connect test's lines on evidence. checksums: the algorithms the listing named, counted;
    sample: one listed key, whose HeadObject says whether objects are encrypted so that their
    ETags are no MD5s."""
    enc, key = bucket_encryption(side, client)
    out = [f"Default encryption: {enc}{f' (KMS key {key})' if enc and key else ''}" if enc else
           f"Default encryption: unknown ({key})"]
    opaque_why = []
    if not side.etag_is_md5:
        opaque_why.append(f"{side.name}.etag_is_md5: false")
    if enc in evidence.OPAQUE_SSE:
        opaque_why.append(f"default encryption {enc}")
    if side.name == "destination" and side.writes.sse in evidence.OPAQUE_SSE:
        opaque_why.append(f"destination.sse: {side.writes.sse}")
    if sample is not None and not side.is_snow:
        try:
            got = s3.head(side, client, sample)
            if got is not None and got.sse in evidence.OPAQUE_SSE:
                opaque_why.append(f"{sample!r} is encrypted with {got.sse}")
        except Exception:  # noqa: BLE001 - the listing already showed the bucket can be read
            pass
    out.append("ETags: no MD5s of the data (" + "; ".join(opaque_why) + ")" if opaque_why else
               "ETags: can be MD5s of the data (each is compared with the bytes)")
    named = sum(checksums.values())
    out.append(f"Checksums: {named} of {objects} objects carry one" +
               (" (" + ", ".join(f"{a} {n}" for a, n in checksums.most_common()) + ")" if named else ""))
    if side.name == "destination":
        out.append(f"Uploads: {side.writes.describe()}")
    out.append("Evidence: " + _evidence(side, bool(opaque_why), named, objects))
    return out


def _evidence(side, opaque: bool, named: int, objects: int) -> str:
    if side.name == "source":
        rest = "size (their ETags are no MD5s)" if opaque else "MD5 or multipart ETag"
        if named and named == objects:
            return "checksum (every object carries one)"
        return f"checksum for the {named} objects that carry one, else {rest}" if named else rest
    base = "content-md5 (the Content-MD5 each upload carries)" if opaque else "MD5 or multipart ETag"
    return (f"checksum where the store keeps one for what is uploaded (AWS S3 keeps CRC64NVME), else {base}"
            if not side.is_snow else base)
