"""The bodies of the top-level scripts; each script only calls one of these."""

from __future__ import annotations

import logging
import os
import sys

from . import cli, tries
from .errors import LockHeld, S5jError
from .ledger import DEST_LEDGER, LOCKS, SRC_COLUMNS, SRC_LEDGER, Ledger, holder_pid, is_locked
from .runtime import Stopper

log = logging.getLogger("s5jtransfer")


def src_sync(argv: list[str] | None = None) -> int:
    from . import src_sync as mod

    args = cli.parser("Copy the source bucket to the staging volumes, verified and ledgered.", once=True,
                      dry_run=True, shard=True).parse_args(argv)

    def body(a, cfg) -> int:
        _tls_start(cfg.source)
        return mod.run(cfg, a.once, Stopper().install(), dry_run=a.dry_run, supervised=a.supervised)

    return cli.run(body, args, lock="src", shard="sync", metrics=True)


def dest_sync(argv: list[str] | None = None) -> int:
    from . import dest_sync as mod

    args = cli.parser("Upload staged, ledgered objects to the destination, confirm, ledger and free them.",
                      once=True, dry_run=True, shard=True).parse_args(argv)

    def body(a, cfg) -> int:
        _tls_start(cfg.destination)
        return mod.run(cfg, a.once, Stopper().install(), dry_run=a.dry_run, supervised=a.supervised,
                       round_start=a.round_start)

    return cli.run(body, args, lock="dest", shard="sync", metrics=True)


def sync(argv: list[str] | None = None) -> int:
    from . import supervisor

    args = cli.parser("Run both sides as child processes, restarting one that dies.", once=True,
                      dry_run=True, shard=True).parse_args(argv)

    def body(a, cfg) -> int:
        return supervisor.run(cfg, a.once, a.dry_run, a.log_file, a.debug, Stopper().install())

    return cli.run(body, args, lock="sync", shard="sync", metrics=True)


def repair(argv: list[str] | None = None) -> int:
    from . import compare, verify

    p = cli.parser("Compare source and destination; drop from the ledger what is not really there.", shard=True)
    p.add_argument("--missing-file", default=verify.MISSING_FILE, help="where to write the keys still to move")
    p.add_argument("--all-shards", action="store_true",
                   help="compare the whole source prefix with the destination, whichever host moved what, and "
                        "name the shard that owns each missing object (reads no ledger, changes none)")
    args = p.parse_args(argv)

    def body(a, cfg) -> int:
        _warn_tls(cfg.source)
        _warn_tls(cfg.destination)
        if a.all_shards:
            from . import shard

            return compare.repair_all_shards(cfg, shard.count_for_all(cfg.shard_spec, cfg.shard_count))
        rc = compare.repair(cfg, a.missing_file)
        tries.ask_again()  # running sides try the objects they set aside again
        return rc

    return cli.run(body, args, lock="repair", shard="count" if args.all_shards else "repair")


def reset(argv: list[str] | None = None) -> int:
    from .volumes import clear_staging, discover_roots

    args = cli.parser("Start over: remove ledgers and run files, empty the staging areas.").parse_args(argv)

    def body(a, cfg) -> int:
        for path, what in LOCKS.values():
            if is_locked(path):
                pid = holder_pid(path)
                raise LockHeld(f"{what} is running in this folder (PID {pid or 'unknown'}); stop it before reset.py "
                               f"(kill {pid or '<pid>'}), then run reset.py again")
        import glob

        from .index import INDEX_FILE
        from .shard import SHARD_FILE  # the folder's shard: the next start may take another

        # the staging areas first: one that cannot be emptied (a read-only mount) leaves the
        # ledgers as they were, so nothing is half reset
        os.makedirs(cfg.directory, exist_ok=True)
        for root in discover_roots(cfg.volumes, cfg.directory):
            if os.path.isdir(root):
                try:
                    clear_staging(root)
                except OSError as exc:
                    raise S5jError(f"cannot empty the staging area of {root} ({exc.strerror or exc}); nothing was "
                                   "reset: make it writable (mounted read-write), then run reset.py again") from None
                log.info("emptied the staging area of %s", root)
        run_files = glob.glob("src_commands*.txt*") + glob.glob("dest_commands*.txt*")
        index = [INDEX_FILE + suffix for suffix in ("", "-wal", "-shm")]
        for name in (*run_files, SRC_LEDGER, DEST_LEDGER, *index, ".src_state.json", ".dest_state.json",
                     ".volumes.json", "missing_keys.txt", "transfer_report.json", SHARD_FILE):
            try:
                os.remove(name)
                log.info("removed %s", name)
            except FileNotFoundError:
                pass
        Ledger(SRC_LEDGER, SRC_COLUMNS).ensure()
        log.info("wrote an empty %s", SRC_LEDGER)
        return cli.OK

    return cli.run(body, args)


def connect_test(side_name: str, argv: list[str] | None = None) -> int:
    from . import s3  # boto3 is imported only by the commands that use it (sync_mvol.py starts faster)

    p = cli.parser(f"List the {side_name} bucket and print the object count and total size.")
    p.add_argument("--quiet", action="store_true", help="print only the totals, not every object")
    args = p.parse_args(argv)

    def body(a, cfg) -> int:
        from . import storeinfo

        side = cfg.source if side_name == "source" else cfg.destination
        if not _credentials_line(side):
            return cli.FAILED
        endpoints = side.endpoints or (None,)
        count = total = 0
        failed = 0
        about: list[str] = []  # what the store gives as evidence (storeinfo), from the first endpoint that lists
        for i, ep in enumerate(endpoints):
            where = ep or f"AWS {side.region}"
            print(f"TLS {where}: {_tls_line(side, i)}")
            client = s3.client(side, cfg.settings, index=i)
            try:
                n, size, sums, sample = _list_printing(side, client, show=not a.quiet and i == 0)
            except Exception as exc:  # noqa: BLE001 - one line per endpoint, no traceback
                failed += 1
                msg = s3.describe_error(exc, side)
                print(f"FAILED: {msg}", file=sys.stderr)
                if len(endpoints) > 1:
                    print(f"Endpoint {where}: FAILED: {msg}")
                continue
            if len(endpoints) > 1:
                print(f"Endpoint {where}: OK, {n} objects, {size} bytes")
            if not about:
                about = storeinfo.lines(side, client, sums, n, sample)
            if not count and not total:
                count, total = n, size
        if failed == len(endpoints):
            return cli.FAILED
        print("\n".join(about))
        print(f"Total Number of Objects: {count}")
        print(f"Total Size of Objects (bytes): {total}")
        return cli.FAILED if failed else cli.OK

    return cli.run(body, args)


def _list_printing(side, client, show: bool):
    """A connect test's listing of one endpoint: (objects, bytes, the checksums named, counted, one
    key); show: each object is printed as it comes, a thousand lines at a time."""
    from collections import Counter

    from . import s3

    n = size = 0
    lines = []
    sums: Counter = Counter()
    sample = None
    for o in s3.iter_objects(side, client):
        n += 1
        size += o.size
        if o.checksum:
            sums[o.checksum] += 1
        if sample is None:
            sample = o.key
        if show:
            lines.append(f"{o.key!r}: {o.size}\n")
            if len(lines) >= 1000:
                sys.stdout.write("".join(lines))
                lines.clear()
    sys.stdout.write("".join(lines))
    return n, size, sums, sample


def _credentials_line(side) -> bool:
    """A connect test's line on where the side's credentials come from (storeinfo.credentials);
    False, said in one line, when they cannot be obtained (a credential_process that fails, an
    expired SSO token). A profile in neither AWS file raises ConfigError (exit 2)."""
    from . import s3, storeinfo

    try:
        print(storeinfo.credentials(side))
        return True
    except S5jError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        print(f"FAILED: {s3.describe_error(exc, side)}", file=sys.stderr)
        return False


def _warn_tls(side) -> None:
    """The one warning a start logs for a side whose certificates are not verified (tls.py). Each
    sync script warns for its own side: sync_mvol.py leaves it to the two it starts."""
    from . import s3, tls

    msg = tls.start_warning(side.name, {u: s3.tls_mode(side, i) for i, u in enumerate(side.endpoints)})
    if msg:
        log.warning("%s", msg)


def _tls_start(side) -> None:
    """A sync side's start: the warning of _warn_tls, and the refusal (exit 2, nothing moved) of
    an endpoint whose certificate is checked and does not verify, found by one TLS handshake
    with each (tls.probe) before any object is read or written."""
    from . import s3, tls
    from .errors import ConfigError

    _warn_tls(side)
    for i, url in enumerate(side.endpoints):
        mode = s3.tls_mode(side, i)
        reason = tls.probe(url, mode.verify) if mode.checks and not tls.is_aws(url) else None
        if reason:
            raise ConfigError(tls.refusal(side.name, url, reason))


def _tls_line(side, index: int) -> str:
    """What a connect test prints about the TLS of one endpoint: which rule of tls.decide applies."""
    from . import s3, tls

    mode = s3.tls_mode(side, index)
    if mode.kind == tls.SNOWBALL:
        return (f"{mode.label()} (to verify it: snowballEdge get-certificate, then set {side.name}.ca_bundle "
                "in config.yaml)")
    if mode.kind == tls.OFF:
        return f"{mode.label()} ({side.name}.verify_tls: false in config.yaml)"
    return mode.label()
