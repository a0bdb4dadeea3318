"""transfer_settings.metrics_file: the Prometheus text file a running sync_mvol.py keeps rewriting."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = ("s5jtransfer_objects_total", "s5jtransfer_bytes_total", "s5jtransfer_retries_total")


def read_metrics(path) -> dict[tuple[str, tuple], float] | None:
    """(sample, sorted labels) -> value; None before the file is first written. Every read must
    parse: the file is replaced whole, never seen half written."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert ("s5jtransfer_complete", ()) in out, text  # written whole
    return out


def dest(name: str) -> tuple:
    return (name, (("side", "destination"),))


def test_sync_mvol_writes_metrics_that_parse_never_go_down_and_end_complete(work, tmp_path_factory):
    data = {f"d{i % 2}/f{i}.bin": os.urandom(200 + 97 * i) for i in range(12)}
    data["empty.txt"] = b""
    work.put_all(data)
    folder = tmp_path_factory.mktemp("textfile")
    prom = folder / "s5jtransfer.prom"
    work.cfg["transfer_settings"]["metrics_file"] = str(prom)
    work.write_config()

    proc = work.start("sync_mvol.py", "--once")
    seen: dict[tuple, float] = {}
    reads = 0
    deadline = time.monotonic() + 60
    try:
        while True:
            ended = proc.poll() is not None  # read once more after the exit: the last write
            m = read_metrics(prom)
            if m is not None:
                reads += 1
                for k, v in m.items():
                    if k[0] in COUNTERS:
                        assert v >= seen.get(k, 0.0), (k, v, seen.get(k))
                        seen[k] = v
            if ended:
                break
            assert time.monotonic() < deadline, "sync_mvol.py --once did not end"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (work.path / "sync_mvol.py.log").read_text()
    assert reads >= 2

    m = read_metrics(prom)
    assert m[dest("s5jtransfer_objects_total")] == len(data)
    assert m[dest("s5jtransfer_bytes_total")] == sum(map(len, data.values()))
    assert m[dest("s5jtransfer_objects_done")] == len(data)
    assert m[("s5jtransfer_objects_total", (("side", "source"),))] == len(data)
    assert m[("s5jtransfer_complete", ())] == 1
    assert m[dest("s5jtransfer_up")] == 0 and m[("s5jtransfer_up", (("side", "source"),))] == 0  # ended
    assert os.listdir(folder) == ["s5jtransfer.prom"]  # written to a temporary name, then renamed

    # a second run moves nothing: the counters go on from the state files, never back to 0
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    again = read_metrics(prom)
    assert again[dest("s5jtransfer_objects_total")] == len(data)
    assert again[("s5jtransfer_complete", ())] == 1


def test_dry_run_writes_no_metrics(work, tmp_path_factory):
    work.put_all({"a.txt": b"a"})
    prom = tmp_path_factory.mktemp("textfile") / "s5jtransfer.prom"
    work.cfg["transfer_settings"]["metrics_file"] = str(prom)
    work.write_config()
    r = work.run("src_sync_mvol.py", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not prom.exists()
