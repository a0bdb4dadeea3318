"""Command-line plumbing: arguments, logging, config, locks, signals, exception -> exit code."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

from . import config as config_mod
from .errors import S5jError
from .ledger import LOCKS, ProcessLock, has_rows

log = logging.getLogger("s5jtransfer")

# Exit codes (README "Exit codes").
OK, FAILED, CONFIG, LOCKED = 0, 1, 2, 3

def setup_logging(log_file: str | None = None, debug: bool = False) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    root.handlers.clear()
    # WatchedFileHandler: a log file moved away by logrotate (or by hand) is opened anew
    handler: logging.Handler = logging.handlers.WatchedFileHandler(log_file) if log_file \
        else logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parser(description: str, once: bool = False, dry_run: bool = False, shard: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if shard:
        p.add_argument("--shard", metavar="K/N", default=None,
                       help="take only shard K of N: the keys whose CRC32 modulo N is K (overrides "
                            "transfer_settings.shard and a scheduler's index; see docs/operations.md)")
    if once:
        p.add_argument("--once", action="store_true", help="exit 0 when the work is done instead of polling forever")
        # set by sync_mvol.py --once for its children (it verifies both sides itself at the end)
        p.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
        # ... with the time its round started: the other side's state files must be newer
        p.add_argument("--round-start", type=float, default=None, help=argparse.SUPPRESS)
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="print what would move and change nothing")
    p.add_argument("--log-file", help="append log lines to this file instead of standard error")
    p.add_argument("--debug", action="store_true", help="per-object detail and tracebacks in the log")
    return p


def load_config() -> config_mod.Config:
    cfg = config_mod.load(config_mod.CONFIG_NAME)
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


def run(body: Callable[[argparse.Namespace, config_mod.Config], int], args: argparse.Namespace,
        lock: str | None = None, shard: str | None = None, metrics: bool = False) -> int:
    """Load config.yaml, take the command's lock, run its body; map S5jError to one line and
    its exit code, without a traceback. Nothing is written before the config is valid.
    shard: how the command uses the shard (shard.py); the body finds it in cfg.shard_spec:
    "sync" (a sync script: resolved, checked against the working folder's record, recorded at
    the first start), "repair" (as "sync", else the folder's record: it rewrites the ledgers
    for that shard), "read" (status: as "repair", never recorded) or "count" (--all-shards,
    --plan-shards: resolved, else the record, not checked: only the count is used).
    metrics: a sync script, which publishes the folder's metrics while it runs (metrics.py) when
    config.yaml asks for them, but not for --dry-run."""
    if threading.current_thread() is threading.main_thread():
        # the script's start-up handler (exit at once while modules load) gives way to
        # KeyboardInterrupt, which this function and the commands' own handlers turn into 130
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        setup_logging(getattr(args, "log_file", None), getattr(args, "debug", False))
    except OSError as exc:
        sys.stderr.write(f"cannot open the log file {args.log_file!r}: {exc.strerror or exc}; "
                         "give --log-file a file in a folder that exists and is writable\n")
        return CONFIG
    held = writer = None
    try:
        cfg = load_config()
        if lock and not getattr(args, "dry_run", False):
            path, what = LOCKS[lock]
            try:
                held = ProcessLock(path, what).acquire()
            except OSError as exc:
                log.error("cannot write in the working folder %s (%s); run the scripts from a folder you can "
                          "write, which holds the ledgers", os.getcwd(), exc.strerror or exc)
                return CONFIG
        if shard:
            cfg = _with_shard(cfg, args, shard)
        if metrics and not getattr(args, "dry_run", False):
            writer = _metrics(cfg)
        return body(args, cfg)
    except S5jError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return FAILED
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        log.error("unexpected error: %s: %s (run with --debug for the traceback)", type(exc).__name__, exc,
                  exc_info=getattr(args, "debug", False))
        return FAILED
    finally:
        if writer:
            writer.close()
        if held:
            held.release()


def _metrics(cfg: config_mod.Config):
    """The folder's metrics writer (metrics.py), when transfer_settings.metrics_file or metrics_port
    is set; prometheus_client is imported only then."""
    if not cfg.settings.metrics_file and not cfg.settings.metrics_port:
        return None
    try:
        from . import metrics
    except ImportError as exc:
        log.warning("transfer_settings.metrics_file/metrics_port are set but %s; going on without metrics: install "
                    "the requirements (.venv/bin/pip install -r requirements.txt) and start again", exc)
        return None
    return metrics.start(cfg.settings.metrics_file, cfg.settings.metrics_port)


def _with_shard(cfg: config_mod.Config, args: argparse.Namespace, role: str) -> config_mod.Config:
    """cfg with shard_spec set (see run); a mismatch with the folder's record is a ConfigError."""
    import dataclasses

    from . import shard as shard_mod
    from .ledger import DEST_LEDGER, SRC_LEDGER

    spec, source = shard_mod.resolve(getattr(args, "shard", None), cfg.shard, cfg.shard_count,
                                     need_index=role == "sync")
    if role != "sync" and spec is None and getattr(args, "shard", None) is None and cfg.shard is None:
        spec, source = shard_mod.recorded(), shard_mod.SHARD_FILE
    if role != "count":  # "count": only the number of shards is read (--all-shards), no folder's work
        write = role in ("sync", "repair") and not getattr(args, "dry_run", False)
        shard_mod.check_folder(spec, has_work=any(has_rows(p) for p in (SRC_LEDGER, DEST_LEDGER)), write=write)
    if spec is not None and role == "sync":
        log.info("shard %s (from %s): only the keys whose CRC32 modulo %d is %d", spec, source, spec.count, spec.index)
    return dataclasses.replace(cfg, shard_spec=spec)


def script_main(command: Callable[[], int], fast: bool = False) -> NoReturn:
    """A top-level script's end: run its command, a Ctrl-C that escapes it is 130 without a
    traceback, then exit. fast: without the interpreter's teardown (exit_now); else a Ctrl-C
    arriving once the work is done is ignored, so it cannot interrupt the exit."""
    try:
        code = command()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    if fast:
        exit_now(code)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def exit_now(code: int) -> NoReturn:
    """Exit with `code` at once, without the interpreter's teardown: with boto3 loaded, freeing
    every object one by one takes a few tenths of a second, on the critical path of a
    `sync_mvol.py --once` run (which waits for its sides' exits, and an operator's shell for its
    own). Nothing is lost: ledger rows are fsynced as they are appended, state, report and run
    files are written whole and closed, locks and children are released and waited for before
    the command returns; the log and the standard streams are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
