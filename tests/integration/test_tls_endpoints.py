"""TLS as an operator meets it: a loopback endpoint with a self-signed certificate (tests/tlsproxy.py
in front of the moto server), as a Snowball (region snow, or a host given as an IP address) and
as any other endpoint (https://localhost), with and without a ca_bundle: what the connect tests
report, real transfers through s5cmd and boto3, and the refusal of a certificate that does not
verify."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tlsproxy import TLSFront

REFUSAL = "does not verify"


@pytest.fixture
def front(work):
    f = TLSFront(work.server.port).start()
    yield f
    f.stop()


def use(work, front, region="us-east-1", url=None, bundle=False, verify_tls=None, side="source"):
    """Put the source (or destination) behind the TLS front; bundle: its certificate as ca_bundle."""
    ts = work.cfg["transfer_settings"]
    ts["src_endpoint_url" if side == "source" else "dest_endpoint_url"] = url or front.url
    work.cfg[side]["region"] = region
    if bundle:
        shutil.copy(front.cert_path, work.path / "device.pem")
        work.cfg[side]["ca_bundle"] = "device.pem"  # relative to the folder of config.yaml
    if verify_tls is not None:
        work.cfg[side]["verify_tls"] = verify_tls
    ts["retries"] = 1
    work.write_config()


def tls_line(stdout: str) -> str:
    lines = [l for l in stdout.splitlines() if l.startswith("TLS ")]
    assert len(lines) == 1, stdout
    return lines[0]


@pytest.mark.parametrize("region,host,bundle,verify_tls,expected", [
    ("snow", "ip", False, None, "NOT verified: snowball self-signed"),
    ("us-east-1", "ip", False, None, "NOT verified: snowball self-signed"),  # an IP address: a Snowball
    ("snow", "ip", True, None, "verified with ca_bundle"),
    ("snow", "name", True, None, "verified with ca_bundle"),
    ("us-east-1", "name", True, None, "verified with ca_bundle"),
    ("us-east-1", "name", False, False, "NOT verified: verify_tls false"),
], ids=["snow", "ip-address", "snow-bundle", "snow-hostname-bundle", "plain-bundle", "plain-verify-false"])
def test_connect_test_reports_which_rule_applies(work, front, region, host, bundle, verify_tls, expected):
    work.put_all({"a.bin": b"x" * 100, "b.bin": b"y" * 200})
    use(work, front, region, front.url if host == "ip" else front.host_url, bundle, verify_tls)
    r = work.run("src_connect_test.py", "--quiet", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    where = front.url if host == "ip" else front.host_url
    line = tls_line(r.stdout)
    assert line.startswith(f"TLS {where}: {expected}"), line
    if "snowball" in expected:
        assert "snowballEdge get-certificate" in line and "source.ca_bundle" in line
    if bundle:
        assert str(work.path / "device.pem") in line
    assert "Total Number of Objects: 2" in r.stdout
    assert front.connections > 0


def test_connect_test_honours_aws_ca_bundle_from_the_environment(work, front):
    work.put_all({"a.bin": b"x"})
    use(work, front, "snow")
    shutil.copy(front.cert_path, work.path / "env.pem")
    r = work.run("src_connect_test.py", "--quiet", env={"AWS_CA_BUNDLE": str(work.path / "env.pem")}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "verified with ca_bundle" in tls_line(r.stdout) and "(from AWS_CA_BUNDLE)" in r.stdout


def test_a_machine_wide_aws_ca_bundle_does_not_turn_a_snowball_away(work, front):
    """AWS_CA_BUNDLE pointing at the system's CAs (as many images set it) cannot verify a
    Snowball's own certificate: the Snowball keeps working, not verified, as without it."""
    work.put_all({"a.bin": b"x"})
    use(work, front, "snow")
    system = next((p for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
                   if os.path.exists(p)), None)
    if system is None:
        import certifi

        system = certifi.where()
    r = work.run("src_connect_test.py", "--quiet", env={"AWS_CA_BUNDLE": system}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "NOT verified: snowball self-signed" in tls_line(r.stdout)
    r = work.run("src_sync_mvol.py", "--once", env={"AWS_CA_BUNDLE": system}, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    assert work.ledger_lines() == 2


def test_a_plain_endpoint_whose_certificate_does_not_verify_is_refused(work, front):
    work.put_all({"a.bin": b"x"})
    use(work, front, "us-east-1", front.host_url)
    r = work.run("src_connect_test.py", "--quiet", timeout=60)
    assert r.returncode == 1
    assert tls_line(r.stdout) == f"TLS {front.host_url}: verified"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    msg = lines[0]
    for part in (front.host_url, REFUSAL, "self-signed certificate", "source.ca_bundle", "source.verify_tls: false"):
        assert part in msg, msg
    # a sync refuses it too: exit 2 (config.yaml must change), nothing staged, no endless retries
    r = work.run("src_sync_mvol.py", "--once", timeout=90)
    assert r.returncode == 2, r.stderr[-2000:]
    assert REFUSAL in r.stderr and "source.ca_bundle" in r.stderr and "verify_tls: false" in r.stderr
    assert work.ledger_lines() <= 1


def test_a_ca_bundle_for_one_side_does_not_verify_the_other(work, front):
    """The destination's bundle is not the source's: a plain endpoint without its own is refused
    even when the other side trusts that very certificate."""
    use(work, front, "us-east-1", front.host_url, bundle=True, side="destination")
    use(work, front, "us-east-1", front.host_url, side="source")
    r = work.run("dest_connect_test.py", "--quiet", timeout=60)
    assert r.returncode == 0, r.stderr
    r = work.run("src_connect_test.py", "--quiet", timeout=60)
    assert r.returncode == 1 and REFUSAL in r.stderr


def s5cmd_recorder(work) -> str:
    """An s5cmd that writes down its arguments and AWS_CA_BUNDLE, then runs the real one."""
    from s5jtransfer import s5cmd

    real = s5cmd.find_binary()
    path = work.path / "s5cmd-recorder"
    path.write_text(f"#!{sys.executable}\n"
                    "import os, sys\n"
                    f"with open({str(work.path / 's5cmd-calls.txt')!r}, 'a') as fh:\n"
                    "    fh.write(repr((sys.argv[1:], os.environ.get('AWS_CA_BUNDLE'))) + '\\n')\n"
                    f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
    path.chmod(0o755)
    return str(path)


def test_a_transfer_verified_with_ca_bundles_on_both_sides(work, front):
    """A Snowball (snow, IP address) and a plain https destination, each trusted by its
    ca_bundle: every object moves through s5cmd (and boto3), s5cmd is given the bundle in its
    environment and never --no-verify-ssl, and no warning says anything is not verified."""
    data = {f"t/{i:02d}.bin": os.urandom(300 + 40 * i) for i in range(12)}
    data["big.bin"] = os.urandom(2 * 1024 * 1024)
    work.put_all(data)
    use(work, front, "snow", front.url, bundle=True, side="source")
    use(work, front, "us-east-1", front.host_url, bundle=True, side="destination")
    work.cfg["transfer_settings"].update(s5cmd_path=s5cmd_recorder(work), src_direct_get_max_bytes=0,
                                         src_range_workers=0, dest_direct_put_max_bytes=0,
                                         dest_stream_uploads=False, retries=3)
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    calls = [eval(l) for l in (work.path / "s5cmd-calls.txt").read_text().splitlines()]  # noqa: S307 - our own repr
    endpoints = {argv[argv.index("--endpoint-url") + 1] for argv, _ in calls}
    assert endpoints == {front.url, front.host_url}, calls  # both sides went through s5cmd
    for argv, bundle in calls:
        assert "--no-verify-ssl" not in argv, argv
        assert bundle == str(work.path / "device.pem"), (argv, bundle)
    assert "NOT verified" not in r.stderr


def test_not_verified_endpoints_warn_once_per_start(work, front):
    """A Snowball without a bundle, and a plain endpoint with verify_tls false: they keep working,
    and each start says once that the certificate is not verified, and how to fix it."""
    data = {f"k{i}.bin": os.urandom(1000 + i) for i in range(8)}
    work.put_all(data)
    use(work, front, "snow", front.url, side="source")
    use(work, front, "us-east-1", front.host_url, verify_tls=False, side="destination")
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    snow = [l for l in r.stderr.splitlines() if "taken as a Snowball's self-signed" in l]
    off = [l for l in r.stderr.splitlines() if "destination.verify_tls: false" in l]
    assert len(snow) == 1 and "WARNING" in snow[0] and "snowballEdge get-certificate" in snow[0], r.stderr
    assert front.url in snow[0] and "source.ca_bundle" in snow[0]
    assert len(off) == 1 and "WARNING" in off[0] and front.host_url in off[0], r.stderr


def test_sync_mvol_stops_on_a_destination_whose_certificate_does_not_verify(work, front):
    """The destination side refuses the endpoint (exit 2), and sync_mvol.py stops instead of
    restarting it: config.yaml must change."""
    data = {f"k{i}.bin": os.urandom(500 + i) for i in range(5)}
    work.put_all(data)
    use(work, front, "us-east-1", front.host_url, side="destination")
    r = work.run("sync_mvol.py", "--once", timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert REFUSAL in r.stderr and "destination.ca_bundle" in r.stderr and "destination.verify_tls: false" in r.stderr
    assert work.listing(work.dst, "copy/") == {}
