import os
def test_once(work):
    data = {f"f{i}.txt": os.urandom(1000 + i) for i in range(20)}
    data["big.bin"] = os.urandom(12 * 1024 * 1024)
    data["sp ace $(x) 'q'"] = b"hello"
    for k, v in data.items():
        work.put(k, v)
    r = work.run("sync_mvol.py", "--once", timeout=120)
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert work.ledger_lines() == len(data) + 1
    assert work.staged_files() == []
    r = work.run("repair_ledger.py")
    print(r.stdout, r.stderr)
    assert r.returncode == 0
