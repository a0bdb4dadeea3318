"""Unit tests for shards (s5jtransfer.shard, issue 19): parsing, ownership, resolution, the working
folder's record, config keys, the balance plan, and the scheduler manifests in docs/examples."""

from __future__ import annotations

import configparser
import json
import os
import zlib
from pathlib import Path

import pytest
import yaml

from s5jtransfer import cli, config, shard
from s5jtransfer.errors import ConfigError
from s5jtransfer.plan import Item

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "docs" / "examples"
KEYS = [f"site/2026/11/cam-{c:02d}/IMG_{i:06d}.jpg" for c in range(4) for i in range(500)] + \
    ["", "a", "é/ü.txt", "odd name 'q' $(echo x) *[x].txt", "line\nbreak"]


# -- parse ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [("0/4", (0, 4)), ("3/4", (3, 4)), (" 1/3 ", (1, 3)), ("0/1", (0, 1)),
                                       ("2-5", (2, 5)), ("0-4", (0, 4))])
def test_parse_accepts_k_of_n_and_the_systemd_instance_form(text, want):
    assert shard.parse(text) == shard.Spec(*want)
    assert str(shard.parse(text)) == f"{want[0]}/{want[1]}"


@pytest.mark.parametrize("text,problem", [("4/4", "below the count"), ("5/4", "below the count"),
                                          ("1/0", "1 to 4096"), ("0/5000", "1 to 4096"), ("-1/4", "not a shard"),
                                          ("a/4", "not a shard"), ("1/2/3", "not a shard"), ("", "not a shard"),
                                          ("3", "not a shard"), (None, "not a shard"), (True, "not a shard")])
def test_parse_refuses_bad_specs_naming_the_fix(text, problem):
    with pytest.raises(ConfigError) as ei:
        shard.parse(text, "--shard")
    msg = str(ei.value)
    assert ei.value.exit_code == 2
    assert msg.startswith("--shard") and problem in msg and "write K/N with 0 <= K < N, e.g. 0/4" in msg, msg


# -- ownership --------------------------------------------------------------------------------
def test_owns_is_crc32_of_the_relative_keys_utf8_bytes_modulo_n():
    for key in KEYS:
        for n in (1, 2, 3, 7, 10):
            k = zlib.crc32(key.encode("utf-8")) % n
            assert shard.shard_of(key, n) == k
            assert shard.owns(key, shard.Spec(k, n))
            assert [j for j in range(n) if shard.owns(key, shard.Spec(j, n))] == [k]  # exactly one owner


def test_known_values_never_change_between_releases():
    # hosts of one job may run different releases: the owner of a key must be stable
    assert [shard.shard_of("site/2026/11/cam-03/IMG_000123.jpg", n) for n in (3, 4, 8, 10)] == \
        [zlib.crc32(b"site/2026/11/cam-03/IMG_000123.jpg") % n for n in (3, 4, 8, 10)]
    assert shard.shard_of("a", 4) == 0xE8B7BE43 % 4  # CRC32("a"), the standard check value
    assert shard.shard_of("é", 5) == zlib.crc32("é".encode("utf-8")) % 5


def test_a_key_that_is_not_utf8_hashes_its_original_bytes():
    raw = b"bad\xffname"
    key = raw.decode("utf-8", "surrogateescape")  # as a ledger reads it
    assert shard.shard_of(key, 7) == zlib.crc32(raw) % 7


def test_select_partitions_a_listing_and_no_shard_keeps_everything():
    items = [Item(k, i, "e") for i, k in enumerate(KEYS)]
    assert shard.select(items, None) is items
    assert shard.select(items, shard.Spec(0, 1)) is items
    parts = [shard.select(items, shard.Spec(k, 3)) for k in range(3)]
    assert sorted(i for p in parts for i in p) == sorted(items)  # each exactly once
    assert all(len(p) > 0.25 * len(items) for p in parts)
    assert all(shard.owns(i.key, shard.Spec(k, 3)) for k, p in enumerate(parts) for i in p)
    m = {i.key: i.size for i in items}
    assert shard.select_map(m, None) == m
    maps = [shard.select_map(m, shard.Spec(k, 3)) for k in range(3)]
    assert {k: v for p in maps for k, v in p.items()} == m and sum(map(len, maps)) == len(m)


# -- resolution -------------------------------------------------------------------------------
def test_resolution_order_flag_then_config_then_scheduler_index():
    env = {"JOB_COMPLETION_INDEX": "2", "AWS_BATCH_JOB_ARRAY_INDEX": "3"}
    cfg_spec = shard.Spec(1, 4)
    assert shard.resolve("0/4", cfg_spec, 4, env) == (shard.Spec(0, 4), "--shard")
    assert shard.resolve(None, cfg_spec, 4, env)[0] == cfg_spec
    spec, where = shard.resolve(None, None, 4, env)
    assert spec == shard.Spec(2, 4) and "JOB_COMPLETION_INDEX" in where  # Kubernetes first
    spec, where = shard.resolve(None, None, 4, {"AWS_BATCH_JOB_ARRAY_INDEX": "3"})
    assert spec == shard.Spec(3, 4) and "AWS_BATCH_JOB_ARRAY_INDEX" in where
    assert shard.resolve(None, None, 4, {"JOB_COMPLETION_INDEX": "", "AWS_BATCH_JOB_ARRAY_INDEX": "1"})[0] == \
        shard.Spec(1, 4)
    # an index without shard_count is not a shard (an Indexed Job may run other work)
    assert shard.resolve(None, None, None, env) == (None, "")
    assert shard.resolve(None, None, None, {}) == (None, "")


def test_resolution_errors_name_the_fix():
    with pytest.raises(ConfigError, match="no shard index is given; pass --shard K/N"):
        shard.resolve(None, None, 4, {})
    assert shard.resolve(None, None, 4, {}, need_index=False) == (None, "")
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX=4 but transfer_settings.shard_count is 4.*make "
                                          "completions"):
        shard.resolve(None, None, 4, {"JOB_COMPLETION_INDEX": "4"})
    with pytest.raises(ConfigError, match="AWS_BATCH_JOB_ARRAY_INDEX='x' is not a shard index"):
        shard.resolve(None, None, 4, {"AWS_BATCH_JOB_ARRAY_INDEX": "x"})
    with pytest.raises(ConfigError, match="--shard: '4/4'"):
        shard.resolve("4/4", None, None, {})
    assert shard.count_for_all(shard.Spec(1, 5), 3) == 5
    assert shard.count_for_all(None, 3) == 3
    with pytest.raises(ConfigError, match="--all-shards needs the number of shards"):
        shard.count_for_all(None, None)


# -- the working folder's record ----------------------------------------------------------------
def test_first_start_records_the_shard_and_another_is_refused_with_how_to_reshard(tmp_path):
    shard.check_folder(shard.Spec(1, 3), str(tmp_path))
    assert (tmp_path / shard.SHARD_FILE).read_text() == "1/3\n"
    assert shard.recorded(str(tmp_path)) == shard.Spec(1, 3)
    shard.check_folder(shard.Spec(1, 3), str(tmp_path), has_work=True)  # the same shard again: fine
    for other in (shard.Spec(2, 3), shard.Spec(1, 4), None):
        with pytest.raises(ConfigError) as ei:
            shard.check_folder(other, str(tmp_path), has_work=True)
        msg = str(ei.value)
        assert ei.value.exit_code == 2
        assert "records shard 1/3" in msg and "python reset.py" in msg and "new working folder" in msg, msg
    assert (tmp_path / shard.SHARD_FILE).read_text() == "1/3\n"


def test_unsharded_folders_write_nothing_and_refuse_a_shard_once_they_hold_work(tmp_path):
    shard.check_folder(None, str(tmp_path))
    assert not (tmp_path / shard.SHARD_FILE).exists()
    with pytest.raises(ConfigError, match="ledgers of a run without shards.*python reset.py"):
        shard.check_folder(shard.Spec(0, 2), str(tmp_path), has_work=True)
    shard.check_folder(shard.Spec(0, 2), str(tmp_path), write=False)  # a dry run records nothing
    assert not (tmp_path / shard.SHARD_FILE).exists()


def _folder(tmp_path, monkeypatch, ts: dict | None = None) -> None:
    cfg = {"source": {"bucket_name": "src-bucket", "bucket_prefix": "data/", "region": "us-east-1"},
           "local": {"directory": str(tmp_path / "staging")},
           "destination": {"bucket_name": "dst-bucket", "bucket_prefix": "", "region": "us-east-1"},
           "transfer_settings": {"max_size_to_transfer_src2l": 1000, "src_endpoint_url": "http://127.0.0.1:9",
                                 "dest_endpoint_url": "http://127.0.0.1:9", **(ts or {})}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "config.yaml").chmod(0o600)
    monkeypatch.chdir(tmp_path)
    for name in shard.ENV_INDEXES:
        monkeypatch.delenv(name, raising=False)


def _run(argv, role, parser_kwargs=None):
    """cli.run of a body that returns the shard it was given."""
    seen = {}
    p = cli.parser("t", **(parser_kwargs or {"once": True, "dry_run": True, "shard": True}))
    args = p.parse_args(argv)

    def body(a, cfg):
        seen["spec"] = cfg.shard_spec
        return 0

    return cli.run(body, args, shard=role), seen.get("spec")


def test_cli_resolves_records_and_refuses_with_exit_code_2(tmp_path, monkeypatch, capsys):
    _folder(tmp_path, monkeypatch)
    assert _run(["--shard", "0/3", "--dry-run"], "sync") == (0, shard.Spec(0, 3))
    assert not (tmp_path / "shard.txt").exists()  # a dry run writes nothing
    assert _run(["--shard", "0/3"], "sync") == (0, shard.Spec(0, 3))
    assert (tmp_path / "shard.txt").read_text() == "0/3\n"
    capsys.readouterr()
    rc, spec = _run(["--shard", "1/3"], "sync")
    assert (rc, spec) == (2, None)
    err = capsys.readouterr().err  # the log (cli.run logs to standard error)
    assert "records shard 0/3" in err and "asks for shard 1/3" in err and "python reset.py" in err, err
    assert _run([], "sync")[0] == 2  # no shard at all in a shard's folder: refused too
    # status and repair take the folder's record when given none
    assert _run([], "read", {"shard": True}) == (0, shard.Spec(0, 3))
    assert _run([], "repair", {"shard": True}) == (0, shard.Spec(0, 3))
    assert _run(["--shard", "2/3"], "read", {"shard": True})[0] == 2
    assert _run(["--shard", "2/5"], "count", {"shard": True}) == (0, shard.Spec(2, 5))  # only the count is read


def test_cli_takes_the_scheduler_index_with_shard_count(tmp_path, monkeypatch):
    _folder(tmp_path, monkeypatch, {"shard_count": 4})
    assert _run([], "sync")[0] == 2  # shard_count but no index: every host would move everything
    assert not (tmp_path / "shard.txt").exists()
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "3")
    assert _run([], "sync") == (0, shard.Spec(3, 4))
    assert (tmp_path / "shard.txt").read_text() == "3/4\n"
    assert _run([], "read", {"shard": True}) == (0, shard.Spec(3, 4))


def test_reset_removes_the_record(tmp_path, monkeypatch):
    from s5jtransfer import commands

    _folder(tmp_path, monkeypatch)
    vol = tmp_path / "vol1"
    vol.mkdir()
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["local"]["volumes"] = [str(vol)]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shard.record(shard.Spec(1, 2), str(tmp_path))
    assert commands.reset([]) == 0
    assert not (tmp_path / "shard.txt").exists()
    assert _run(["--shard", "0/5"], "sync") == (0, shard.Spec(0, 5))


# -- config keys ------------------------------------------------------------------------------
def _load(tmp_path, ts: dict | None = None, top: dict | None = None):
    cfg = {"source": {"bucket_name": "src-bucket", "bucket_prefix": "", "region": "us-east-1"},
           "local": {"directory": "/tmp/s5j"},
           "destination": {"bucket_name": "dst-bucket", "bucket_prefix": "", "region": "us-east-1"},
           "transfer_settings": {"max_size_to_transfer_src2l": 1000, "src_endpoint_url": "no_endpoint",
                                 "dest_endpoint_url": "no_endpoint", **(ts or {})}, **(top or {})}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    p.chmod(0o600)
    return config.load(str(p))


def test_config_accepts_shard_and_shard_count_under_transfer_settings(tmp_path):
    c = _load(tmp_path)
    assert (c.shard, c.shard_count, c.shard_spec) == (None, None, None)
    c = _load(tmp_path, {"shard": "2/5"})
    assert c.shard == c.shard_spec == shard.Spec(2, 5) and c.shard_count is None
    c = _load(tmp_path, {"shard_count": 6})
    assert (c.shard, c.shard_count) == (None, 6)
    c = _load(tmp_path, {"shard": "1/6", "shard_count": "6"})
    assert (c.shard, c.shard_count) == (shard.Spec(1, 6), 6)
    # the shipped config has no shard: every key, as before
    assert config.load(str(ROOT / "config.yaml")).shard_spec is None if (ROOT / "config.yaml").exists() else True


@pytest.mark.parametrize("ts,top,needle", [
    ({"shard": "5/5"}, None, "transfer_settings.shard: '5/5': the index must be below the count"),
    ({"shard": "x"}, None, "transfer_settings.shard: 'x' is not a shard; write K/N"),
    ({"shard_count": 0}, None, "transfer_settings.shard_count: '0' is not a shard count; write the number of shards"),
    ({"shard_count": "four"}, None, "is not a shard count"),
    ({"shard": "1/4", "shard_count": 3}, None, "3 differs from the count of shard 1/4"),
    (None, {"shard": "0/4"}, "shard: unknown section; put shard: under transfer_settings:"),
    (None, {"shard_count": 4}, "put shard_count: under transfer_settings:"),
])
def test_config_shard_errors_name_the_key_and_the_fix(tmp_path, ts, top, needle):
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, ts, top)
    assert needle in str(ei.value) and str(tmp_path) in str(ei.value), str(ei.value)


# -- balance ----------------------------------------------------------------------------------
def test_plan_counts_every_object_once_with_shares_and_imbalance():
    items = [(k, 10 * i) for i, k in enumerate(KEYS)]
    for n in (1, 3, 4, 8, 10):
        b = shard.plan(items, n)
        assert b.count == n and len(b.shares) == n
        assert b.objects == len(items) and b.bytes == sum(s for _k, s in items)
        for s in b.shares:
            mine = [(k, v) for k, v in items if shard.shard_of(k, n) == s.index]
            assert (s.objects, s.bytes) == (len(mine), sum(v for _k, v in mine))
        assert 1.0 <= b.imbalance("objects") < 1.25
        d = b.as_dict()
        assert abs(sum(x["objects_pct"] for x in d["shares"]) - 100) < 0.01
        assert d["max_over_mean_objects"] == round(max(s.objects for s in b.shares) / (len(items) / n), 4)
    other = next(k for k in KEYS if shard.shard_of(k, 2) != shard.shard_of("big", 2))
    one = shard.plan([("big", 100), (other, 1)], 2)  # one object is never split: 100 of 101 bytes on one host
    assert one.imbalance("bytes") == pytest.approx(100 / 50.5)
    assert shard.plan([], 3).imbalance("bytes") == 0.0
    text = shard.render_plan(shard.plan(items, 4))
    assert "4 shards over 2005 objects" in text and "3/4" in text and "max/mean: objects" in text
    with pytest.raises(ConfigError):
        shard.plan(items, 0)


# -- the schedulers' manifests (docs/examples) ----------------------------------------------------
def test_systemd_template_unit_carries_the_shard_in_its_instance_name():
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str
    unit.read(EXAMPLES / "s5jtransfer@.service")
    svc = unit["Service"]
    argv = svc["ExecStart"].split()
    assert argv[1].endswith("/sync_mvol.py") and "--once" in argv
    assert argv[argv.index("--shard") + 1] == "%i"
    assert "%i" in svc["WorkingDirectory"]  # one working folder per shard
    assert set(svc["RestartPreventExitStatus"].split()) == {"2", "3"}  # config error, lock held
    assert svc["Restart"] == "on-failure" and unit["Install"]["WantedBy"]
    # the instance name as systemd passes it (s5jtransfer@0-4.service -> %i = 0-4) is a valid --shard
    assert shard.parse("0-4") == shard.Spec(0, 4)
    from s5jtransfer.commands import cli as _cli  # the flag exists on sync_mvol.py's parser
    assert _cli.parser("t", once=True, shard=True).parse_args(["--shard", "0-4", "--once"]).shard == "0-4"


def test_kubernetes_indexed_job_matches_the_config_it_mounts(tmp_path):
    docs = list(yaml.safe_load_all((EXAMPLES / "k8s-indexed-job.yaml").read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert n >= 2 and spec["parallelism"] == n
    # the config.yaml in the Secret loads with the suite's own loader, its shard_count is the
    # completions, and it names no fixed shard (each pod's index decides)
    p = tmp_path / "config.yaml"
    p.write_text(secret["stringData"]["config.yaml"])
    p.chmod(0o600)
    cfg = config.load(str(p))
    assert cfg.shard_count == n and cfg.shard is None
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    argv = c["command"] + c.get("args", [])
    assert argv[1].endswith("/sync_mvol.py") and "--once" in argv and "--shard" not in argv
    env = {e["name"]: e for e in c["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    # the working folder: one per index, and config.yaml in it, from the Secret
    work = mounts[c["workingDir"]]
    assert "$(JOB_COMPLETION_INDEX)" in work["subPathExpr"]
    cm = mounts[c["workingDir"].rstrip("/") + "/config.yaml"]
    assert cm["subPath"] == "config.yaml" and vols[cm["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert vols[cm["name"]]["secret"]["defaultMode"] & 0o077 == 0  # no warning about readable keys
    # every staging volume of the config is a volume of the pod
    assert cfg.volumes and all(v in mounts and mounts[v]["name"] in vols for v in cfg.volumes)
    assert all(m["name"] in vols for m in c["volumeMounts"])
    # a config error (2) or a lock held (3) fails the index instead of retrying it
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and set(rule["onExitCodes"]["values"]) == {2, 3}
    assert rule["onExitCodes"]["containerName"] == c["name"] and pod["restartPolicy"] == "Never"


def test_aws_batch_array_job_runs_sync_mvol_once_per_index():
    jd = json.loads((EXAMPLES / "aws-batch-job-definition.json").read_text())
    sub = json.loads((EXAMPLES / "aws-batch-submit-job.json").read_text())
    assert sub["jobDefinition"] == jd["jobDefinitionName"] and sub["arrayProperties"]["size"] >= 2
    cp = jd["containerProperties"]
    script = cp["command"][-1]
    assert cp["command"][:2] == ["sh", "-c"]
    assert "/sync_mvol.py --once" in script and "--shard" not in script  # the index comes from the env
    assert "shard-$AWS_BATCH_JOB_ARRAY_INDEX" in script and "> config.yaml" in script
    secret_env = {s["name"] for s in cp["secrets"]}
    assert "S5J_CONFIG_YAML" in secret_env and "$S5J_CONFIG_YAML" in script
    vols = {v["name"] for v in cp["volumes"]}
    assert {m["sourceVolume"] for m in cp["mountPoints"]} <= vols
    assert "/work" in {m["containerPath"] for m in cp["mountPoints"]}
    exits = {e.get("onExitCode"): e["action"] for e in jd["retryStrategy"]["evaluateOnExit"]}
    assert exits["2"] == exits["3"] == "EXIT"


def test_operations_doc_references_every_example():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert "## Running shards on several hosts" in text
    for f in EXAMPLES.iterdir():
        assert f"examples/{f.name}" in text, f.name


# -- the whole-prefix comparison (compare.compare_all_shards), listings stubbed ---------------------
def test_all_shards_names_the_owner_of_every_object_not_moved(tmp_path, monkeypatch):
    from s5jtransfer import compare, s3, verify

    cfg = _load(tmp_path, {"shard_count": 3})
    keys = [f"k{i}" for i in range(30)]
    src = {k: s3.Obj(k, 10, "0" * 32) for k in keys}
    missing = {k for k in keys if shard.shard_of(k, 3) == 1} | {"k0"}
    dst = {k: o for k, o in src.items() if k not in missing}
    dst["k3"] = s3.Obj("k3", 11, "1" * 32)  # another size: differs
    dst["extra"] = s3.Obj("extra", 1, "2" * 32)
    monkeypatch.setattr(compare, "list_into", lambda index, name, side, c: index.load_listing(
        name, sorted((src if side is c.source else dst).values())))
    res = compare.compare_all_shards(cfg, 3)
    assert res["complete"] is False and res["source_objects"] == 30 and res["only_at_destination"] == 1
    not_moved = {t["key"]: (t["shard"], t["category"]) for t in res["not_moved"]}
    assert set(not_moved) == missing | {"k3"}
    for k, (owner, cat) in not_moved.items():
        assert owner == f"{shard.shard_of(k, 3)}/3"
        assert cat == (verify.DIFFER if k == "k3" else verify.MISSING)
    per = {s["shard"]: s for s in res["per_shard"]}
    assert sum(s["objects"] for s in per.values()) == 30
    assert per["1/3"]["moved"] == 0 and per["1/3"]["complete"] is False
    assert all(s["moved"] + s["missing"] + s["differ"] == s["objects"] for s in per.values())
    text = compare.render_all_shards(res)
    assert "INCOMPLETE" in text and "1/3" in text
    monkeypatch.chdir(tmp_path)
    assert compare.repair_all_shards(cfg, 3) == 1
    lines = (tmp_path / compare.ALL_SHARDS_FILE).read_text().splitlines()
    assert sorted(lines) == sorted(f"{o}\t{k}" for k, (o, _c) in not_moved.items())
    dst.update({k: src[k] for k in keys})
    res = compare.compare_all_shards(cfg, 3)
    assert res["complete"] is True and res["not_moved"] == [] and all(s["complete"] for s in res["per_shard"])
    assert compare.repair_all_shards(cfg, 3) == 0


def test_sides_started_at_once_both_record_the_shard_without_tripping_on_each_other(tmp_path):
    """src_sync_mvol.py and dest_sync_mvol.py started together by hand (nohup ... &) in a new folder."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert (tmp_path / "shard.txt").read_text() == "1/3\n"
    assert sorted(os.listdir(tmp_path)) == ["shard.txt"]  # no temporary file left behind


def _record_many(folder: str) -> None:
    for _ in range(200):
        shard.check_folder(shard.Spec(1, 3), folder)
        (Path(folder) / "shard.txt").unlink(missing_ok=True) if os.getpid() % 2 else None
    shard.check_folder(shard.Spec(1, 3), folder)
