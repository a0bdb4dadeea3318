"""Source side: list the source once per pass, then work through what is left as staging frees up.

A pass: one listing, streamed into the ledger index (index.Work.new_pass), leaves the work to do on
disk (`todo`, largest first). Each cycle then hands the next objects that fit to the fetcher
(fetch.py: long-lived s5cmd streams that keep working across cycles), counting staging the way
file systems do (whole blocks, an inode each, what is in flight), and each copy, as it lands, is
verified, staged and ledgered (landing.py). The source is listed again only when the pass's work
is done (to catch objects added since), when the ledger was replaced behind the index's back, or
for the final verdict (sync_mvol.py's comparison)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from . import fetch, plan, refusal, s3, s5cmd, shard
from .config import Config
from .copycheck import CopyCheck
from .endpoints import Endpoints, split_by_bytes
from .health import Stall, VolumeWatch
from .index import Index, PassCounts, Work
from .landing import Flight, Landing
from .ledger import SRC_COLUMNS, SRC_LEDGER, Ledger
from .progress import GAVE_UP, MAX_TRIES, SRC_STATE, Progress
from .runtime import (Done, Stopper, file_inode, fmt_bytes, interruptible, poll_loop, remove_quietly,
                      sleep_until_changed)
from .tries import Tries
from .volumes import Volume, device_space, scan_all, staged_name

log = logging.getLogger("s5jtransfer.src")
IN_FLIGHT_POLL = 0.25  # seconds between cycles while copies are in flight (results are taken, more handed over)
LIVE_REFRESH = 5.0  # seconds between probes of a cluster's endpoints
SCAN_ROWS = 20_000  # rows of the pass's work looked at per cycle, at most
PROGRESS_EVERY = 10.0  # seconds between progress lines while copying
WAITING_EVERY = 60.0  # seconds between "wait for space" lines while objects keep waiting (say_waiting)


@dataclass
class CycleStats:
    listed: int = 0
    listed_bytes: int = 0
    done: int = 0
    done_bytes: int = 0
    todo: int = 0
    waiting: int = 0
    in_flight: int = 0
    fed: int = 0
    moved: int = 0
    moved_bytes: int = 0
    adopted: int = 0
    adopted_bytes: int = 0
    failed: int = 0
    mismatched: int = 0
    size_only: int = 0
    no_space: int = 0
    unmappable: int = 0  # listed, but without a valid destination key (see _mappable)
    given_up: int = 0  # left in the pass's work, set aside after MAX_TRIES (see _tried)

    @property
    def complete(self) -> bool:
        return self.todo == 0 and not self.in_flight

    @property
    def only_given_up(self) -> bool:
        return bool(self.given_up) and self.todo == self.given_up + self.unmappable and not self.in_flight


class SourceSync:
    def __init__(self, cfg: Config, stopper: Stopper | None = None, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.side = cfg.source
        self.settings = cfg.settings
        self.stopper = stopper or Stopper()
        self.dry_run = dry_run
        self.watch = VolumeWatch(cfg, create=not dry_run)  # health.py: volumes gone, read-only, too small
        self.volumes: list[Volume] = self.watch.volumes
        self.ledger = Ledger(SRC_LEDGER, SRC_COLUMNS)
        self.index = Index() if not dry_run else Index.elsewhere()
        self.work = Work(self.index)
        self.eps = Endpoints(self.side, self.settings, pool=self.settings.src_workers)
        self._client_at = 0  # the endpoint whose boto3 client lists and reads part sizes
        self._live: list[int] | None = None
        self._live_at = 0.0
        self.binary = None if self.settings.src_use_native_s3 else s5cmd.find_binary(self.settings.s5cmd_path)
        self.checker = CopyCheck(self.side, self.eps.client, lambda: self._client_at)
        self.refusals = refusal.Streak(self.side, "reads")  # a store that refuses every read: exit 2
        self.progress = Progress("source", None if dry_run else SRC_STATE)
        self.stall = Stall("source", self.progress, self.settings.stall_warning_seconds)
        # copies that failed or did not verify (see _tried); those that failed with their s5cmd: s5cmd.retire says it
        self.tries = Tries(self.progress.given_up, quiet_when=s5cmd.failed_with_its_s5cmd)
        self.landing = Landing(self)
        self.fetcher = fetch.Fetcher(self.side, self.settings, self.eps, self.binary, self.stopper, self.landing.landed)
        self.fetcher.halted = lambda: self.refusals.tripped
        self.pass_: PassCounts | None = None  # the current pass's listing
        self.pass_done = (0, 0)  # objects and bytes staged in this pass
        self._relist = True  # list the source at the next cycle
        self._usable: list[int] = list(range(len(self.volumes)))  # volumes that take new copies (health.py)
        self.relist_at: float | None = None  # when a pass whose work is done lists again (next_pause)
        self.list_seconds = 0.0  # how long the last listing took
        self._orphans: dict | None = None  # staged copies at a pass's start, adopted if unledgered
        self._started = False
        self.ledger_inode: int | None = None

    @property
    def client(self):
        """The boto3 client of the endpoint in use (listings, part sizes), made when first needed."""
        return self.eps.client(self._client_at)

    def live(self) -> list[int]:
        """Endpoints to use; probed at most every LIVE_REFRESH seconds (probing is a request)."""
        now = time.monotonic()
        if self._live is None or now - self._live_at >= LIVE_REFRESH:
            self._live, self._live_at = self.eps.live(), now
            self._client_at = self._live[0]
        return self._live

    # -- state ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """The ledger's rows into the index. A ledger replaced behind the index's back (an
        operator's copy) ends the pass: its work was planned against the old one."""
        if not self._started:
            if not self.dry_run:
                self.ledger.ensure()
                self._clear_partials()
            self._started = True
        # the ledger's inode when read: a replacement made while this cycle runs (objects handed
        # back) must end the sleep after it at once, not be taken for the state already known
        self.ledger_inode = file_inode(SRC_LEDGER)
        self.index.refresh(("src",))
        if "src" in self.index.rebuilt:
            self.index.rebuilt.discard("src")
            self._relist = True
        if self.tries.asked_again():
            self.tries.forgive()  # repair_ledger.py ran: what was set aside is tried again
        if not self.checker.trust.matched:
            self.checker.trust.matched = self.index.etags_matched("src")  # its ETags matched before: MD5s

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self) -> CycleStats:
        st = CycleStats()
        with self._reload_on_os_error():
            self.refresh()
            self._usable = self.watch.usable_or_end({f.volume for f in self.landing.flights_now()})
            self.progress.health["volumes"] = self.watch.states()
            live = self.live()
            if self._relist or (self.relist_at is not None and time.monotonic() >= self.relist_at):
                self._list(live)
            self._take(st)
        assert self.pass_ is not None
        todo, todo_bytes = self.work.todo_totals()
        st.listed, st.listed_bytes = self.pass_.listed, self.pass_.listed_bytes
        st.todo = todo
        st.done, st.done_bytes = max(0, st.listed - todo), max(0, st.listed_bytes - todo_bytes)
        st.in_flight = len(self.landing)
        if self._orphans:
            with self._reload_on_os_error():
                self._adopt_staged(st)
        items = self._head(st)
        if self.dry_run:
            print_plan(self, items, live)
            return st
        self._feed(items, live, st)
        self.fetcher.close_idle()
        st.in_flight = len(self.landing)
        return st

    def _list(self, live: list[int]) -> None:
        """A new pass: the source listed once (streamed into the index), a stop never waiting for
        a listing stuck on a dead or hanging endpoint (boto3's retries). Staged copies left by an
        interrupted run are matched to their keys as the listing streams by (_adopt_staged)."""
        keep = None if self.cfg.shard_spec is None else (lambda key: shard.owns(key, self.cfg.shard_spec))
        orphans = {} if self.dry_run else scan_all(self.volumes)
        found: dict[str, tuple] = {}

        def matched(objs):
            for o in objs:
                hit = orphans.get(staged_name(o.key))
                if hit is not None:
                    found[o.key] = hit
                yield o

        started = time.monotonic()
        self.pass_ = interruptible(lambda: s3.listing(
            self.side, lambda: self.client, lambda objs: self.work.new_pass(matched(objs) if orphans else objs, keep),
            live[0]), self.stopper)
        self._relist, self.relist_at = False, None
        self.list_seconds = time.monotonic() - started
        self.pass_done = (0, 0)
        self._orphans = found or None
        p = self.pass_  # the totals before any copy lands: a state file never says done with none listed
        self.progress.set_totals(p.listed, p.listed_bytes, p.listed - p.todo, p.listed_bytes - p.todo_bytes)
        log.info("source: listed %d objects (%s); %d (%s) to move", self.pass_.listed,
                 fmt_bytes(self.pass_.listed_bytes), self.pass_.todo, fmt_bytes(self.pass_.todo_bytes))

    def _take(self, st: CycleStats) -> None:
        """What landed since the last cycle: counted, and dropped from the pass's work (its rows
        are written by now or held by the appender, whose failure fails the cycle)."""
        got = self.landing.take()
        st.moved, st.moved_bytes, st.failed, st.mismatched = got.moved, got.moved_bytes, got.failed, got.mismatched
        st.size_only, st.no_space = got.size_only, got.no_space
        if got.staged:
            self.landing.appender.flush()
            self.work.todo_drop(got.staged)
        if got.size_only:
            log.warning("%d objects verified by size only: their source ETag is no MD5 (SSE-KMS, or an S3-compatible "
                        "store) and they have no checksum; run with --debug to see which", got.size_only)

    @contextlib.contextmanager
    def _reload_on_os_error(self):
        """A step that appends to the ledger: when it fails locally (a full disk under the working
        folder), the rows held may never be written, so the next cycle lists again and adopts the
        verified staged copies that lost their rows; nothing is taken for done meanwhile."""
        try:
            yield
        except OSError:
            self._relist = True
            raise

    def _head(self, st: CycleStats) -> list[plan.Item]:
        """The next objects of the pass's work, largest first, but those in flight, waiting after a
        failed try, set aside, or without a destination key; as many as staging may take now
        (SCAN_ROWS at most)."""
        now = time.monotonic()
        busy = self.landing.keys()
        unmappable = not self.cfg.destination.prefix
        st.given_up = self.work.count(self.tries.given_up) if self.tries.given_up else 0
        if unmappable:
            st.unmappable = self.work.count([""])
            if st.unmappable:
                self._unmappable_once()
        rows = self.work.todo_head(SCAN_ROWS, lambda k: k in busy or not self.tries.due(k, now) or (unmappable and not k))
        return [plan.Item(*r) for r in rows]

    def _unmappable_once(self) -> None:
        """The object whose key is the source prefix itself (relative key '', a key ending in '/'
        that holds data) goes to the destination prefix; with an empty destination prefix it
        would have an empty key, which S3 cannot hold. It is not staged, and the run stays
        incomplete (it counts as not done) until the configuration changes: never a silent skip."""
        if getattr(self, "_said_unmappable", None) is self.pass_:
            return
        self._said_unmappable = self.pass_
        log.error("%r has the source prefix itself as its key: its destination key would be empty, so it cannot be "
                  "moved and the transfer stays incomplete; set destination.bucket_prefix in config.yaml (it then "
                  "goes to exactly that key), or move it by hand", self.side.url(""))

    def _feed(self, items: list[plan.Item], live: list[int], st: CycleStats) -> None:
        """Hand over what fits: staging counted as file systems count (whole blocks, an inode each),
        less what the copies in flight will take, and each volume's batch budget."""
        reserved, per_vol = self.landing.reserved()
        usable = [self.volumes[i] for i in self._usable]
        space = {dev: plan.Space(max(0, sp.bytes - reserved.get(dev, (0, 0))[0]),
                                 None if sp.files is None else max(0, sp.files - reserved.get(dev, (0, 0))[1]), sp.block)
                 for dev, sp in device_space(usable, self.settings.volume_reserve).items()}
        devices = {i: self.volumes[i].device() for i in self._usable}
        slots = [plan.VolumeSlot(i, devices[i], self.settings.max_src2l, per_vol.get(i, 0)) for i in self._usable]
        assigned, waiting = plan.assign(items, slots, space)
        st.waiting, st.fed = len(waiting), len(assigned)
        now = time.monotonic()
        if say_waiting(len(waiting), self._waiting_said, now):
            self._waiting_said = now
            log.info("%d objects (%s) wait for space on the staging volumes", len(waiting),
                     fmt_bytes(sum(i.size for i in waiting)))
        jobs = []
        for a in assigned:
            # an object ledgered before (changed at the source): two rows of its key once it is
            # ledgered again, made one at the pass's end (compact)
            self._compact = self._compact or self.index.row("src", a.item.key) is not None
            vol, name, dev = self.volumes[a.volume], staged_name(a.item.key), devices[a.volume]
            partial = vol.partial_path(name)
            self.landing.expect(partial, Flight(a.item, a.volume, vol, name, dev,
                                                plan.on_disk(a.item.size, space[dev].block)))
            jobs.append(fetch.Job(a.item.key, a.item.size, partial))
        if jobs:
            log.debug("handing %d objects (%s) over to be fetched; %d in flight", len(jobs),
                      fmt_bytes(sum(j.size for j in jobs)), st.in_flight)
            self.fetcher.submit(jobs, live, self.landing.advanced if self.settings.stream_uploads else None)

    _waiting_said: float | None = None  # when the objects waiting for space were last logged
    _all_in_said = -1
    _compact = False

    def end_of_pass(self) -> None:
        """The pass's work is done: the rows written and, where objects moved again (changed at
        the source), the ledger rewritten with one row per key (`wc -l` stays the object count
        plus one), from the index (no other process reads it again)."""
        self.landing.appender.flush()
        if self._compact:
            self._compact = False
            self.index.rewrite("src", lambda db: None)

    def _clear_partials(self) -> None:
        # Nothing is in flight at a start (this process holds the source lock), so anything in a
        # partial folder is left from an interrupted copy and cannot be trusted.
        for v in self.volumes:
            for path in v.scan_partial() + v.scan_notes():
                remove_quietly(path)

    def _adopt_staged(self, st: CycleStats) -> None:
        """Staged copies left by an interrupted run (found at the pass's start, their keys matched
        as the listing streamed by) whose objects are in the pass's work: verified and ledgered,
        not fetched again; one that does not verify is removed and fetched in its turn."""
        found, self._orphans = self._orphans or {}, None
        adopted, busy = [], self.landing.keys()
        for row in self.work.rows_of(found):
            item = plan.Item(*row)
            if item.key in busy:  # landing now (a pass begun with copies in flight)
                continue
            path = found[item.key][0].staged_path(staged_name(item.key))
            got, _why = self.checker.verify(item, path)
            if got is None:
                remove_quietly(path)
                continue
            self.landing.appender.add(got)
            adopted.append(item.key)
            st.adopted += 1
            st.adopted_bytes += item.size
            self.progress.counted(1, item.size)
            if len(adopted) % 1000 == 0:
                self.landing.appender.flush()
        if adopted:
            self.landing.appender.flush()
            self.work.todo_drop(adopted)
            log.info("adopted %d verified staged copies left by an earlier run", len(adopted))

    def _tried(self, item: plan.Item, why: str, st, what: str = "", at_once: bool = False) -> None:
        """One more failed try of an object: tried again after a backoff (tries.py), or after
        MAX_TRIES (at once: no try can help) set aside until a restart or repair_ledger.py, named
        once in the log and in the state file."""
        if self.tries.failed(item.key, why, at_once, what=what):
            st.given_up += 1

    def _note_progress(self, objects: int, nbytes: int) -> None:
        p = self.progress
        p.counted(objects, nbytes)
        # at most once a second, but at once when the listing's last object is in (the
        # destination side's --once reads it to know the source side is done): once, not for
        # every object that lands after the totals were last set (a write is a file replaced)
        last = 0 < p.total <= p.done and self._all_in_said != p.total
        if last:
            self._all_in_said = p.total
        p.write_state(force=last)

    def close(self) -> None:
        """End the fetches (on exit; what was not ledgered is fetched again at the next start),
        and leave the state file saying what is done."""
        self.fetcher.close()
        self.landing.close()
        if self.pass_ is not None and not self.dry_run:
            try:
                self._take(CycleStats())
                todo, todo_bytes = self.work.todo_totals()
                p = self.pass_
                self.progress.set_totals(p.listed, p.listed_bytes, max(0, p.listed - todo),
                                         max(0, p.listed_bytes - todo_bytes))
                self.progress.write_state(force=True)
            except Exception as exc:  # noqa: BLE001 - the rows are on disk; the state is a report
                log.debug("no final state: %s", exc)
        self.index.close()


def print_plan(sync: SourceSync, items: list[plan.Item], live: list[int]) -> None:
    """--dry-run: what the next cycle would hand over, and to which endpoint and volume."""
    space = device_space(sync.volumes, sync.settings.volume_reserve)
    slots = [plan.VolumeSlot(i, v.device(), sync.settings.max_src2l) for i, v in enumerate(sync.volumes)]
    assigned, waiting = plan.assign(items, slots, space)
    # spread as the fetcher spreads them: each to the endpoint with the fewest bytes in flight
    for n, group in enumerate(split_by_bytes(assigned, [a.item.size for a in assigned], len(live))):
        for a in group:
            print(f"would copy {sync.side.url(a.item.key)!r} ({a.item.size} bytes) from "
                  f"{sync.eps.name(live[n])} to {sync.volumes[a.volume].root}")
    for i in waiting:
        print(f"would wait for space: {sync.side.url(i.key)!r} ({i.size} bytes)")
    todo = sync.pass_.todo if sync.pass_ else 0
    print(f"dry run: {len(assigned)} objects ({sum(a.item.size for a in assigned)} bytes) would be copied first, "
          f"{todo - len(assigned)} more after them as staging frees up; nothing was changed")


def run(cfg: Config, once: bool, stopper: Stopper, dry_run: bool = False, supervised: bool = False) -> int:
    """supervised (sync_mvol.py --once): the pass's work done, the side waits without listing
    again (the supervisor's final comparison lists the source and hands back what is missing,
    which reaches the pass's work without a listing); the supervisor stops this side."""
    sync = SourceSync(cfg, stopper, dry_run)
    log.info("source side: %s via %s -> %d staging volume(s): %s", cfg.source.url(),
             cfg.source.endpoint or f"AWS {cfg.source.region}", len(sync.volumes),
             ", ".join(v.root for v in sync.volumes))
    lines = _Lines(sync.progress)

    def after(st: CycleStats, started: float, delay: float) -> float:
        sync.progress.set_totals(st.listed, st.listed_bytes, st.done, st.done_bytes)
        sync.progress.retries += st.failed + st.mismatched
        sync.stall.note(st.todo > st.given_up + st.unmappable or st.in_flight > 0,
                        "space" if st.waiting and not st.in_flight else "endpoint", sync.fetcher.io())
        sync.progress.write_state(force=True)
        sync.refusals.check()
        lines.after(st)
        if st.complete or st.only_given_up:
            sync.end_of_pass()
        if st.complete and once and not supervised:
            log.info("source: every source object is ledgered; done")
            raise Done
        if st.only_given_up and once and not supervised:
            names = sorted(sync.progress.given_up.items())[:10]
            log.error("source: every source object is ledgered but %d set aside after %d tries each: %s; run "
                      "repair_ledger.py, or start again, to try them again", st.given_up, MAX_TRIES,
                      "; ".join(f"{k!r}: {why}" for k, why in names))
            raise Done(GAVE_UP)
        return next_pause(st, cfg.settings, sync, not (once or supervised), delay)

    try:
        return poll_loop(sync.cycle, after, lambda exc: s3.describe_error(exc, cfg.source), cfg.settings, stopper,
                         # wake at once when the ledger is replaced (objects handed back: their work
                         # is in the pass's again); its own appends do not change the inode
                         sleep=lambda secs: sleep_until_changed(SRC_LEDGER, secs, stopper, tick=0.1,
                                                                signature=file_inode, since=sync.ledger_inode),
                         dry_run=dry_run)
    finally:
        sync.close()


def say_waiting(waiting: int, said: float | None, now: float) -> bool:
    """Log the objects that wait for space on the staging volumes? The first time they do, then at
    most every WAITING_EVERY seconds while they do: with staging full, which is the steady state
    when the destination is the slower hop, their number changes at nearly every cycle, and the
    progress line counts them every PROGRESS_EVERY seconds anyway."""
    return waiting > 0 and (said is None or now - said >= WAITING_EVERY)


def next_pause(st: CycleStats, settings, sync: SourceSync, relists: bool, delay: float) -> float:
    """Seconds until the next cycle. With copies in flight, soon (their results are taken and more
    handed over). A pass whose work is done (or set aside) is followed by a new listing (objects
    added since) when the side lists again at all (relists): max_poll_interval_seconds after the
    pass ended, or twice the last listing's time if that is longer, so that a huge prefix is not
    listed back to back. Objects handed back wake the side and are worked without a listing."""
    if st.in_flight or st.fed:
        return IN_FLIGHT_POLL
    if st.complete or st.only_given_up:
        if not relists:
            return settings.max_poll_interval
        now = time.monotonic()
        if sync.relist_at is None:
            sync.relist_at = now + max(settings.max_poll_interval, 2 * sync.list_seconds)
        return min(settings.max_poll_interval, max(IN_FLIGHT_POLL, sync.relist_at - now))
    if st.waiting:
        return min(settings.poll_interval, IN_FLIGHT_POLL * 2)  # waiting for space: a local statvfs per look
    return min(max(delay * 2, settings.poll_interval), settings.max_poll_interval)  # waiting for a retry


class _Lines:
    """One progress line per PROGRESS_EVERY seconds while something is copied, adopted or fails
    (cycles come every 0.25 s), and at once when a pass ends."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.at = 0.0
        self.moved = self.failed = self.adopted = 0

    def after(self, st: CycleStats) -> None:
        self.moved += st.moved
        self.failed += st.failed + st.mismatched
        self.adopted += st.adopted
        now = time.monotonic()
        ended = st.complete or st.only_given_up
        if (self.moved or self.failed or self.adopted) and (ended or now - self.at >= PROGRESS_EVERY) or \
                (ended and not self.at):
            log.info("source: %s; since the last line: %d copied, %d adopted, %d failed; %d in flight, %d waiting "
                     "for space", self.progress.line(), self.moved, self.adopted, self.failed, st.in_flight,
                     st.waiting)
            self.at, self.moved, self.failed, self.adopted = now, 0, 0, 0
