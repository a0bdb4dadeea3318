"""compare.compare, the streaming comparison through the ledger index, against the pure decisions
it applies (verify.classify, src_rows_to_keep, dest_rows_to_keep) on random sides: the same
category for every source object, the same ledgers afterwards, the same keys to move again. The
listings are stubbed (loaded straight into the index); ledgers, staged copies and the missing file
are real files."""

from __future__ import annotations

import hashlib
import random

import pytest
import yaml

from s5jtransfer import compare, config, verify
from s5jtransfer.index import Index, Work
from s5jtransfer.ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, decode_key, encode_key
from s5jtransfer.s3 import Obj
from s5jtransfer.volumes import Volume, staged_name

ETAGS = [hashlib.md5(s.encode()).hexdigest() for s in ("one", "two")] + [hashlib.md5(b"p").hexdigest() + "-3"]
ODD = ["a,b", "line\nbreak", "x/../y", "ü/€ key", " lead", "urlenc:zz", "%41"]


def _cfg(tmp_path):
    raw = {"source": {"bucket_name": "src", "bucket_prefix": "", "region": "us-east-1"},
           "local": {"directory": str(tmp_path / "vol"), "volumes": [str(tmp_path / "vol")]},
           "destination": {"bucket_name": "dst", "bucket_prefix": "", "region": "us-east-1"},
           "transfer_settings": {"max_size_to_transfer_src2l": 1000, "src_endpoint_url": "no_endpoint",
                                 "dest_endpoint_url": "no_endpoint"}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(raw))
    p.chmod(0o600)
    return config.load(str(p))


def _sides(rng: random.Random):
    """Random listings, ledgers, staged copies and keys to move again, over every combination the
    decisions tell apart."""
    src, dst, srows, drows, staged, to_move = {}, {}, {}, {}, {}, set()
    keys = [f"k{i:03d}" for i in range(60)] + ODD
    for key in keys:
        o = Obj(key, rng.choice([0, 5, 10]), rng.choice(ETAGS))
        if rng.random() < 0.9:
            src[key] = o
        pick = rng.random()
        if pick < 0.4:
            dst[key] = o
        elif pick < 0.55:
            dst[key] = Obj(key, o.size + rng.choice([0, 1]), rng.choice(ETAGS))
        if rng.random() < 0.6:
            srows[key] = (o.size if rng.random() < 0.8 else o.size + 1, rng.choice([o.etag, o.etag, "", ETAGS[1]]),
                          rng.choice(["md5", "size", "destination"]), rng.choice(["", ETAGS[0]]))
        if rng.random() < 0.5:
            d = dst.get(key, o)
            drows[key] = (d.size if rng.random() < 0.8 else d.size + 2, rng.choice([d.etag, "", ETAGS[0]]),
                          rng.choice(["md5", "size"]), rng.choice([o.etag, "", ETAGS[1]]))
        if rng.random() < 0.3:
            staged[staged_name(key)] = o.size if rng.random() < 0.8 else o.size + 1
        if rng.random() < 0.1:
            to_move.add(key)
    dst["only-at-destination"] = Obj("only-at-destination", 1, ETAGS[0])
    return src, dst, srows, drows, staged, to_move


def _probed(src, dst) -> bool:
    """Whether compare._opaque asks the stores: a key of the same size whose MD5 ETags differ."""
    md5 = lambda e: len(e) == 32 and all(c in "0123456789abcdef" for c in e)  # noqa: E731
    return any(k in dst and dst[k].size == o.size and dst[k].etag != o.etag and md5(o.etag) and md5(dst[k].etag)
               for k, o in src.items())


@pytest.mark.parametrize("seed", range(12))
def test_the_streaming_comparison_decides_as_the_pure_functions(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    opaque_answer = seed % 3 == 0  # some runs: the stores' ETags are no MD5s
    src, dst, srows, drows, staged, to_move = _sides(rng)
    cfg = _cfg(tmp_path)
    vol = Volume(str(tmp_path / "vol"))
    vol.ensure()
    for name, size in staged.items():
        with open(vol.staged_path(name), "wb") as fh:
            fh.write(b"x" * size)
    Ledger(str(tmp_path / SRC_LEDGER), SRC_COLUMNS).rewrite(srows)
    Ledger(str(tmp_path / DEST_LEDGER), DEST_COLUMNS).rewrite(drows)
    missing_file = tmp_path / "missing_keys.txt"
    missing_file.write_text("".join(encode_key(k) + "\n" for k in sorted(to_move)), encoding="utf-8")
    monkeypatch.setattr(compare, "list_into", lambda index, name, side, c: index.load_listing(
        name, sorted((src if side is c.source else dst).values())))
    monkeypatch.setattr(verify, "etags_opaque", lambda side, c, keys: opaque_answer)

    index = Index(str(tmp_path))
    summary, fig = compare.compare(cfg, index, str(missing_file))

    opaque = (opaque_answer, opaque_answer) if _probed(src, dst) else (False, False)
    rep = verify.classify(src, dst, srows, drows, staged, frozenset(to_move), opaque)
    assert dict(summary.counts) == dict(rep.counts())
    assert summary.complete == rep.complete
    assert summary.left() == rep.keys(verify.PENDING, verify.MISSING, verify.DIFFER)
    assert fig["only_at_destination"] == rep.extra_at_destination >= 1
    assert summary.moved_bytes == sum(src[k].size for k in rep.keys(verify.MOVED))
    again = [decode_key(line) for line in missing_file.read_text(encoding="utf-8").split("\n")[:-1]]
    assert again == rep.keys(verify.MISSING, verify.DIFFER) and fig["to_move_again"] == len(again)
    # the ledgers on disk (read by a fresh load, not the index) are what the pure functions keep
    assert Ledger(str(tmp_path / SRC_LEDGER), SRC_COLUMNS).load() == verify.src_rows_to_keep(rep, src, srows)
    assert Ledger(str(tmp_path / DEST_LEDGER), DEST_COLUMNS).load() == verify.dest_rows_to_keep(rep, src, dst, drows)
    # what moves again is in the source side's work at once (a running side fetches it, no listing)
    work = Work(index).rows_of(src)
    assert sorted(r[0] for r in work) == sorted(again) and all((r[1], r[2]) == src[r[0]][1:3] for r in work)
    index.close()


def test_rows_a_side_wrote_while_the_listings_ran_are_kept(tmp_path, monkeypatch):
    """The changes apply only where a row is as the snapshot read it: a source side that ledgers an
    object while the listings run (after the snapshot) keeps its row, although the comparison,
    from its snapshot, would have removed it."""
    cfg = _cfg(tmp_path)
    Volume(str(tmp_path / "vol")).ensure()
    e = ETAGS[0]
    src = {"a": Obj("a", 5, e), "b": Obj("b", 5, e)}
    led = Ledger(str(tmp_path / SRC_LEDGER), SRC_COLUMNS)
    led.rewrite({"a": (4, e, "md5", "")})  # another size: missing, its row goes

    def listing(index, name, side, c):
        if side is c.source:
            led.append([("a", 5, e, "md5", "")])  # the source side fetched it meanwhile
        return index.load_listing(name, sorted((src if side is c.source else {}).values()))

    monkeypatch.setattr(compare, "list_into", listing)
    index = Index(str(tmp_path))
    summary, _fig = compare.compare(cfg, index, str(tmp_path / "missing_keys.txt"))
    assert summary.counts[verify.MISSING] == 2
    assert Ledger(str(tmp_path / SRC_LEDGER), SRC_COLUMNS).load() == {"a": (5, e, "md5", "")}
    index.close()
