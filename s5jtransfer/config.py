"""Load and validate config.yaml into frozen dataclasses; every error names the file, key and fix."""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from .errors import ConfigError
from .tls import is_aws as _is_aws

CONFIG_NAME = "config.yaml"
NO_ENDPOINT = "no_endpoint"
SNOW = "snow"
MIB = 1024 * 1024


class Secret:
    """A credential: prints as **** so it never reaches a log, report or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "****" if self._value else ""

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def reveal(self) -> str:
        return self._value


STORAGE_CLASSES = ("STANDARD", "INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "GLACIER",
                   "DEEP_ARCHIVE")
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
               "bucket-owner-read", "bucket-owner-full-control")
_KMS_KEY = re.compile(r"[A-Za-z0-9:/_.-]{1,2048}")  # a key ID, alias/NAME or an ARN of either


@dataclass(frozen=True)
class Writes:
    """How the destination writes each object: destination.storage_class, sse, sse_kms_key_id and
    acl (None: not set, the bucket's default). Every upload path applies them (s5cmd.upload_flags,
    s3.upload_args)."""

    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    acl: str | None = None

    def describe(self) -> str:
        """One line for the connect test and --dry-run."""
        enc = self.sse or "the bucket's default"
        if self.sse_kms_key_id:
            enc += f" (KMS key {self.sse_kms_key_id})"
        return (f"storage class {self.storage_class or 'the bucket default (STANDARD)'}, encryption {enc}, "
                f"ACL {self.acl or 'none (the bucket default)'}")


@dataclass(frozen=True)
class Side:
    """One bucket side (source or destination)."""

    name: str  # "source" or "destination"
    bucket: str
    prefix: str
    region: str
    access_key: Secret
    secret_key: Secret
    endpoints: tuple[str, ...]  # empty: the default AWS endpoint for the region
    ca_bundle: str | None = None  # a PEM file that verifies this side's TLS certificates (tls.py)
    verify_tls: bool = True  # false: this side's non-AWS https endpoints are not verified (tls.py)
    # false: an ETag that does not equal the MD5 of the bytes is no evidence against them (a store
    # whose ETags are not MD5s and does not say so); evidence.py
    etag_is_md5: bool = True
    writes: Writes = field(default_factory=Writes)  # the destination's upload settings
    profile: str | None = None  # an AWS profile of the config and credentials files (with no keys set)

    @property
    def is_snow(self) -> bool:
        return self.region == SNOW

    @property
    def endpoint(self) -> str | None:
        return self.endpoints[0] if self.endpoints else None

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key)

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


@dataclass(frozen=True)
class Settings:
    max_src2l: int
    max_l2dest: int | None  # transfer_settings.dest_max_bytes_in_flight (None: no limit)
    src_use_native_s3: bool
    s5cmd_path: str | None
    src_workers: int
    dest_workers: int
    part_size: int
    stream_uploads: bool
    retries: int
    volume_reserve: int
    poll_interval: float
    max_poll_interval: float
    idle_verify_interval: int = 3600  # a perpetual sync_mvol.py compares the sides this often when idle (0: never)
    metrics_file: str | None = None  # transfer_settings.metrics_file: Prometheus text (metrics.py), absolute
    metrics_port: int = 0  # transfer_settings.metrics_port: HTTP /metrics (0: none)
    stall_warning_seconds: float = 900.0  # no byte moved this long while work is queued: stalled (status.py)
    request_timeout: float = 120.0  # transfer_settings.request_timeout_seconds (s3.client, s5cmd.Stream.stuck)


@dataclass(frozen=True)
class Config:
    path: str
    source: Side
    destination: Side
    directory: str
    volumes: tuple[str, ...]
    delete_staging_data: bool
    settings: Settings
    warnings: tuple[str, ...] = field(default=())
    # shards (shard.py): transfer_settings.shard as given (None: not set), and shard_count (for a
    # scheduler's index variable); cli.run resolves them with --shard and the environment into
    # shard_spec, the shard this process runs (None: every key)
    shard: Any = None
    shard_count: int | None = None
    shard_spec: Any = None


# --- schema -----------------------------------------------------------------------------
# key -> (required, kind, default). Kinds are checked by _value() below.
_SIDE_KEYS = {
    "bucket_name": (True, "str", None),
    "bucket_prefix": (True, "prefix", None),
    "region": (True, "str", None),
    "access_key": (False, "secret", ""),
    "secret_access_key": (False, "secret", ""),
    "ca_bundle": (False, "str_or_none", None),
    "verify_tls": (False, "bool", True),
    "etag_is_md5": (False, "bool", True),
    "profile": (False, "str_or_none", None),  # an AWS profile: this side's credentials (s3.py, s5cmd's env)
}
# How the destination writes each object (Writes), checked against the values S3 takes.
_WRITE_KEYS = {
    "storage_class": (False, "str_or_none", None),
    "sse": (False, "str_or_none", None),
    "sse_kms_key_id": (False, "str_or_none", None),
    "acl": (False, "str_or_none", None),
}
_SCHEMA: dict[str, dict[str, tuple[bool, str, Any]]] = {
    "source": dict(_SIDE_KEYS),
    "local": {
        "directory": (True, "str", None),
        "volumes": (False, "strlist", []),
    },
    # staging_volumes: the original v12's name of local.volumes ('default': /tmp/volume-NN)
    "destination": dict(_SIDE_KEYS, delete_staging_data=(False, "bool", True),
                        staging_volumes=(False, "volumes", None), **_WRITE_KEYS),
    "transfer_settings": {
        "max_size_to_transfer_src2l": (True, "size", None),
        # the original's, documented there as not implemented (in gigabytes): accepted, ignored
        "max_size_to_transfer_l2dest": (False, "ignored", None),
        "dest_max_bytes_in_flight": (False, "bytes_or_none", None),
        "dest_endpoint_url": (True, "endpoint", None),
        "src_endpoint_url": (True, "endpoint", None),
        "src_use_native_s3": (False, "bool", False),
        "s5cmd_path": (False, "str_or_none", None),
        "src_workers": (False, "posint", 64),
        # tuning of the in-process HTTP paths of earlier versions (s5cmd moves every byte now):
        # accepted in old config files, no effect
        "src_direct_get_max_bytes": (False, "ignored", None),
        "src_range_workers": (False, "ignored", None),
        "dest_direct_put_max_bytes": (False, "ignored", None),
        "dest_workers": (False, "posint", 64),
        "part_size_mb": (False, "posint", 50),
        "dest_stream_uploads": (False, "bool", True),
        "retries": (False, "posint", 10),
        "volume_reserve_bytes": (False, "size", 256 * MIB),
        "poll_interval_seconds": (False, "posnum", 1.0),
        "max_poll_interval_seconds": (False, "posnum", 30.0),
        "idle_verify_interval_seconds": (False, "count", 3600),
        "shard": (False, "str_or_none", None),  # "K/N": this host's shard (shard.py)
        "shard_count": (False, "str_or_none", None),  # N, with a scheduler's index variable (shard.py)
        "metrics_file": (False, "str_or_none", None),  # Prometheus text, rewritten while a script runs
        "metrics_port": (False, "count", 0),  # 0: no HTTP /metrics
        "stall_warning_seconds": (False, "posnum", 900.0),  # no byte moved this long while work is queued
        # an S3 request (boto3) or an s5cmd with objects in flight that reads and writes nothing
        # this long is abandoned and tried again: an endpoint that holds connections and never answers
        "request_timeout_seconds": (False, "posnum", 120.0),
    },
}


def _fail(path: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {problem}; {fix}")


_NOTE = re.compile(r"\s+#.*\Z", re.S)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
_WITH_UNIT = re.compile(r"([0-9][0-9_]*(?:\.[0-9]+)?)\s*([a-z]*)")


def _strip_note(raw: Any) -> Any:
    """The original's sample files write notes inside quoted values
    ("temp_files_for_transfer/ # this is depricated"): a trailing ' # ...' is a note, not the value."""
    if isinstance(raw, str):
        return _NOTE.sub("", raw)
    if isinstance(raw, list):
        return [_strip_note(v) for v in raw]
    return raw


def parse_bytes(raw: Any) -> int | None:
    """A byte count: a whole number (bytes), or a number with a unit (200GB, 512MiB, 1.5TB;
    decimal KB/MB/GB/TB, binary KiB/MiB/GiB/TiB). None when it is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if raw >= 0 else None
    if isinstance(raw, float):
        return int(raw) if raw >= 0 and raw == int(raw) else None
    if not isinstance(raw, str):
        return None
    m = _WITH_UNIT.fullmatch(raw.strip().lower())
    if not m or m.group(2) not in _UNITS:
        return None
    value = float(m.group(1).replace("_", "")) * _UNITS[m.group(2)]
    return int(value) if math.isfinite(value) else None


_Bad = Callable[[str, str], ConfigError]  # (problem, fix) -> the error naming the file and key


def _value(path: str, dotted: str, kind: str, raw: Any) -> Any:
    """A value of the schema's kind, or a ConfigError naming the key, the problem and the fix."""
    def bad(problem: str, fix: str) -> ConfigError:
        return _fail(path, dotted, problem, fix)

    if kind not in ("prefix", "secret"):
        raw = _strip_note(raw)
    if kind == "ignored":
        return None
    if kind not in _KINDS:
        raise AssertionError(kind)
    return _KINDS[kind](raw, bad)


def _as_bytes_or_none(raw: Any, bad: _Bad) -> int | None:
    if raw in (None, "", 0):
        return None
    num = parse_bytes(raw)
    if num is None:
        raise bad(f"{raw!r} is not a number of bytes", "write bytes (200000000000) or a size with a unit "
                  "(200GB, 512MiB), or '' for no limit")
    return num or None


def _as_volumes(raw: Any, bad: _Bad) -> list[str] | None:
    """destination.staging_volumes: None (not set), [] ('default': /tmp/volume-NN) or folders."""
    if raw in (None, ""):
        return None
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise bad("expected a list of folder paths", "write ['default'] for every /tmp/volume-NN, or a list "
                  "of folders, e.g. ['/data/vol1', '/data/vol2']")
    items = [v.strip() for v in items]
    if "default" in items:
        if len(items) > 1:
            raise bad("'default' cannot be part of a list of folders", "write ['default'] alone, or list "
                      "only folders")
        return []
    return items


def _as_text(raw: Any, bad: _Bad, prefix: bool = False) -> str:
    """Kinds str (stripped) and prefix (as written, checked as a folder prefix)."""
    if raw is None:
        raw = ""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise bad(f"expected text, got {type(raw).__name__}", "write a plain string")
    if not prefix:
        return str(raw).strip()
    raw = str(raw)
    if raw:
        _check_prefix(raw, bad)
    return raw


def _check_prefix(raw: str, bad: _Bad) -> None:
    if raw.startswith("/"):
        raise bad(f"{raw!r} starts with '/'", f"write it without the leading slash, e.g. {raw.lstrip('/')!r}")
    if not raw.endswith("/"):
        raise bad(f"{raw!r} does not end with '/'", f"add the trailing slash: {raw + '/'!r} (or '' for the whole bucket)")


def _as_secret(raw: Any, bad: _Bad) -> Secret:
    if raw is None:
        return Secret("")
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise bad("expected text", "quote the credential")
    return Secret(str(raw).strip())


def _as_str_or_none(raw: Any, bad: _Bad) -> str | None:
    if raw in (None, ""):
        return None
    return _as_text(raw, bad)


def _as_bool(raw: Any, bad: _Bad) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "yes", "no"):
        return raw.strip().lower() in ("true", "yes")
    raise bad(f"expected true or false, got {raw!r}", "write true or false")


def _as_whole(raw: Any, bad: _Bad, kind: str) -> int | None:
    """Kinds size, size_or_none, posint and count: a whole number (posint: 1 or more)."""
    if kind == "size_or_none" and raw in (None, ""):
        return None
    num = _number(raw)
    if num is None or not math.isfinite(num) or num != int(num) or num < 0 or (kind == "posint" and num < 1):
        want, example = {"posint": ("a positive whole number", "64"),
                         "count": ("a whole number, 0 or more", "6")}.get(kind, ("a number of bytes", "500000000000"))
        raise bad(f"{raw!r} is not {want}", f"write {want}, e.g. {example}")
    return int(num)


def _as_posnum(raw: Any, bad: _Bad) -> float:
    num = _number(raw)
    if num is None or not math.isfinite(num) or num <= 0:
        raise bad(f"{raw!r} is not a positive number", "write a number of seconds, e.g. 1")
    return float(num)


def _as_strlist(raw: Any, bad: _Bad) -> list[str]:
    if raw in (None, ""):
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
        raise bad("expected a list of folder paths", "write e.g. [/data/vol1, /data/vol2], or [] to discover /tmp/volume-NN")
    return [v.strip() for v in raw]


def _as_endpoints(raw: Any, bad: _Bad) -> list[str]:
    """An endpoint URL or a list of them ([]: no_endpoint, the default AWS endpoint)."""
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise bad(f"{raw!r} is not an endpoint", f"write {NO_ENDPOINT} or a URL such as http://192.0.2.10:8080")
        item = item.strip()
        if item == NO_ENDPOINT:
            if len(items) > 1:
                raise bad(f"{NO_ENDPOINT} cannot be part of a list", "list only URLs")
            return []
        out.append(_endpoint_url(item, bad))
    if not out:
        raise bad("the endpoint list is empty", f"write {NO_ENDPOINT} or at least one URL")
    return out


def _endpoint_url(item: str, bad: _Bad) -> str:
    """One endpoint: a scheme, a host and a port only."""
    if not (item.startswith("http://") or item.startswith("https://")) or len(item.split("://", 1)[1]) == 0:
        raise bad(f"{item!r} is not a URL", f"write {NO_ENDPOINT} or a URL starting with http:// or https://")
    u = urllib.parse.urlsplit(item)
    try:
        u.port
    except ValueError:
        raise bad(f"{item!r} has no valid port", "write the port as a number, e.g. http://192.0.2.10:8080") from None
    if not u.hostname or any(c.isspace() for c in item) or u.path.strip("/") or u.query or u.fragment:
        raise bad(f"{item!r} is not an S3 endpoint: it is a scheme, a host and a port only (no path, "
                  "spaces or query)", "write e.g. http://192.0.2.10:8080; the bucket and folder go in "
                  "bucket_name and bucket_prefix")
    return item.rstrip("/")


# kind -> its reader (raw value, bad) -> value; "ignored" is read by _value itself
_KINDS: dict[str, Callable[[Any, _Bad], Any]] = {
    "bytes_or_none": _as_bytes_or_none,
    "volumes": _as_volumes,
    "str": _as_text,
    "prefix": lambda raw, bad: _as_text(raw, bad, prefix=True),
    "secret": _as_secret,
    "str_or_none": _as_str_or_none,
    "bool": _as_bool,
    "size": lambda raw, bad: _as_whole(raw, bad, "size"),
    "size_or_none": lambda raw, bad: _as_whole(raw, bad, "size_or_none"),
    "posint": lambda raw, bad: _as_whole(raw, bad, "posint"),
    "count": lambda raw, bad: _as_whole(raw, bad, "count"),
    "posnum": _as_posnum,
    "strlist": _as_strlist,
    "endpoint": _as_endpoints,
}


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, (int, float)):
        return raw
    if isinstance(raw, str):
        try:
            return float(raw.replace("_", "").strip())
        except ValueError:
            return None
    return None


def _section(path: str, doc: dict, name: str) -> dict[str, Any]:
    raw = doc.get(name)
    if raw is None:
        raise _fail(path, name, "section is missing", f"add a '{name}:' section (see the shipped config.yaml)")
    if not isinstance(raw, dict):
        raise _fail(path, name, "is not a section of keys", f"indent its keys under '{name}:'")
    schema = _SCHEMA[name]
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(schema)}"
            raise _fail(path, f"{name}.{key}", "unknown key", hint)
    out = {}
    for key, (required, kind, default) in schema.items():
        dotted = f"{name}.{key}"
        if key not in raw:
            if required:
                raise _fail(path, dotted, "is missing", f"add '{key}:' under '{name}:'")
            out[key] = default
            continue
        out[key] = _value(path, dotted, kind, raw[key])
    return out


def _addresses(url: str) -> set[tuple]:
    """Where an endpoint URL leads, as far as can be told without asking DNS (config.yaml is read
    by every script, also at an edge site without a name server): (scheme, host, port), with
    IP addresses in one spelling and localhost as the loopback addresses, so that
    http://localhost:9000 and http://127.0.0.1:9000 are known for one server."""
    u = urllib.parse.urlsplit(url)
    scheme = (u.scheme or "https").lower()
    try:
        port = u.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    host = (u.hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        hosts = {"127.0.0.1", "::1"}
    else:
        try:
            ip = ipaddress.ip_address(host)
            hosts = {str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)}
            if ip.is_loopback:
                hosts |= {"127.0.0.1", "::1"}
        except ValueError:
            hosts = {host}
    return {(scheme, h, port) for h in hosts}


def _same_server(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two sides' endpoints (empty: AWS) may be the same S3 server. Called only for one
    bucket name on both sides, where it decides whether a transfer would copy into its own source."""
    def aws(urls: tuple[str, ...]) -> bool:
        return not urls or any((urllib.parse.urlsplit(u).hostname or "").lower().endswith(".amazonaws.com")
                               for u in urls)

    if aws(a) and aws(b):
        return True
    if not a or not b:
        return False
    mine = set().union(*(_addresses(u) for u in a))
    return any(mine & _addresses(u) for u in b)


# S3's bucket names (3-63 of a-z, 0-9, '.', '-'), plus the upper case and '_' of older buckets
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
# upper bounds beyond which a value is a typo, not a setting (a billion workers exhausts memory)
_MAX = {"src_workers": 4096, "dest_workers": 4096, "part_size_mb": 5 * 1024}


def _side(path: str, name: str, sec: dict, endpoints: list[str]) -> Side:
    if not sec["bucket_name"]:
        raise _fail(path, f"{name}.bucket_name", "is empty", "write the bucket name")
    if not _BUCKET.fullmatch(sec["bucket_name"]):
        raise _fail(path, f"{name}.bucket_name", f"{sec['bucket_name']!r} is not a bucket name",
                    "write the name alone, e.g. my-bucket (letters, digits, '.', '-'); a folder goes in bucket_prefix")
    if not sec["region"]:
        raise _fail(path, f"{name}.region", "is empty", "write the region, e.g. us-east-1 (or snow for a Snowball source)")
    if bool(sec["access_key"]) != bool(sec["secret_access_key"]):
        raise _fail(path, f"{name}.access_key", "only one of access_key and secret_access_key is set",
                    "set both, or leave both empty to use the standard AWS credential chain")
    if sec["profile"] and sec["access_key"]:
        raise _fail(path, f"{name}.profile", "is set together with access_key",
                    f"keep one: the profile (remove {name}.access_key and secret_access_key), or the keys "
                    f"(remove {name}.profile)")
    if sec["region"] == SNOW and name == "destination":
        raise _fail(path, "destination.region", "a Snowball (snow) cannot be the destination",
                    "set the destination bucket's AWS region, e.g. us-east-1")
    if sec["region"] == SNOW and not endpoints:
        which = "src_endpoint_url" if name == "source" else "dest_endpoint_url"
        raise _fail(path, f"transfer_settings.{which}", "region snow needs the Snowball endpoint",
                    "write its URL, e.g. http://192.0.2.10:8080 or https://192.0.2.10")
    bundle = sec["ca_bundle"]
    if bundle:
        # relative to the folder of config.yaml (where the scripts run)
        bundle = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(bundle))
        if not os.path.isfile(bundle) or not os.access(bundle, os.R_OK):
            raise _fail(path, f"{name}.ca_bundle", f"{bundle} is not a readable file",
                        "write the path of the endpoint's certificate (PEM), e.g. from snowballEdge get-certificate")
    if not sec["verify_tls"] and (not endpoints or any(_is_aws(u) for u in endpoints)):
        raise _fail(path, f"{name}.verify_tls", "AWS endpoints are always verified",
                    "remove verify_tls: false (it is only for a non-AWS https endpoint)")
    return Side(name=name, bucket=sec["bucket_name"], prefix=sec["bucket_prefix"], region=sec["region"],
                access_key=sec["access_key"], secret_key=sec["secret_access_key"], endpoints=tuple(endpoints),
                ca_bundle=bundle or None, verify_tls=sec["verify_tls"], etag_is_md5=sec["etag_is_md5"],
                writes=_writes(path, sec) if name == "destination" else Writes(), profile=sec["profile"])


def _one_of(path: str, dotted: str, raw: str | None, allowed: tuple[str, ...]) -> str | None:
    """raw as S3 spells it (any case), or a ConfigError that lists the values S3 takes."""
    if raw is None:
        return None
    by_case = {a.lower(): a for a in allowed}
    if raw.lower() not in by_case:
        raise _fail(path, dotted, f"{raw!r} is not one of {', '.join(allowed)}", "write one of them, or remove the key")
    return by_case[raw.lower()]


def _writes(path: str, sec: dict) -> Writes:
    """destination.storage_class, sse, sse_kms_key_id and acl, checked."""
    sse = _one_of(path, "destination.sse", sec["sse"], SSE_MODES)
    key = sec["sse_kms_key_id"]
    if key is not None:
        if sse not in ("aws:kms", "aws:kms:dsse"):
            raise _fail(path, "destination.sse_kms_key_id", "is set, but destination.sse is not aws:kms or aws:kms:dsse",
                        "add sse: aws:kms (or aws:kms:dsse) under destination:, or remove sse_kms_key_id")
        if not _KMS_KEY.fullmatch(key):
            raise _fail(path, "destination.sse_kms_key_id", f"{key!r} is not a KMS key ID, alias or ARN",
                        "write e.g. arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab "
                        "or alias/my-key")
    return Writes(storage_class=_one_of(path, "destination.storage_class", sec["storage_class"], STORAGE_CLASSES),
                  sse=sse, sse_kms_key_id=key, acl=_one_of(path, "destination.acl", sec["acl"], CANNED_ACLS))


class _RepeatedKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping (a pasted section, a key
    written again further down) is an error instead of the last one silently winning."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise _RepeatedKey(key, key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str = CONFIG_NAME) -> Config:
    """Read and validate a config file; raise ConfigError with a one-line message."""
    doc = _document(path, _read(path))
    _check_sections(path, doc)
    src, local, dst, ts = [_section(path, doc, name) for name in ("source", "local", "destination", "transfer_settings")]
    source = _side(path, "source", src, ts["src_endpoint_url"])
    destination = _side(path, "destination", dst, ts["dest_endpoint_url"])
    _check_sides_apart(path, source, destination)
    volumes = _local_volumes(path, local, dst)
    settings = _settings(path, ts)
    shard_spec, shard_count = _shard_keys(path, ts["shard"], ts["shard_count"])
    if settings.max_src2l < 1:
        raise _fail(path, "transfer_settings.max_size_to_transfer_src2l", "must be above 0", "write a number of bytes, e.g. 500000000000")
    return Config(path=os.path.abspath(path), source=source, destination=destination,
                  directory=local["directory"], volumes=tuple(volumes),
                  delete_staging_data=dst["delete_staging_data"], settings=settings,
                  warnings=_warnings(path, source, destination),
                  shard=shard_spec, shard_count=shard_count, shard_spec=shard_spec)


def _read(path: str) -> bytes:
    """The file's bytes, checked to be UTF-8."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found in {os.getcwd()}; run the scripts from the folder that holds "
                          f"config.yaml (copy the shipped one and fill it in)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{text[exc.start]:02x}); save the file as "
                          "UTF-8") from None
    return text


def _document(path: str, text: bytes) -> dict:
    """The YAML document: a mapping of sections, no key given twice at one level."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader that refuses repeated keys
    except _RepeatedKey as exc:
        raise ConfigError(f"{path}: line {exc.line}: {exc.key!r} is given twice at one level; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}: not valid YAML ({problem}); fix the indentation or quoting there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: is empty or not a mapping of sections; start from the shipped config.yaml")
    return doc


def _check_sections(path: str, doc: dict) -> None:
    for key in doc:
        if key not in _SCHEMA:
            close = difflib.get_close_matches(str(key), list(_SCHEMA), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid sections: {', '.join(_SCHEMA)}"
            if key in ("shard", "shard_count"):
                hint = f"put {key}: under transfer_settings:"
            raise _fail(path, str(key), "unknown section", hint)


def _check_sides_apart(path: str, source: Side, destination: Side) -> None:
    """A transfer never copies into its own source."""
    if destination.is_snow:
        raise _fail(path, "destination.region", "a Snowball (snow) cannot be the destination",
                    "set the destination bucket's AWS region, e.g. us-east-1")
    if source.bucket == destination.bucket and _same_server(source.endpoints, destination.endpoints) and (
            source.prefix.startswith(destination.prefix) or destination.prefix.startswith(source.prefix)):
        raise _fail(path, "destination.bucket_prefix", "overlaps the source prefix in the same bucket",
                    "use separate buckets or non-overlapping prefixes")


def _local_volumes(path: str, local: dict, dst: dict) -> list[str]:
    """local.directory checked, and the staging volumes (local.volumes or the original's
    destination.staging_volumes), none inside another."""
    if not local["directory"]:
        raise _fail(path, "local.directory", "is empty", "write a staging folder, e.g. /tmp/s5jtransfer")
    if os.path.exists(local["directory"]) and not os.path.isdir(local["directory"]):
        raise _fail(path, "local.directory", f"{local['directory']} is a file, not a folder",
                    "write the path of a staging folder (created if missing)")
    volumes = local["volumes"]
    if dst["staging_volumes"] is not None:  # the original v12's name of local.volumes
        if volumes and volumes != dst["staging_volumes"]:
            raise _fail(path, "destination.staging_volumes", "differs from local.volumes (the same setting)",
                        "keep one of the two")
        volumes = dst["staging_volumes"]
    roots = [os.path.realpath(v) for v in volumes]
    for i, a in enumerate(roots):
        for b in roots[i + 1:]:
            if a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/"):
                raise _fail(path, "local.volumes", f"{a} and {b} are the same folder or one holds the other",
                            "list each staging volume once, none inside another")
    return volumes


def _settings(path: str, ts: dict) -> Settings:
    """transfer_settings, with the bounds between and beyond the keys checked."""
    for key, most in _MAX.items():
        if ts[key] > most:
            raise _fail(path, f"transfer_settings.{key}", f"{ts[key]} is more than {most}",
                        f"write at most {most}" + (" (S3's largest part is 5 GiB)" if key == "part_size_mb" else ""))
    if ts["part_size_mb"] < 5:
        raise _fail(path, "transfer_settings.part_size_mb", f"{ts['part_size_mb']} is below 5",
                    "write 5 or more: S3's smallest part is 5 MiB")
    if ts["max_poll_interval_seconds"] < ts["poll_interval_seconds"]:
        raise _fail(path, "transfer_settings.max_poll_interval_seconds", "is below poll_interval_seconds",
                    "make it at least as large")
    return Settings(
        max_src2l=ts["max_size_to_transfer_src2l"], max_l2dest=ts["dest_max_bytes_in_flight"],
        src_use_native_s3=ts["src_use_native_s3"], s5cmd_path=ts["s5cmd_path"],
        src_workers=ts["src_workers"], dest_workers=ts["dest_workers"], part_size=max(5, ts["part_size_mb"]) * MIB,
        stream_uploads=ts["dest_stream_uploads"], retries=ts["retries"],
        volume_reserve=ts["volume_reserve_bytes"], poll_interval=ts["poll_interval_seconds"],
        max_poll_interval=ts["max_poll_interval_seconds"], idle_verify_interval=ts["idle_verify_interval_seconds"],
        metrics_file=_metrics_file(path, ts["metrics_file"]), metrics_port=_port(path, ts["metrics_port"]),
        stall_warning_seconds=ts["stall_warning_seconds"], request_timeout=ts["request_timeout_seconds"])


def _metrics_file(path: str, raw: str | None) -> str | None:
    """transfer_settings.metrics_file, relative to config.yaml's folder; its folder must exist."""
    if not raw:
        return None
    out = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(raw))
    if not os.path.isdir(os.path.dirname(out)) or os.path.isdir(out):
        raise _fail(path, "transfer_settings.metrics_file", f"{out} is not a file in an existing folder",
                    "write a file's path in an existing folder, e.g. node_exporter's textfile directory: "
                    "/var/lib/node_exporter/textfile_collector/s5jtransfer.prom")
    return out


def _port(path: str, raw: int) -> int:
    if raw > 65535:
        raise _fail(path, "transfer_settings.metrics_port", f"{raw} is no TCP port",
                    "write a port from 1 to 65535 (e.g. 9187), or 0 for none")
    return raw


def _warnings(path: str, source: Side, destination: Side) -> tuple[str, ...]:
    warnings = []
    try:
        mode = os.stat(path).st_mode
        if (source.has_credentials or destination.has_credentials) and mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"{path} holds access keys and is readable by other users; run: chmod 600 {path}")
    except OSError:
        pass
    return tuple(warnings)


def _shard_keys(path: str, raw_shard: str | None, raw_count: str | None) -> tuple[Any, int | None]:
    """transfer_settings.shard ("K/N") and shard_count (N), checked (see shard.py)."""
    from . import shard as shard_mod

    spec = shard_mod.parse(raw_shard, f"{path}: transfer_settings.shard") if raw_shard is not None else None
    count = None
    if raw_count is not None:
        if not raw_count.isdigit() or not 1 <= int(raw_count) <= shard_mod.MAX_SHARDS:
            raise _fail(path, "transfer_settings.shard_count", f"{raw_count!r} is not a shard count",
                        f"write the number of shards, 1 to {shard_mod.MAX_SHARDS}, e.g. 4")
        count = int(raw_count)
    if spec is not None and count is not None and spec.count != count:
        raise _fail(path, "transfer_settings.shard_count", f"{count} differs from the count of shard {spec}",
                    "remove one of shard and shard_count, or make them agree")
    return spec, count


if __name__ == "__main__":  # pragma: no cover - handy check: python -m s5jtransfer.config
    try:
        print(load())
    except ConfigError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
