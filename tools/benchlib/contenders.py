"""The tools measured: the suite (whole, or each side alone), s5cmd cp and sync, s5cmd fed a line per
object (the engine's floor), aws s3 sync, rclone; and the script of the no-change rescan's
reference listing."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (ACCESS_KEY, DST_BUCKET, DST_PREFIX, REGION, SECRET_KEY, SRC_BUCKET, SRC_PREFIX, aws_env, base_env,
                     find_aws, find_s5cmd, run_step, version_of)
from .small import mount_tmpfs, unmount

if TYPE_CHECKING:  # the tools read the bench's servers, arguments and code folder; runner imports this module
    from .runner import Bench


TOOLS = ("s5cmd-cp", "s5cmd-lines", "suite", "suite-sides", "s5cmd-sync", "aws-sync", "rclone")

Step = tuple[str, list[str], Path, dict[str, str]]  # (label, argv, cwd, env)


class Tool:
    name = ""
    doc = ""
    hops = False  # steps are hop 1 then hop 2 (each reported on its own)

    def __init__(self, bench: "Bench") -> None:
        self.b = bench

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self, run_dir: Path) -> None:
        """Untimed set-up of a fresh run folder."""

    def finish(self, run_dir: Path) -> None:
        """After the run, before its folder is removed."""

    def steps(self, run_dir: Path) -> list[Step]:
        raise NotImplementedError

    def version(self) -> str:
        return ""


class Suite(Tool):
    name = "suite"
    doc = "python sync_mvol.py --once (after python reset.py), default settings"

    def prepare(self, run_dir: Path) -> None:
        vols = [run_dir / "vol1", run_dir / "vol2"]
        scn = self.b.scn
        if scn is not None and scn.volume_bytes:
            mount_tmpfs(vols, scn.volume_bytes)  # small file systems, counted in blocks and inodes
        else:
            for v in vols:
                v.mkdir(parents=True)
        cfg = {
            "source": {"bucket_name": SRC_BUCKET, "bucket_prefix": SRC_PREFIX, "region": REGION,
                       "access_key": ACCESS_KEY, "secret_access_key": SECRET_KEY},
            "local": {"directory": str(run_dir / "staging"), "volumes": [str(v) for v in vols]},
            "destination": {"bucket_name": DST_BUCKET, "bucket_prefix": DST_PREFIX, "region": REGION,
                            "access_key": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                            "delete_staging_data": True},
            "transfer_settings": {"max_size_to_transfer_src2l": 100_000_000_000, "max_size_to_transfer_l2dest": "",
                                  "dest_endpoint_url": self.b.servers["dst"].url,
                                  "src_endpoint_url": self.b.servers["src"].url,
                                  "src_use_native_s3": False, "volume_reserve_bytes": 0},
        }
        for dotted, value in self.b.args.set:
            d = cfg
            *path, last = dotted.split(".")
            for p in path:
                d = d.setdefault(p, {})
            d[last] = value
        import yaml
        p = run_dir / "config.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        p.chmod(0o600)
        rc = run_step([sys.executable, str(self.b.code / "reset.py")], run_dir, base_env(), run_dir / "reset.log", 120)
        if rc != 0:
            raise RuntimeError(f"reset.py exited with {rc}; see {run_dir / 'reset.log'}")

    def steps(self, run_dir: Path) -> list[Step]:
        return [("both", [sys.executable, str(self.b.code / "sync_mvol.py"), "--once"], run_dir, base_env())]

    def finish(self, run_dir: Path) -> None:
        if self.b.scn is not None and self.b.scn.volume_bytes:
            unmount([run_dir / "vol1", run_dir / "vol2"])


class SuiteSides(Suite):
    """Each of the suite's sides alone: the source side stages and ledgers everything, then the
    destination side uploads it (its own listing of the source included), one after the other."""
    name = "suite-sides"
    doc = "python src_sync_mvol.py --once (hop 1), then python dest_sync_mvol.py --once (hop 2)"
    hops = True

    def steps(self, run_dir: Path) -> list[Step]:
        return [("hop1", [sys.executable, str(self.b.code / "src_sync_mvol.py"), "--once"], run_dir, base_env()),
                ("hop2", [sys.executable, str(self.b.code / "dest_sync_mvol.py"), "--once"], run_dir, base_env())]


class S5cmd(Tool):
    hops = True

    def __init__(self, bench: "Bench", verb: str) -> None:
        super().__init__(bench)
        self.verb = verb
        self.name = f"s5cmd-{verb}"
        self.doc = f"s5cmd {verb} source -> local folder, then s5cmd {verb} local -> destination (s5cmd defaults)"
        self.bin = find_s5cmd()

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)

    def steps(self, run_dir: Path) -> list[Step]:
        local, env, sv = str(run_dir / "local"), aws_env(), self.b.servers
        return [("hop1", [self.bin, "--endpoint-url", sv["src"].url, self.verb, f"s3://{SRC_BUCKET}/{SRC_PREFIX}*",
                          local + "/"], run_dir, env),
                ("hop2", [self.bin, "--endpoint-url", sv["dst"].url, self.verb, local + "/*",
                          f"s3://{DST_BUCKET}/{DST_PREFIX}"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "version"])


class S5cmdLines(Tool):
    """s5cmd alone, fed the way the suite feeds it: a long-lived `s5cmd --json run` per side, one
    `cp --raw` line per object (each a whole command for s5cmd; a download of a named object asks
    for its size first, a HeadObject), both hops at once: every object down to a folder, and a
    copy of them (made before the timed step, by `cp` of the prefix) up to the destination. What
    the suite's engine costs on this machine before any of the suite's Python: the floor under
    the suite's time."""
    name = "s5cmd-lines"
    doc = "s5cmd run, a cp line per object, both hops at once (source -> folder; a copy made beforehand -> destination)"
    FOLDERS = 256  # the downloads' folders (the suite's staged copies are spread over 256 per volume)
    # The suite's defaults, written out (the bench measures a code tree it does not import):
    # src_workers and dest_workers 64 (--numworkers), part_size_mb 50 (-p), s5cmd.STREAM_GOGC 400

    def __init__(self, bench: "Bench") -> None:
        super().__init__(bench)
        self.bin = find_s5cmd()

    def prepare(self, run_dir: Path) -> None:
        down, up, sv = run_dir / "down", run_dir / "up", self.b.servers
        for i in range(self.FOLDERS):
            (down / f"{i:02x}").mkdir(parents=True)
        rc = run_step([self.bin, "--endpoint-url", sv["src"].url, "--numworkers", "64", "cp",
                       f"s3://{SRC_BUCKET}/{SRC_PREFIX}*", str(up) + "/"], run_dir, aws_env(), run_dir / "prepare.log",
                      self.b.args.timeout)
        if rc != 0:
            raise RuntimeError(f"s5cmd cp of the source (the upload's copy) exited with {rc}; see {run_dir / 'prepare.log'}")
        keys = [key for key, _size, _seed in self.b.scn.objects] if self.b.scn is not None else []
        q = shlex.quote
        with open(run_dir / "hop1.txt", "w", encoding="utf-8") as f:
            f.writelines(f"cp --raw {q(f's3://{SRC_BUCKET}/{k}')} {q(str(down / f'{i % self.FOLDERS:02x}' / str(i)))}\n"
                         for i, k in enumerate(keys))
        with open(run_dir / "hop2.txt", "w", encoding="utf-8") as f:
            f.writelines(f"cp --raw -p 50 {q(str(up / k[len(SRC_PREFIX):]))} "
                         f"{q(f's3://{DST_BUCKET}/{DST_PREFIX}{k[len(SRC_PREFIX):]}')}\n" for k in keys)

    def steps(self, run_dir: Path) -> list[Step]:
        sv = self.b.servers
        return [("both", [sys.executable, "-c", LINES_SCRIPT, self.bin, sv["src"].url, str(run_dir / "hop1.txt"),
                          sv["dst"].url, str(run_dir / "hop2.txt")], run_dir, aws_env())]

    def version(self) -> str:
        return version_of([self.bin, "version"])


class AwsSync(Tool):
    name = "aws-sync"
    doc = "aws s3 sync source -> local folder, then local -> destination (AWS CLI defaults)"
    hops = True

    def __init__(self, bench: "Bench") -> None:
        super().__init__(bench)
        self.bin = find_aws()

    def available(self):
        return (True, "") if self.bin else (False, "absent (aws not on PATH)")

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)

    def steps(self, run_dir: Path) -> list[Step]:
        local, env, sv = str(run_dir / "local"), aws_env(), self.b.servers
        return [("hop1", [self.bin, "s3", "sync", f"s3://{SRC_BUCKET}/{SRC_PREFIX}", local + "/", "--endpoint-url",
                          sv["src"].url, "--no-progress", "--only-show-errors"], run_dir, env),
                ("hop2", [self.bin, "s3", "sync", local + "/", f"s3://{DST_BUCKET}/{DST_PREFIX}", "--endpoint-url",
                          sv["dst"].url, "--no-progress", "--only-show-errors"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "--version"]) if self.bin else ""


class Rclone(Tool):
    name = "rclone"
    doc = "rclone copy source -> local folder, then local -> destination (rclone defaults)"
    hops = True

    def __init__(self, bench: "Bench") -> None:
        super().__init__(bench)
        self.bin = shutil.which("rclone")

    def available(self):
        return (True, "") if self.bin else (False, "absent (rclone not on PATH)")

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)
        (run_dir / "rclone.conf").touch()

    def steps(self, run_dir: Path) -> list[Step]:
        env = base_env()
        env["RCLONE_CONFIG"] = str(run_dir / "rclone.conf")  # empty: the remotes come from the environment
        for name, side in (("SRC", "src"), ("DST", "dst")):
            env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                        f"RCLONE_CONFIG_{name}_ENDPOINT": self.b.servers[side].url,
                        f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": ACCESS_KEY,
                        f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": SECRET_KEY,
                        f"RCLONE_CONFIG_{name}_REGION": REGION, f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true"})
        local = str(run_dir / "local")
        return [("hop1", [self.bin, "copy", f"src:{SRC_BUCKET}/{SRC_PREFIX.rstrip('/')}", local], run_dir, env),
                ("hop2", [self.bin, "copy", local, f"dst:{DST_BUCKET}/{DST_PREFIX.rstrip('/')}"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "version"]) if self.bin else ""


LINES_SCRIPT = r"""
import os, subprocess, sys
s5, procs = sys.argv[1], []
for n, (url, lines) in enumerate(((sys.argv[2], sys.argv[3]), (sys.argv[4], sys.argv[5])), 1):
    out = open(f"hop{n}.out", "wb")
    procs.append(subprocess.Popen([s5, "--endpoint-url", url, "--json", "--numworkers", "64", "run", lines],
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, GOGC="400")))
sys.exit(max(p.wait() for p in procs))
"""

LIST_SCRIPT = r"""
import sys, boto3, botocore.config
n = 0
for url, bucket, prefix in ((sys.argv[1], sys.argv[2], sys.argv[3]), (sys.argv[4], sys.argv[5], sys.argv[6])):
    c = boto3.client("s3", endpoint_url=url, config=botocore.config.Config(request_checksum_calculation="when_required"))
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", []))
print(n)
"""
