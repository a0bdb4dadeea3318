"""boto3 clients for a side (endpoint, TLS, credentials, retries), streamed listings, error naming.

boto3 is imported on first use, not with this module: it costs about 0.25 s of CPU that the
scripts which never talk to S3 (status.py, reset.py) do without."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import warnings
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

from . import tls
from .config import Side, Settings
from .errors import ConfigError, ConnectError, S5jError

log = logging.getLogger("s5jtransfer.s3")
T = TypeVar("T")

# An endpoint that is not verified (a Snowball's self-signed certificate, or verify_tls: false)
# is named in one warning per start (tls.start_warning); silence urllib3's per-request warning
# so it does not bury the log.
warnings.filterwarnings("ignore", message="Unverified HTTPS request")


class Obj(NamedTuple):
    """An object as a listing shows it (four fields, so that a listing streams into the index as it
    comes: index.load_listing)."""

    key: str  # relative to the side's prefix
    size: int
    etag: str  # without quotes
    # the additional checksum a listing names, when it is of the whole object (its value takes a
    # HeadObject: evidence.py); "" none
    checksum: str = ""

    @property
    def sse(self) -> str:
        return ""  # a listing says nothing of encryption

    @property
    def sums(self) -> tuple:
        return ()  # ... nor of a checksum's value


class Answer(NamedTuple):
    """An object as a HeadObject (or CompleteMultipartUpload) answers: an Obj's fields, and"""

    key: str
    size: int
    etag: str
    checksum: str
    # the server-side encryption ("aws:kms", "aws:kms:dsse", "AES256", "SSE-C"; "" none or not said)
    sse: str
    # the additional checksums of the whole object: ((algorithm, value as S3 writes it), ...)
    sums: tuple[tuple[str, str], ...]


def api_endpoint(side: Side, index: int = 0) -> str | None:
    """The endpoint boto3 talks to: Transfer Acceleration is listed through the regional one."""
    if not side.endpoints:
        return None
    ep = side.endpoints[index % len(side.endpoints)]
    return None if "s3-accelerate" in ep else ep


READ_TIMEOUT = 120.0  # seconds boto3 waits for an answer, per attempt
LIST_TIMEOUT = 60.0  # seconds a listing may go unanswered before a warning names the endpoint


def client(side: Side, settings: Settings | None = None, index: int = 0, pool: int = 10, probe: bool = False):
    """A boto3 S3 client for one side, with its own credentials (never os.environ writes).
    probe: short timeouts and no retries, to tell quickly whether an endpoint answers."""
    import botocore.config

    endpoint = api_endpoint(side, index)
    retries = settings.retries if settings else 10
    cfg = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 1 if probe else retries},
        connect_timeout=3 if probe else 10,
        read_timeout=5 if probe else (settings.request_timeout if settings else READ_TIMEOUT), max_pool_connections=max(10, pool),
        s3={"addressing_style": "path"} if endpoint else {},
        # Only checksum when the service requires it: Snowballs and most S3-compatible stores
        # reject or mangle the newer flexible checksums.
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
        parameter_validation=False,  # every call is built by this code; saves CPU per request
        # SigV4 everywhere, presigned URLs included (botocore would presign with the legacy
        # SigV2, which new AWS regions and Snowball devices refuse)
        signature_version="s3v4",
    )
    verify = tls_verify(side, index)
    # True: botocore's own verification (its CA store, or a profile's ca_bundle) is left as it is
    with _SESSIONS_LOCK:  # a session makes one client at a time
        return _session(side).client("s3", endpoint_url=endpoint, verify=None if verify is True else verify,
                                     config=cfg)


_SESSIONS: dict[int, tuple[Side, object]] = {}  # id(side) -> (side, its boto3 session)
_SESSIONS_LOCK = threading.Lock()
_LOADER = None  # botocore's data loader, shared by the sessions


def _classic_signers() -> None:
    """botocore's own SigV4 signers, also with awscrt installed (it is here for CRC64NVME): where
    awscrt is, botocore signs with its CRT signers, which hash each upload's payload for 0.3 ms/MB
    more CPU than botocore's (8 MiB parts, measured). The same signatures either way."""
    from botocore import auth

    auth.AUTH_TYPE_MAPS.update({"v4": auth.SigV4Auth, "v4-query": auth.SigV4QueryAuth,
                                "s3v4": auth.S3SigV4Auth, "s3v4-query": auth.S3SigV4QueryAuth})


def _session(side: Side):
    """One boto3 session per side for the process, all with one data loader: each new session
    would load and parse S3's service model and endpoint rules again (0.1-0.2 s of CPU)."""
    import boto3

    got = _SESSIONS.get(id(side))
    if got is not None and got[0] is side:
        return got[1]
    if side.has_credentials:
        session = boto3.session.Session(aws_access_key_id=side.access_key.reveal(),
                                        aws_secret_access_key=side.secret_key.reveal(),
                                        region_name=side.region)
    elif side.profile:
        session = _profile_session(side)
    else:
        session = boto3.session.Session(region_name=side.region)
    # One data loader for every session: the other side's session would parse the same JSON
    # (S3's model, the endpoint rules) again
    global _LOADER
    if _LOADER is None:
        import botocore.loaders
        _LOADER = botocore.loaders.create_loader()
        _classic_signers()
    session._session.register_component("data_loader", _LOADER)
    # Timestamps (LastModified) are never read here: keep botocore from parsing one per listed
    # object and per response with dateutil, a large share of the CPU a listing costs.
    session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    _SESSIONS[id(side)] = (side, session)
    return session


def _profile_session(side: Side):
    """The session of a side with `profile`: its credentials as the AWS SDKs resolve that profile
    (keys, credential_process, SSO, role_arn), refreshed by botocore as they expire. A profile that
    is in neither file is a ConfigError (exit 2), naming the files looked at."""
    import boto3
    import botocore.exceptions

    try:
        return boto3.session.Session(profile_name=side.profile, region_name=side.region)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"config.yaml: {side.name}.profile: there is no profile {side.profile!r} in "
                          f"{' or '.join(profile_files())}; add it ([profile {side.profile}] in the config file, or "
                          f"[{side.profile}] in the credentials file), point AWS_CONFIG_FILE / "
                          f"AWS_SHARED_CREDENTIALS_FILE at the files that hold it, or fix {side.name}.profile") from None


def profile_files(env: dict[str, str] | None = None) -> tuple[str, str]:
    """The AWS config and credentials files a profile is read from (the SDKs' own rule)."""
    env = os.environ if env is None else env
    return (os.path.expanduser(env.get("AWS_CONFIG_FILE") or "~/.aws/config"),
            os.path.expanduser(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"))


def credentials(side: Side):
    """botocore's credentials of the side's session (None: the chain found none); a profile's
    credential_process, SSO token or role is used here, once per process (botocore keeps them)."""
    with _SESSIONS_LOCK:
        session = _session(side)
    return session.get_credentials()


def tls_mode(side: Side, index: int = 0, env: dict[str, str] | None = None) -> tls.Mode:
    """How the certificate of the side's endpoint `index` is checked (tls.mode_for): what boto3
    (tls_verify) and s5cmd (s5cmd.global_args, child_env) are given. A Transfer Acceleration
    endpoint is judged as itself (AWS: verified), for s5cmd's uploads and boto3's listings alike."""
    env = os.environ if env is None else env
    url = side.endpoints[index % len(side.endpoints)] if side.endpoints else None
    return tls.mode_for(side.region, url, side.ca_bundle, side.verify_tls, env.get("AWS_CA_BUNDLE") or None)


def tls_verify(side: Side, index: int = 0) -> bool | str:
    """The `verify` of any HTTPS client for the side's endpoint `index`: a CA bundle's path,
    True (the system's CAs) or False (not verified: a Snowball without ca_bundle, verify_tls false)."""
    return tls_mode(side, index).verify


def transfer_config(part_size: int):
    """boto3's transfer manager settings for the rare objects moved through boto3 (native mode,
    keys a run file cannot carry): ranged or multipart in parts of part_size from that size on."""
    from boto3.s3.transfer import TransferConfig

    # classic: with awscrt installed (for CRC64NVME), boto3 would pick its CRT client on some EC2
    # instance types, which takes none of this client's settings (endpoint, TLS, retries)
    return TransferConfig(max_concurrency=4, multipart_chunksize=part_size, multipart_threshold=part_size,
                          preferred_transfer_client="classic")


def upload_args(side: Side) -> dict[str, str]:
    """boto3's arguments that write each object as the destination's settings say (config.Writes):
    for PutObject, CreateMultipartUpload and upload_file's ExtraArgs alike (s5cmd: upload_flags)."""
    w = side.writes
    args = {"StorageClass": w.storage_class, "ServerSideEncryption": w.sse, "SSEKMSKeyId": w.sse_kms_key_id,
            "ACL": w.acl}
    return {k: v for k, v in args.items() if v}


def iter_objects(side: Side, s3client, start_after: str = "") -> Iterator[Obj]:
    """Stream every object under the side's prefix (prefix stripped); folder markers skipped.

    A Snowball (region snow) is listed with ListObjects (v1), which every Snowball supports.
    A zero-byte key ending in '/' is a folder marker and is skipped, as the original did; a
    key ending in '/' that holds data is a real object and is kept, also the one whose key is
    the prefix itself (its relative key is '': it maps to the other side's prefix).
    botocore signs, sends and retries; the pages' objects are parsed by listing.py (a listing
    then costs about a seventh of the CPU), which leaves any page it does not expect to botocore.
    start_after (a relative key): only the keys after it, in S3's order (ListObjectsV2 StartAfter,
    ListObjects Marker).
    """
    from . import listing as fast_listing

    op = "list_objects" if side.is_snow else "list_objects_v2"
    paginator = s3client.get_paginator(op)
    fast_listing.register(s3client)
    plen = len(side.prefix)
    kwargs = {"Bucket": side.bucket, "Prefix": side.prefix}
    if start_after:
        kwargs["Marker" if side.is_snow else "StartAfter"] = side.prefix + start_after
    if side.is_snow:
        kwargs["PaginationConfig"] = {"PageSize": 1000}
    for objs in fast_listing.iter_pages(paginator.paginate(**kwargs), "ListObjects" if side.is_snow else "ListObjectsV2"):
        for key, size, etag, algo in objs:
            if size == 0 and key.endswith("/"):
                continue
            yield Obj(key[plen:], size, etag, algo)


def listing(side: Side, client_of: Callable[[], object], build: Callable[[Iterable[Obj]], T], index: int = 0,
            start_after: str = "") -> T:
    """build(every object under the side's prefix), as iter_objects yields them through
    client_of()'s boto3 client, which retries and whose errors describe_error names. An endpoint
    that takes connections and does not answer is named in a warning after LIST_TIMEOUT seconds,
    instead of leaving the side silent while boto3 waits and retries."""
    done = threading.Event()
    last = [time.monotonic()]  # when the listing last moved on

    def warn() -> None:
        while not done.wait(1.0):
            if time.monotonic() - last[0] > LIST_TIMEOUT:
                log.warning("%s endpoint %s has not answered a listing request within %gs; still waiting (with "
                            "retries, up to %gs each); check the device and the network link", side.name,
                            api_endpoint(side, index) or f"AWS {side.region}", LIST_TIMEOUT, READ_TIMEOUT)
                return

    def moving(objs: Iterable[Obj]) -> Iterator[Obj]:
        for n, o in enumerate(objs):
            if not n & 255:
                last[0] = time.monotonic()
            yield o

    watcher = threading.Thread(target=warn, daemon=True, name="listing-watch")
    watcher.start()
    try:
        return build(moving(iter_objects(side, client_of(), start_after)))
    finally:
        done.set()


def listing_any(side: Side, settings: Settings | None, build: Callable[[Iterable[Obj]], T]) -> tuple[T, int]:
    """listing() through the first of the side's endpoints that answers, and its index. A side
    with several endpoints (a Snowball cluster) is listed through any of them: each is asked
    first with a quick HeadBucket (no retries), and one that does not answer, or whose listing
    fails, is named in a warning and the next is tried. A single endpoint is listed as it is."""
    if len(side.endpoints) <= 1:
        return listing(side, lambda: client(side, settings), build), 0
    failures = []
    for i, url in enumerate(side.endpoints):
        try:
            client(side, settings, index=i, probe=True).head_bucket(Bucket=side.bucket)
            return listing(side, lambda i=i: client(side, settings, index=i), build, index=i), i
        except Exception as exc:  # noqa: BLE001 - the next endpoint is tried
            why = describe_error(exc, side, at=url)
            failures.append(why)
            if i + 1 < len(side.endpoints):
                log.warning("cannot list the %s through %s (%s); trying %s", side.name, url, why,
                            side.endpoints[i + 1])
    raise ConnectError(f"no {side.name} endpoint could be listed: " + "; ".join(failures))


def head(side: Side, s3client, key: str, checksums: bool = False) -> Answer | None:
    """The object `key` (prefix stripped) as a HeadObject sees it: size, ETag, server-side
    encryption and, with `checksums` (ChecksumMode, in the same request), its additional checksums
    of the whole object; None when it is not there (404). Any other failure raises."""
    import botocore.exceptions

    extra = {"ChecksumMode": "ENABLED"} if checksums else {}
    try:
        answer = s3client.head_object(Bucket=side.bucket, Key=side.prefix + key, **extra)
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return answer_of(key, int(answer.get("ContentLength", -1)), answer)


_SUM_FIELDS = tuple((a, "Checksum" + a) for a in ("CRC64NVME", "CRC32C", "CRC32", "SHA1", "SHA256"))


def answer_of(key: str, size: int, answer: dict) -> Answer:
    """An object as a HeadObject or CompleteMultipartUpload answer (parsed by botocore) describes
    it. A checksum of parts (COMPOSITE, or a value ending in -N) is left out: only one of the
    whole object can be compared with a local file's."""
    sse = "SSE-C" if answer.get("SSECustomerAlgorithm") else str(answer.get("ServerSideEncryption") or "")
    sums = ()
    if answer.get("ChecksumType") != "COMPOSITE":
        sums = tuple((a, str(answer[f])) for a, f in _SUM_FIELDS if answer.get(f) and "-" not in str(answer[f]))
    return Answer(key, size, str(answer.get("ETag", "")).strip('"'), "", sse, sums)


def list_one(side: Side, s3client, key: str) -> Obj | None:
    """The object `key` (prefix stripped) as a listing sees it (one page of at most one key: the
    key itself sorts first among the keys it prefixes); None when it is not there."""
    full = side.prefix + key
    if side.is_snow:
        page = s3client.list_objects(Bucket=side.bucket, Prefix=full, MaxKeys=1)
    else:
        page = s3client.list_objects_v2(Bucket=side.bucket, Prefix=full, MaxKeys=1)
    for item in page.get("Contents", ()):
        if item["Key"] == full:
            from . import listing as fast_listing

            return Obj(key, int(item["Size"]), item.get("ETag", "").strip('"'),
                       fast_listing.checksum_of(item.get("ChecksumAlgorithm") or (), item.get("ChecksumType")))
    return None


class Heads:
    """HeadObject (as head) from any number of threads through one boto3 client (thread-safe),
    made by client_of() when first needed; its errors describe_error names. With `checksums`, each
    asks for the object's additional checksums in the same request (not of a Snowball, which keeps
    none): where that is refused (reading the checksum of a KMS-encrypted object takes kms:Decrypt),
    it is asked without them from then on, said once in the log."""

    def __init__(self, side: Side, client_of: Callable[[], object], index: int = 0, checksums: bool = True) -> None:
        self.side = side
        self.client_of = client_of
        self.checksums = checksums and not side.is_snow
        self._client = None
        self._lock = threading.Lock()

    def head(self, key: str) -> Answer | None:
        with self._lock:  # one client for every thread, made when first needed
            if self._client is None:
                self._client = self.client_of()
        if not self.checksums:
            return head(self.side, self._client, key)
        try:
            return head(self.side, self._client, key, checksums=True)
        except Exception as exc:  # noqa: BLE001 - refused with checksums: asked again without
            code = error_code(exc)
            if code not in ("AccessDenied", "403") and not code.startswith("KMS."):
                raise
            why = describe_error(exc, self.side)
        got = head(self.side, self._client, key)  # a refusal of the object itself raises here
        if self.checksums:
            self.checksums = False
            log.warning("the %s refuses HeadObject with the object's checksums (%s) but not without them; objects "
                        "are verified without their checksums. Reading the checksum of a KMS-encrypted object "
                        "takes kms:Decrypt on its key", self.side.name, why)
        return got

    def close(self) -> None:
        pass


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError (its HTTP status when it has none), else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or "")


_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}


def _failed_endpoint(exc: BaseException) -> str | None:
    """The endpoint a botocore connection error names (scheme, host and port of its request URL):
    with several endpoints (a Snowball cluster), the one that failed, not the side's first."""
    import urllib.parse

    url = (getattr(exc, "kwargs", None) or {}).get("endpoint_url")
    if not isinstance(url, str) or "://" not in url:
        return None
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def describe_error(exc: BaseException, side: Side, at: str | None = None) -> str:
    """One line saying whether the endpoint, TLS, credentials or bucket failed, and the fix.
    at: the endpoint the failed request went to, when the caller knows it (one of several)."""
    import botocore.exceptions

    if isinstance(exc, S5jError):
        return str(exc)  # described already, for the side it concerns (connect_error, refusal.Refused)
    if isinstance(exc, OSError) and exc.errno in _LOCAL_ERRNOS:
        # this machine's disk, not the S3 side: a full file system, a read-only mount, a quota
        what = f" {exc.filename}" if exc.filename else ""
        return (f"cannot write{what} on this machine ({exc.strerror}); free space in the working folder and on "
                "the staging volumes, or fix the mount")
    where = _failed_endpoint(exc) or at or side.endpoint or f"AWS {side.region}"
    name = type(exc).__name__
    if isinstance(exc, botocore.exceptions.SSLError):
        reason = tls.cert_failure(str(exc))
        if reason:
            return tls.refusal(side.name, where, reason)
        return f"TLS failed talking to {where}: {exc}; check the URL scheme (http/https) and the certificate"
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ConnectionClosedError, botocore.exceptions.ReadTimeoutError)):
        return f"endpoint {where} did not answer ({name}); check the address, port and network link"
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        if side.profile:
            return (f"profile {side.profile!r} ({side.name}.profile) gives no credentials; give it keys, a "
                    f"credential_process, an SSO session or a role in {' or '.join(profile_files())}")
        return f"credentials for the {side.name} are missing; set {side.name}.access_key and secret_access_key in config.yaml or configure the AWS credential chain"
    if isinstance(exc, botocore.exceptions.CredentialRetrievalError):
        return (f"the {side.name}'s credentials could not be obtained ({exc}); check "
                f"{_credentials_key(side)}")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or status == 404:
            return f"bucket {side.bucket!r} does not exist at {where}; check {side.name}.bucket_name"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "AuthorizationHeaderMalformed", "InvalidClientTokenId"):
            return f"credentials rejected by {where} ({code}); check {_credentials_key(side)} and {side.name}.region"
        if code == "AccessDenied" or code.startswith("KMS.") or status == 403:
            message = exc.response.get("Error", {}).get("Message", "")
            return (f"access denied by {where} ({code or status}{': ' + message if message else ''}); check the "
                    f"{side.name} credentials' permissions, the bucket's policy and, for SSE-KMS, the key's policy")
        return f"{side.name} bucket {side.bucket!r} at {where} failed: {code or status}"
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return f"{side.name} at {where} failed: {exc}"
    return f"{side.name} at {where} failed: {name}: {exc}"


def _credentials_key(side: Side) -> str:
    """Where the side's credentials come from, as a fix names it."""
    if side.has_credentials:
        return f"{side.name}.access_key, secret_access_key"
    if side.profile:
        return f"profile {side.profile!r} ({side.name}.profile) in {' or '.join(profile_files())}"
    return f"the AWS credential chain (or set {side.name}.access_key and secret_access_key, or {side.name}.profile)"


def connect_error(exc: BaseException, side: Side) -> ConnectError:
    return ConnectError(describe_error(exc, side))


# Names s5cmd (Go) and boto3 read from the environment that an operator may legitimately set;
# everything else is left out of a child's environment on purpose.
_PASS_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
             "AWS_CA_BUNDLE", "GOGC", "GOMEMLIMIT")
_CHAIN_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_EC2_METADATA_DISABLED")
# ... and of those, what a side with `profile` passes on: the files, and what a profile's
# credential_source reads. Not the environment's keys, role or web identity: the SDK would take
# them before the profile (boto3 ignores them for an explicit profile too).
_PROFILE_ENV = ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_EC2_METADATA_DISABLED")


def child_env(side: Side, base: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of an s5cmd child for one side: its credentials and region only.
    A profile goes as AWS_PROFILE with AWS_SDK_LOAD_CONFIG=1, which aws-sdk-go resolves through its
    whole chain (credential_process, SSO, role_arn); s5cmd's --profile reads the credentials file only."""
    base = os.environ if base is None else base
    env = {k: base[k] for k in _PASS_ENV if k in base}
    if side.has_credentials:
        env["AWS_ACCESS_KEY_ID"] = side.access_key.reveal()
        env["AWS_SECRET_ACCESS_KEY"] = side.secret_key.reveal()
    elif side.profile:
        env.update({k: base[k] for k in _PROFILE_ENV if k in base})
        env["AWS_PROFILE"] = side.profile
        env["AWS_SDK_LOAD_CONFIG"] = "1"
    else:
        env.update({k: base[k] for k in _CHAIN_ENV if k in base})
    env["AWS_REGION"] = side.region
    env["AWS_DEFAULT_REGION"] = side.region
    if side.ca_bundle:  # s5cmd's aws-sdk-go reads its CA bundle from here (tls_mode)
        env["AWS_CA_BUNDLE"] = side.ca_bundle
    return env
