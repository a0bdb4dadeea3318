#!/usr/bin/env python3
"""The shared module the docs name: config, S3 listing and volume discovery (built on s5jtransfer)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s5jtransfer import config as _config  # noqa: E402
from s5jtransfer import s3 as _s3  # noqa: E402
from s5jtransfer import volumes as _volumes  # noqa: E402

__all__ = ["read_config", "make_client", "list_objects", "get_volumes", "get_local_files",
           "get_all_local_files", "get_disk_usage"]


def read_config(path: str = _config.CONFIG_NAME) -> _config.Config:
    """config.yaml from the current folder, validated (raises ConfigError with the fix)."""
    return _config.load(path)


def make_client(side: _config.Side, settings: _config.Settings | None = None):
    """A boto3 S3 client for cfg.source or cfg.destination."""
    return _s3.client(side, settings)


def list_objects(bucket: str, prefix: str, client, isSnow: bool = False) -> dict[str, int]:  # noqa: N803
    """Key (prefix stripped) -> size for every object under prefix; folder markers skipped."""
    side = _config.Side(name="source", bucket=bucket, prefix=prefix, region="snow" if isSnow else "",
                        access_key=_config.Secret(), secret_key=_config.Secret(), endpoints=())
    return {o.key: o.size for o in _s3.iter_objects(side, client)}


def get_volumes(cfg: _config.Config | None = None) -> list[str]:
    """Staging volume folders: local.volumes, else every /tmp/volume-NN, else local.directory."""
    cfg = cfg or read_config()
    return _volumes.discover_roots(cfg.volumes, cfg.directory)


def get_local_files(directory: str) -> dict[str, int]:
    """Staged (verified) files on one volume: staged file name -> size. In-flight downloads live
    in a separate folder, so they are never mistaken for staged files."""
    return _volumes.Volume(directory).scan_staged()


def get_all_local_files(volumes: list[str], include_volumes: bool = False) -> dict:
    """Staged files on every volume: name -> size, or (volume, name) -> size with include_volumes."""
    out: dict = {}
    for v in volumes:
        for name, size in get_local_files(v).items():
            out[(v, name) if include_volumes else name] = size
    return out


def get_disk_usage(path: str) -> dict[str, int]:
    """Total, used and free bytes of the file system holding path."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {"total": total, "used": total - st.f_bfree * st.f_frsize, "free": free}


if __name__ == "__main__":
    # a module for scripts, not a command: say so, instead of doing nothing silently
    sys.stdout.write(f"{__doc__}\nImport it from a script run in the working folder: import helper; "
                     f"helper.read_config(). Functions: {', '.join(__all__)}\n")
    sys.exit(0 if sys.argv[1:] in ([], ["-h"], ["--help"]) else 2)
