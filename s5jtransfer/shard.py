"""Shards: several transfer hosts split one source prefix, each taking a stable share of the keys.

A shard `K/N` (0 <= K < N) owns the keys whose CRC32 modulo N is K. The hash is taken of the
key RELATIVE to the side's prefix (the prefix stripped, as listings, ledgers and the destination
use it), as UTF-8 bytes: so the owner of an object is the same whether it is looked up in the
source listing, a ledger or the destination listing, and it does not depend on the prefixes
in config.yaml. CRC32 (zlib.crc32) is stable across hosts, Python versions and runs (Python's
own hash() is salted per process).

Where a host's shard comes from, first match wins:
1. `--shard K/N` on the command line;
2. `transfer_settings.shard: "K/N"` in config.yaml;
3. the index a scheduler gives each copy of a job, `JOB_COMPLETION_INDEX` (a Kubernetes Indexed
   Job) or `AWS_BATCH_JOB_ARRAY_INDEX` (an AWS Batch array job), with N from
   `transfer_settings.shard_count`.
None of them: no shard, every key (as before shards existed).

A working folder records the shard it runs (SHARD_FILE) at the first start of a sync script; a
later start with another shard is refused (its ledgers and staged copies belong to the first).

Everything here is pure except record()/recorded() (one small file in the working folder).
"""

from __future__ import annotations

import os
import statistics
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping, TypeVar

from .atomic import write_atomic
from .errors import ConfigError

SHARD_FILE = "shard.txt"
ENV_INDEXES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")
MAX_SHARDS = 4096
T = TypeVar("T")
V = TypeVar("V")


@dataclass(frozen=True)
class Spec:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: object, where: str = "--shard") -> Spec:
    """'K/N' -> Spec(K, N); a ConfigError naming `where` and the fix otherwise. Also accepts
    'K-N' (the form a systemd instance name carries, s5jtransfer@0-4.service)."""
    raw = str(text).strip() if isinstance(text, (str, int)) and not isinstance(text, bool) else None
    fix = "write K/N with 0 <= K < N, e.g. 0/4 for the first of four shards"
    if not raw:
        raise ConfigError(f"{where}: {text!r} is not a shard; {fix}")
    sep = "/" if "/" in raw else "-"
    parts = raw.split(sep)
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"{where}: {raw!r} is not a shard; {fix}")
    k, n = (int(p) for p in parts)
    if n < 1 or n > MAX_SHARDS:
        raise ConfigError(f"{where}: {raw!r}: the shard count must be 1 to {MAX_SHARDS}; {fix}")
    if k >= n:
        raise ConfigError(f"{where}: {raw!r}: the index must be below the count (shards are numbered 0 to "
                          f"{n - 1}); {fix}")
    return Spec(k, n)


def key_bytes(key: str) -> bytes:
    """A relative key's bytes: UTF-8 (S3 keys are UTF-8; a ledger key read with surrogateescape
    gets its original bytes back)."""
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape")


def shard_of(key: str, count: int) -> int:
    """The shard index that owns a relative key among `count` shards."""
    return zlib.crc32(key_bytes(key)) % count


def owns(key: str, spec: Spec | None) -> bool:
    """Whether a shard owns a relative key (no shard: every key)."""
    return spec is None or zlib.crc32(key_bytes(key)) % spec.count == spec.index


def select(items: list[T], spec: Spec | None) -> list[T]:
    """The items (anything with a .key relative to the prefix) a shard owns; the same list
    when there is no shard."""
    if spec is None or spec.count == 1:
        return items
    n, k, crc = spec.count, spec.index, zlib.crc32
    return [i for i in items if crc(key_bytes(i.key)) % n == k]  # type: ignore[attr-defined]


def select_map(mapping: Mapping[str, V], spec: Spec | None) -> dict[str, V]:
    """The entries of a key -> value mapping that a shard owns (no shard: all of them)."""
    if spec is None or spec.count == 1:
        return dict(mapping)
    return {key: v for key, v in mapping.items() if owns(key, spec)}


def _env_index(environ: Mapping[str, str]) -> tuple[str, str] | None:
    for name in ENV_INDEXES:
        value = environ.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return None


def resolve(flag: str | None, config_shard: Spec | None, config_count: int | None,
            environ: Mapping[str, str] | None = None, need_index: bool = True) -> tuple[Spec | None, str]:
    """This process's shard and where it came from (for the log): the --shard flag, else
    config.yaml's shard, else a scheduler's index variable with config.yaml's shard_count.
    An index variable without shard_count is not a shard (an Indexed Job may run other work);
    shard_count without any index is a ConfigError (every host would move everything), unless
    need_index is False (status.py, repair_ledger.py: they only read the count)."""
    environ = os.environ if environ is None else environ
    if flag is not None:
        return parse(flag, "--shard"), "--shard"
    if config_shard is not None:
        return config_shard, "config.yaml transfer_settings.shard"
    if config_count is None:
        return None, ""
    found = _env_index(environ)
    if found is None and not need_index:
        return None, ""
    if found is None:
        raise ConfigError(f"transfer_settings.shard_count is {config_count} but no shard index is given; pass "
                          f"--shard K/N, set transfer_settings.shard, or run under a scheduler that sets "
                          f"{' or '.join(ENV_INDEXES)} (a Kubernetes Indexed Job, an AWS Batch array job)")
    name, value = found
    if not value.isdigit():
        raise ConfigError(f"{name}={value!r} is not a shard index; it must be a whole number from 0 to "
                          f"{config_count - 1} (the scheduler sets it: do not set it by hand)")
    k = int(value)
    if k >= config_count:
        raise ConfigError(f"{name}={k} but transfer_settings.shard_count is {config_count}: the job runs more "
                          f"copies than there are shards; make completions (Kubernetes) or the array size "
                          f"(AWS Batch) equal to shard_count")
    return Spec(k, config_count), f"{name} with transfer_settings.shard_count"


# -- the working folder's record --------------------------------------------------------------
def recorded(folder: str = ".") -> Spec | None:
    """The shard a working folder records; None when it records none."""
    path = os.path.join(folder, SHARD_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        return None
    return parse(text, path)


def record(spec: Spec, folder: str = ".") -> None:
    """Write the folder's record; the temporary file is per process: both sides started at once
    by hand (nohup ... &) may each write it at their first start."""
    path = os.path.join(folder, SHARD_FILE)
    write_atomic(path, f"{spec}\n", durable=True, tmp=f"{path}.{os.getpid()}.tmp")


def reshard_hint() -> str:
    return ("to reshard, stop every sync script in this folder and run `python reset.py` (it empties the ledgers, "
            "the staging volumes and the shard record), or use a new working folder (its own config.yaml and "
            "staging volumes) for the new shard; then `python repair_ledger.py --shard K/N` there ledgers what the "
            "destination already holds (see docs/operations.md)")


def check_folder(spec: Spec | None, folder: str = ".", has_work: bool = False, write: bool = True) -> None:
    """A start of a sync script (write=True) with shard `spec` in a working folder: refused
    (ConfigError, exit 2) when the folder records another shard, or records none but already
    holds an unsharded run's ledger rows (has_work) and a shard is asked for; else the shard is
    recorded on the first start. An unsharded run in a folder without a record writes nothing."""
    have = recorded(folder)
    where = os.path.abspath(folder)
    if have is not None and have != spec:
        asked = f"shard {spec}" if spec else "no shard (every key)"
        raise ConfigError(f"{where} records shard {have} ({SHARD_FILE}), but this start asks for {asked}: its "
                          f"ledgers and staged copies belong to shard {have}; {reshard_hint()}")
    if have is None and spec is not None and has_work:
        raise ConfigError(f"{where} holds the ledgers of a run without shards, but this start asks for shard "
                          f"{spec}; {reshard_hint()}")
    if have is None and spec is not None and write:
        record(spec, folder)


def count_for_all(spec: Spec | None, config_count: int | None) -> int:
    """The shard count a whole-prefix check (--all-shards) reports by."""
    if spec is not None:
        return spec.count
    if config_count is not None:
        return config_count
    raise ConfigError("--all-shards needs the number of shards: pass --shard K/N (any K), set "
                      "transfer_settings.shard or shard_count in config.yaml, or run it in a shard's working folder")


# -- balance ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Share:
    index: int
    objects: int
    bytes: int


@dataclass(frozen=True)
class Balance:
    count: int
    shares: tuple[Share, ...]

    @property
    def objects(self) -> int:
        return sum(s.objects for s in self.shares)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shares)

    def imbalance(self, what: str) -> float:
        """max / mean of the shards' objects or bytes (1.0: perfectly even; 0 when empty)."""
        values = [getattr(s, what) for s in self.shares]
        mean = statistics.fmean(values)
        return max(values) / mean if mean else 0.0

    def as_dict(self) -> dict:
        tot_o, tot_b = self.objects, self.bytes
        return {"shards": self.count, "objects": tot_o, "bytes": tot_b,
                "max_over_mean_objects": round(self.imbalance("objects"), 4),
                "max_over_mean_bytes": round(self.imbalance("bytes"), 4),
                "shares": [{"shard": f"{s.index}/{self.count}", "objects": s.objects, "bytes": s.bytes,
                            "objects_pct": round(100.0 * s.objects / tot_o, 3) if tot_o else 0.0,
                            "bytes_pct": round(100.0 * s.bytes / tot_b, 3) if tot_b else 0.0}
                           for s in self.shares]}


def plan(items: Iterable[tuple[str, int]], count: int) -> Balance:
    """Pure: how (relative key, size) pairs fall over `count` shards."""
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"--plan-shards {count}: the shard count must be 1 to {MAX_SHARDS}")
    objs = [0] * count
    size = [0] * count
    crc = zlib.crc32
    for key, n in items:
        k = crc(key_bytes(key)) % count
        objs[k] += 1
        size[k] += n
    return Balance(count, tuple(Share(i, objs[i], size[i]) for i in range(count)))


def render_plan(b: Balance) -> str:
    from .progress import fmt_bytes

    tot_o, tot_b = b.objects, b.bytes

    def pct(a: int, t: int) -> str:
        return f"{100.0 * a / t:5.1f}%" if t else "    -"

    lines = [f"{b.count} shards over {tot_o} objects ({fmt_bytes(tot_b)}), by CRC32 of the key relative to the "
             f"source prefix:", f"  {'shard':>9}  {'objects':>10}  {'':6}  {'bytes':>12}  {'':6}"]
    for s in b.shares:
        lines.append(f"  {str(s.index) + '/' + str(b.count):>9}  {s.objects:>10}  {pct(s.objects, tot_o)}  "
                     f"{fmt_bytes(s.bytes):>12}  {pct(s.bytes, tot_b)}")
    lines.append(f"  max/mean: objects {b.imbalance('objects'):.3f}, bytes {b.imbalance('bytes'):.3f} "
                 f"(the busiest host carries this multiple of an even share; the job ends when it does)")
    return "\n".join(lines)
