"""Unit tests for setup_volumes: a fake runner stands in for lsblk/mkfs/mount; nothing real is touched."""

import io
import json
import subprocess

import pytest

from s5jtransfer import setup_volumes as sv

# Recorded shape of `lsblk -J -b -o NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINT,MOUNTPOINTS,RO`
# (util-linux 2.37, Amazon Linux 2023 on a Nitro instance with extra EBS volumes).
EC2_LSBLK = """{
   "blockdevices": [
      {"name":"loop0", "path":"/dev/loop0", "type":"loop", "size":58363904, "fstype":"squashfs",
       "mountpoint":"/snap/core18/2812", "mountpoints":["/snap/core18/2812"], "ro":true},
      {"name":"zram0", "path":"/dev/zram0", "type":"disk", "size":4102029312, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":false},
      {"name":"nvme0n1", "path":"/dev/nvme0n1", "type":"disk", "size":8589934592, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":false,
       "children": [
          {"name":"nvme0n1p1", "path":"/dev/nvme0n1p1", "type":"part", "size":8575254016,
           "fstype":"xfs", "mountpoint":"/", "mountpoints":["/"], "ro":false},
          {"name":"nvme0n1p127", "path":"/dev/nvme0n1p127", "type":"part", "size":1048576,
           "fstype":null, "mountpoint":null, "mountpoints":[null], "ro":false},
          {"name":"nvme0n1p128", "path":"/dev/nvme0n1p128", "type":"part", "size":10485760,
           "fstype":"vfat", "mountpoint":"/boot/efi", "mountpoints":["/boot/efi"], "ro":false}
       ]
      },
      {"name":"nvme1n1", "path":"/dev/nvme1n1", "type":"disk", "size":107374182400, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":false},
      {"name":"nvme2n1", "path":"/dev/nvme2n1", "type":"disk", "size":53687091200, "fstype":"ext4",
       "mountpoint":null, "mountpoints":[null], "ro":false},
      {"name":"nvme3n1", "path":"/dev/nvme3n1", "type":"disk", "size":53687091200, "fstype":null,
       "mountpoint":"/data", "mountpoints":["/data"], "ro":false},
      {"name":"nvme4n1", "path":"/dev/nvme4n1", "type":"disk", "size":53687091200, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":true},
      {"name":"xvdf", "path":"/dev/xvdf", "type":"disk", "size":21474836480, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":false},
      {"name":"sr0", "path":"/dev/sr0", "type":"rom", "size":1073741312, "fstype":null,
       "mountpoint":null, "mountpoints":[null], "ro":false}
   ]
}"""

# util-linux 2.34 (Ubuntu 20.04): has PATH, JSON booleans, but `mountpoint` only.
OLD_MOUNTPOINT_LSBLK = """{
   "blockdevices": [
      {"name":"xvda", "path":"/dev/xvda", "type":"disk", "size":8589934592, "fstype":null,
       "mountpoint":null, "ro":false,
       "children": [
          {"name":"xvda1", "path":"/dev/xvda1", "type":"part", "size":8588886016,
           "fstype":"ext4", "mountpoint":"/", "ro":false}
       ]
      },
      {"name":"xvdb", "path":"/dev/xvdb", "type":"disk", "size":32212254720, "fstype":null,
       "mountpoint":"/mnt", "ro":false},
      {"name":"xvdf", "path":"/dev/xvdf", "type":"disk", "size":21474836480, "fstype":null,
       "mountpoint":null, "ro":false}
   ]
}"""

# util-linux 2.30 (Amazon Linux 2): no PATH/MOUNTPOINTS columns, every value a string.
LEGACY_STRINGS_LSBLK = """{
   "blockdevices": [
      {"name":"xvda", "type":"disk", "size":"8589934592", "fstype":null, "mountpoint":null, "ro":"0",
       "children": [
          {"name":"xvda1", "type":"part", "size":"8587820544", "fstype":"xfs", "mountpoint":"/", "ro":"0"}
       ]
      },
      {"name":"xvdf", "type":"disk", "size":"21474836480", "fstype":null, "mountpoint":null, "ro":"0"},
      {"name":"xvdg", "type":"disk", "size":"21474836480", "fstype":null, "mountpoint":null, "ro":"1"}
   ]
}"""


class FakeRunner:
    """Records every argv; answers lsblk with canned output and everything else with rc 0."""

    def __init__(self, lsblk_out=EC2_LSBLK, fail=None, lsblk_rc=0, lsblk_err=""):
        self.calls = []
        self.lsblk_out, self.lsblk_rc, self.lsblk_err = lsblk_out, lsblk_rc, lsblk_err
        self.fail = fail or {}  # program name -> (returncode, stderr)

    def run(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "lsblk":
            return subprocess.CompletedProcess(argv, self.lsblk_rc, self.lsblk_out, self.lsblk_err)
        rc, err = self.fail.get(argv[0], (0, ""))
        return subprocess.CompletedProcess(argv, rc, "", err)

    def non_lsblk(self):
        return [c for c in self.calls if c[0] != "lsblk"]


class TTYInput(io.StringIO):
    def isatty(self):
        return True


def run_main(args, runner, stdin=None, is_root=True):
    out = io.StringIO()
    rc = sv.main(args, runner=runner, stdin=stdin if stdin is not None else io.StringIO(),
                 stdout=out, is_root=is_root)
    return rc, out.getvalue()


def expected_cmds(device, mountpoint):
    return [
        ["mkfs.ext4", "-F", "-q", device],
        ["mkdir", "-p", mountpoint],
        ["mount", device, mountpoint],
        ["chmod", "777", mountpoint],
    ]


def test_lsblk_is_called_with_the_json_byte_columns():
    runner = FakeRunner()
    run_main(["--dry-run", "--base", "/nonexistent-base"], runner)
    assert runner.calls == [sv.LSBLK]
    assert sv.LSBLK == ["lsblk", "-J", "-b", "-o",
                        "NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINT,MOUNTPOINTS,RO"]


def test_plan_picks_only_blank_disks(tmp_path):
    volumes, _ = sv.plan(json.loads(EC2_LSBLK)["blockdevices"], str(tmp_path))
    assert [(v.device, v.mountpoint, v.size) for v in volumes] == [
        ("/dev/nvme1n1", str(tmp_path / "volume-01"), 107374182400),
        ("/dev/xvdf", str(tmp_path / "volume-02"), 21474836480),
    ]


@pytest.mark.parametrize("device, reason", [
    ("/dev/loop0", "not a disk"),
    ("/dev/zram0", "zram"),
    ("/dev/nvme0n1", "has partitions (nvme0n1p1, nvme0n1p127, nvme0n1p128)"),
    ("/dev/nvme2n1", "file system (ext4)"),
    ("/dev/nvme3n1", "mounted at /data"),  # exact: "mountpoint" and "mountpoints" not doubled
    ("/dev/nvme4n1", "read-only"),
    ("/dev/sr0", "not a disk"),
])
def test_each_skipped_disk_has_its_reason_printed(tmp_path, device, reason):
    rc, out = run_main(["--dry-run", "--base", str(tmp_path)], FakeRunner())
    assert rc == 0
    lines = [l for l in out.splitlines() if l.startswith(f"skip {device}:")]
    assert len(lines) == 1 and reason in lines[0], out
    if "mounted" in reason:
        assert lines[0] == f"skip {device}: {reason}"
    assert f"# {device} " not in out  # never planned


def test_dry_run_prints_plan_and_runs_only_lsblk(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--dry-run", "--base", str(tmp_path)], runner)
    assert rc == 0
    assert runner.non_lsblk() == []
    assert "  mkfs.ext4 -F -q /dev/nvme1n1" in out
    assert f"  mount /dev/xvdf {tmp_path}/volume-02" in out
    assert f"  chmod 777 {tmp_path}/volume-01" in out
    assert not (tmp_path / "volume-01").exists()


def test_dry_run_works_without_root(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--dry-run", "--base", str(tmp_path)], runner, is_root=False)
    assert rc == 0 and "mkfs.ext4 -F -q /dev/nvme1n1" in out
    assert runner.non_lsblk() == []


def test_answer_no_runs_nothing(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--base", str(tmp_path)], runner, stdin=TTYInput("n\n"))
    assert rc == 1
    assert "Format 2 disk(s) listed above? This erases them. [y/N]" in out
    assert "aborted" in out
    assert runner.non_lsblk() == []


def test_empty_answer_defaults_to_no(tmp_path):
    runner = FakeRunner()
    rc, _ = run_main(["--base", str(tmp_path)], runner, stdin=TTYInput(""))
    assert rc == 1 and runner.non_lsblk() == []


@pytest.mark.parametrize("answer", ["y\n", "YES\n", " yes \n"])
def test_answer_yes_runs_commands_in_order(tmp_path, answer):
    runner = FakeRunner()
    rc, out = run_main(["--base", str(tmp_path)], runner, stdin=TTYInput(answer))
    assert rc == 0, out
    v1, v2 = str(tmp_path / "volume-01"), str(tmp_path / "volume-02")
    assert runner.calls == [sv.LSBLK] + expected_cmds("/dev/nvme1n1", v1) + expected_cmds("/dev/xvdf", v2)


def test_yes_flag_skips_prompt_even_without_tty(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner, stdin=io.StringIO(""))
    assert rc == 0
    assert "[y/N]" not in out
    assert runner.non_lsblk() == (expected_cmds("/dev/nvme1n1", str(tmp_path / "volume-01"))
                                  + expected_cmds("/dev/xvdf", str(tmp_path / "volume-02")))


def test_no_tty_without_yes_refuses_and_names_the_flag(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--base", str(tmp_path)], runner, stdin=io.StringIO("y\n"))
    assert rc == 1
    assert "--yes" in out.splitlines()[-1]
    assert runner.non_lsblk() == []


def test_numbering_skips_used_volume_paths(tmp_path):
    (tmp_path / "volume-01").mkdir()
    (tmp_path / "volume-01" / "data.bin").write_bytes(b"x")  # non-empty: in use
    (tmp_path / "volume-02").mkdir()                          # empty: reusable
    (tmp_path / "volume-03").write_text("not a dir")          # a file: cannot mount there
    runner = FakeRunner()
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 0
    mounts = [c for c in runner.calls if c[0] == "mount"]
    assert mounts == [["mount", "/dev/nvme1n1", str(tmp_path / "volume-02")],
                      ["mount", "/dev/xvdf", str(tmp_path / "volume-04")]]


def test_numbering_skips_mount_points(tmp_path, monkeypatch):
    taken = str(tmp_path / "volume-01")
    real_ismount = sv.os.path.ismount
    monkeypatch.setattr(sv.os.path, "ismount", lambda p: p == taken or real_ismount(p))
    volumes, _ = sv.plan(json.loads(EC2_LSBLK)["blockdevices"], str(tmp_path))
    assert [v.mountpoint for v in volumes] == [str(tmp_path / "volume-02"), str(tmp_path / "volume-03")]


def test_failing_mkfs_stops_and_names_the_command(tmp_path):
    runner = FakeRunner(fail={"mkfs.ext4": (1, "mkfs.ext4: Device size reported to be zero.")})
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 1
    assert "command failed (exit 1): mkfs.ext4 -F -q /dev/nvme1n1" in out
    assert "Device size reported to be zero." in out
    assert runner.non_lsblk() == [["mkfs.ext4", "-F", "-q", "/dev/nvme1n1"]]


def test_failing_mount_stops_before_chmod_and_next_disk(tmp_path):
    runner = FakeRunner(fail={"mount": (32, "mount: wrong fs type")})
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 1
    assert f"mount /dev/nvme1n1 {tmp_path}/volume-01" in out and "wrong fs type" in out
    assert [c[0] for c in runner.non_lsblk()] == ["mkfs.ext4", "mkdir", "mount"]


def test_unreadable_lsblk_json_exits_2(tmp_path):
    runner = FakeRunner(lsblk_out="lsblk: garbage, not json")
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 2
    assert "lsblk" in out and "Traceback" not in out and len(out.splitlines()) == 1
    assert runner.non_lsblk() == []


def test_lsblk_json_without_blockdevices_exits_2(tmp_path):
    rc, out = run_main(["--yes", "--base", str(tmp_path)], FakeRunner(lsblk_out='{"devices": []}'))
    assert rc == 2 and out.startswith("error:")


def test_lsblk_missing_exits_2(tmp_path):
    class Missing(FakeRunner):
        def run(self, argv):
            self.calls.append(list(argv))
            raise FileNotFoundError(2, "No such file or directory", "lsblk")

    runner = Missing()
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 2 and "cannot run lsblk" in out and len(out.splitlines()) == 1
    assert runner.calls == [sv.LSBLK]


def test_lsblk_failure_exits_2(tmp_path):
    runner = FakeRunner(lsblk_rc=32, lsblk_err="lsblk: failed to access sysfs directory")
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 2 and "sysfs" in out and runner.non_lsblk() == []


def test_not_root_exits_2_before_anything_runs(tmp_path):
    runner = FakeRunner()
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner, is_root=False)
    assert rc == 2
    assert "root" in out and "sudo" in out
    assert runner.calls == []


def test_no_blank_disks_exits_0_with_message(tmp_path):
    only_root = json.loads(EC2_LSBLK)
    only_root["blockdevices"] = [d for d in only_root["blockdevices"]
                                 if d["name"] not in ("nvme1n1", "xvdf")]
    runner = FakeRunner(lsblk_out=json.dumps(only_root))
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 0
    assert "no blank disks found" in out
    assert runner.non_lsblk() == []


def test_old_lsblk_with_mountpoint_only(tmp_path):
    runner = FakeRunner(lsblk_out=OLD_MOUNTPOINT_LSBLK)
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 0
    assert "skip /dev/xvdb: mounted at /mnt" in out
    assert "skip /dev/xvda: has partitions (xvda1)" in out
    assert runner.non_lsblk() == expected_cmds("/dev/xvdf", str(tmp_path / "volume-01"))


def test_mountpoints_list_only(tmp_path):
    devices = [{"name": "vdb", "path": "/dev/vdb", "type": "disk", "size": 10**9, "fstype": None,
                "mountpoints": ["/srv", "/var/lib/x"], "ro": False},
               {"name": "vdc", "path": "/dev/vdc", "type": "disk", "size": 10**9, "fstype": None,
                "mountpoints": [None], "ro": False}]
    volumes, skipped = sv.plan(devices, str(tmp_path))
    assert [v.device for v in volumes] == ["/dev/vdc"]
    assert skipped == ["skip /dev/vdb: mounted at /srv, /var/lib/x"]


def test_legacy_lsblk_retries_without_new_columns_and_reads_string_values(tmp_path):
    class Legacy(FakeRunner):
        def run(self, argv):
            if argv == sv.LSBLK:
                self.calls.append(list(argv))
                return subprocess.CompletedProcess(argv, 1, "", "lsblk: unknown column: PATH\n")
            return super().run(argv)

    runner = Legacy(lsblk_out=LEGACY_STRINGS_LSBLK)
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 0, out
    assert runner.calls[:2] == [sv.LSBLK, sv.LSBLK_LEGACY]
    assert "skip /dev/xvdg: read-only" in out  # "ro": "1"
    assert runner.non_lsblk() == expected_cmds("/dev/xvdf", str(tmp_path / "volume-01"))


def test_real_runner_uses_argv_and_minimal_env(monkeypatch):
    seen = {}

    def fake_run(argv, **kw):
        seen["argv"], seen["kw"] = argv, kw
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(sv.subprocess, "run", fake_run)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "should-not-leak")
    sv.SubprocessRunner().run(["lsblk", "-J"])
    assert seen["argv"] == ["lsblk", "-J"]
    assert seen["kw"]["check"] is False and seen["kw"].get("shell") in (None, False)
    assert set(seen["kw"]["env"]) == {"PATH", "LC_ALL"} and seen["kw"]["env"]["LC_ALL"] == "C"


def test_zero_size_disk_is_skipped(tmp_path):
    devices = [{"name": "sdb", "path": "/dev/sdb", "type": "disk", "size": 0, "fstype": None,
                "mountpoint": None, "ro": False}]
    volumes, skipped = sv.plan(devices, str(tmp_path))
    assert volumes == [] and skipped == ["skip /dev/sdb: size 0 (no medium?)"]


def test_no_free_volume_number_exits_2_before_anything_runs(tmp_path):
    for n in range(1, 100):
        (tmp_path / f"volume-{n:02d}").mkdir()
        (tmp_path / f"volume-{n:02d}" / "keep").write_text("x")
    runner = FakeRunner()
    rc, out = run_main(["--yes", "--base", str(tmp_path)], runner)
    assert rc == 2 and "no free volume-NN" in out
    assert runner.non_lsblk() == []
