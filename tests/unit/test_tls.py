"""tls.decide, the pure TLS rule, and what boto3 (s3.client), s5cmd (global_args, child_env),
the start warning and the refusal message make of it."""

from __future__ import annotations

import pytest

from s5jtransfer import s3, s5cmd, tls
from s5jtransfer.config import Secret, Side

PEM = "/etc/snowball.pem"


@pytest.mark.parametrize("region,endpoint,bundle,verify_tls,env,kind", [
    # AWS: always verified, also with verify_tls false, and Transfer Acceleration
    ("us-east-1", None, None, True, None, tls.VERIFIED),
    ("us-east-1", None, None, False, None, tls.VERIFIED),
    ("us-east-1", "https://s3-accelerate.amazonaws.com", None, False, None, tls.VERIFIED),
    ("eu-west-1", "https://s3.eu-west-1.amazonaws.com", None, True, None, tls.VERIFIED),
    ("us-east-1", None, PEM, True, None, tls.BUNDLE),
    ("us-east-1", None, None, True, PEM, tls.BUNDLE),
    # http: no TLS at all
    ("snow", "http://192.0.2.10:8080", None, True, None, tls.PLAIN),
    ("us-east-1", "http://minio.example:9000", None, False, None, tls.PLAIN),
    # a Snowball: region snow, or a host given as an IP address
    ("snow", "https://192.0.2.10", None, True, None, tls.SNOWBALL),
    ("snow", "https://snowball.example:8443", None, True, None, tls.SNOWBALL),
    ("us-east-1", "https://192.0.2.10:8443", None, True, None, tls.SNOWBALL),
    ("us-east-1", "https://[2001:db8::1]:8443", None, True, None, tls.SNOWBALL),
    ("us-east-1", "https://127.0.0.1:8443", None, True, None, tls.SNOWBALL),
    # a bundle (config.yaml's, else AWS_CA_BUNDLE) verifies a Snowball and any other endpoint
    ("snow", "https://192.0.2.10", PEM, True, None, tls.BUNDLE),
    ("snow", "https://192.0.2.10", None, True, PEM, tls.BUNDLE),
    ("us-east-1", "https://localhost:8443", PEM, True, None, tls.BUNDLE),
    # verify_tls false: not verified, bundle or not
    ("snow", "https://192.0.2.10", PEM, False, None, tls.OFF),
    ("us-east-1", "https://localhost:8443", None, False, None, tls.OFF),
    # any other https endpoint: verified against the system's CAs (refused when it does not verify)
    ("us-east-1", "https://localhost:8443", None, True, None, tls.VERIFIED),
    ("us-east-1", "https://s3.wasabisys.com", None, True, None, tls.VERIFIED),
])
def test_decide(region, endpoint, bundle, verify_tls, env, kind):
    mode = tls.decide(region, endpoint, bundle, verify_tls, env)
    assert mode.kind == kind
    expected_verify = {tls.PLAIN: True, tls.VERIFIED: True, tls.BUNDLE: bundle or env, tls.SNOWBALL: False,
                       tls.OFF: False}[kind]
    assert mode.verify == expected_verify
    assert mode.checks == (kind not in (tls.SNOWBALL, tls.OFF))


def test_a_config_bundle_wins_over_aws_ca_bundle():
    mode = tls.decide("snow", "https://192.0.2.10", "/a.pem", True, "/env.pem")
    assert mode.verify == "/a.pem" and not mode.from_env
    mode = tls.decide("snow", "https://192.0.2.10", None, True, "/env.pem")
    assert mode.verify == "/env.pem" and mode.from_env
    assert "AWS_CA_BUNDLE" in mode.label()


def test_labels_say_which_rule_applies():
    assert tls.Mode(tls.VERIFIED).label() == "verified"
    assert tls.Mode(tls.BUNDLE, PEM).label() == f"verified with ca_bundle {PEM}"
    assert tls.Mode(tls.SNOWBALL).label() == "NOT verified: snowball self-signed"
    assert tls.Mode(tls.OFF).label() == "NOT verified: verify_tls false"


def side(region="snow", endpoints=("https://192.0.2.10",), bundle=None, verify_tls=True, name="source") -> Side:
    return Side(name, "b", "", region, Secret("a"), Secret("s"), tuple(endpoints), ca_bundle=bundle,
                verify_tls=verify_tls)


@pytest.fixture
def no_env_bundle(monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)


def test_s5cmd_gets_no_verify_ssl_only_when_not_verifying(no_env_bundle):
    assert "--no-verify-ssl" in s5cmd.global_args(side(), 1, 1)
    assert "--no-verify-ssl" in s5cmd.global_args(side(region="us-east-1", endpoints=("https://h",),
                                                        verify_tls=False), 1, 1)
    for s in (side(bundle=PEM), side(region="us-east-1", endpoints=("https://localhost:9",)),
              side(region="us-east-1", endpoints=("https://s3-accelerate.amazonaws.com",), name="destination"),
              side(region="us-east-1", endpoints=())):
        assert "--no-verify-ssl" not in s5cmd.global_args(s, 1, 1), s


def test_s5cmd_honours_aws_ca_bundle_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", PEM)
    s = side(region="us-east-1", endpoints=("https://s3.example.test",))
    assert "--no-verify-ssl" not in s5cmd.global_args(s, 1, 1)
    assert s3.tls_verify(s) == PEM
    assert s3.child_env(side(), base={"AWS_CA_BUNDLE": PEM})["AWS_CA_BUNDLE"] == PEM


def test_child_env_gives_s5cmd_the_sides_bundle():
    env = s3.child_env(side(bundle=PEM), base={"PATH": "/bin", "AWS_CA_BUNDLE": "/other.pem"})
    assert env["AWS_CA_BUNDLE"] == PEM  # the side's own wins over the environment's
    assert "AWS_CA_BUNDLE" not in s3.child_env(side(), base={"PATH": "/bin"})


def test_boto3_client_verify(no_env_bundle):
    def verify_of(s):
        c = s3.client(s)
        return c._endpoint.http_session._verify

    assert verify_of(side()) is False
    assert verify_of(side(bundle=PEM)) == PEM
    assert verify_of(side(region="us-east-1", endpoints=("https://localhost:9",))) is not False
    assert verify_of(side(region="us-east-1", endpoints=())) is not False
    # Transfer Acceleration: boto3 lists through the regional endpoint, verified
    assert verify_of(side(region="us-east-1", endpoints=("https://s3-accelerate.amazonaws.com",))) is not False
    assert s3.tls_verify(side(), 0) is False and s3.tls_verify(side(bundle=PEM), 0) == PEM


def test_start_warning_names_the_fix():
    msg = tls.start_warning("source", {"https://192.0.2.10": tls.Mode(tls.SNOWBALL), "http://x": tls.Mode(tls.PLAIN)})
    assert "https://192.0.2.10" in msg and "NOT verified" in msg and "http://x" not in msg
    assert "snowballEdge get-certificate" in msg and "source.ca_bundle" in msg
    msg = tls.start_warning("destination", {"https://h": tls.Mode(tls.OFF)})
    assert "destination.verify_tls: false" in msg and "NOT verified" in msg
    assert tls.start_warning("source", {"https://h": tls.Mode(tls.VERIFIED), "https://i": tls.Mode(tls.BUNDLE, PEM)}) is None


@pytest.mark.parametrize("text,reason", [
    ("SSL validation failed for https://localhost:1/b [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate (_ssl.c:1006)", "self-signed certificate"),
    ('Get "https://localhost:1/b": tls: failed to verify certificate: x509: certificate signed by unknown authority',
     "x509: certificate signed by unknown authority"),
    ("SSL validation failed: [SSL: WRONG_VERSION_NUMBER] wrong version number", None),
])
def test_cert_failure_reason(text, reason):
    assert tls.cert_failure(text) == reason


def test_describe_error_refuses_with_endpoint_reason_and_both_fixes():
    import botocore.exceptions

    exc = botocore.exceptions.SSLError(endpoint_url="https://localhost:8443/b", error=Exception(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"))
    msg = s3.describe_error(exc, side(region="us-east-1", endpoints=("https://localhost:8443",)))
    assert "https://localhost:8443" in msg and "self-signed certificate" in msg
    assert "source.ca_bundle" in msg and "source.verify_tls: false" in msg


def test_probe_tells_a_certificate_that_does_not_verify_from_one_that_does():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import free_port
    from tlsproxy import TLSFront

    front = TLSFront(free_port()).start()  # the handshake alone: nothing behind it is needed
    try:
        reason = tls.probe(front.host_url, True)
        assert reason and "self" in reason and "signed" in reason, reason
        assert tls.probe(front.host_url, str(front.cert_path)) is None
        assert tls.probe(front.url, str(front.cert_path)) is None  # its IP address is in the certificate too
        assert tls.probe(front.host_url, False) is None  # not checked: nothing to refuse
        assert tls.probe(f"http://localhost:{front.port}", True) is None
    finally:
        front.stop()
    assert tls.probe(f"https://127.0.0.1:{free_port()}", True) is None  # unreachable: the requests say so


def test_is_refusal():
    import ssl

    import botocore.exceptions

    assert tls.is_refusal(ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"))
    assert tls.is_refusal(botocore.exceptions.SSLError(endpoint_url="https://h", error=Exception(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate")))
    assert not tls.is_refusal(botocore.exceptions.SSLError(endpoint_url="https://h", error=Exception(
        "[SSL: WRONG_VERSION_NUMBER] wrong version number")))
    assert not tls.is_refusal(ConnectionResetError())


def test_a_cycle_that_meets_a_certificate_that_does_not_verify_ends_the_loop_with_exit_2():
    """poll_loop retries a failed cycle, but not a refused certificate: config.yaml must change
    (and sync_mvol.py stops on exit 2 instead of restarting the side)."""
    import ssl
    from types import SimpleNamespace

    from s5jtransfer.runtime import Stopper, poll_loop

    calls = []

    def cycle():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("a network failure: retried")
        raise ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")

    settings = SimpleNamespace(poll_interval=0.01, max_poll_interval=0.02)
    rc = poll_loop(cycle, lambda st, started, delay: delay, lambda exc: str(exc), settings, Stopper())
    assert rc == 2 and len(calls) == 2


def test_a_sync_side_start_refuses_any_of_its_endpoints_that_does_not_verify(caplog, no_env_bundle):
    """commands._tls_start: a Snowball node without a bundle is warned about once; a node whose
    certificate is checked and does not verify stops the start (exit 2) naming that node."""
    import logging
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import free_port
    from tlsproxy import TLSFront

    from s5jtransfer import commands
    from s5jtransfer.errors import ConfigError

    front = TLSFront(free_port()).start()
    try:
        with caplog.at_level(logging.WARNING):
            commands._tls_start(side("snow", (front.url, f"https://127.0.0.2:{front.port}")))
        warned = [r for r in caplog.records if "NOT verified" in r.getMessage()]
        assert len(warned) == 1 and front.url in warned[0].getMessage()
        commands._tls_start(side("us-east-1", (front.host_url,), bundle=str(front.cert_path)))
        with pytest.raises(ConfigError) as ei:
            commands._tls_start(side("us-east-1", (f"http://127.0.0.1:{front.port}", front.host_url)))
        assert ei.value.exit_code == 2
        assert front.host_url in str(ei.value) and "source.ca_bundle" in str(ei.value)
    finally:
        front.stop()


def test_aws_ca_bundle_verifies_a_snowball_only_when_it_holds_the_devices_certificate(monkeypatch, tmp_path):
    """AWS_CA_BUNDLE set machine-wide to the system's CAs must not turn a Snowball away: for a
    Snowball, a bundle from the environment alone is used only when a handshake with it verifies."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import free_port
    from tlsproxy import TLSFront, self_signed

    front = TLSFront(free_port()).start()
    other, _ = self_signed(tmp_path)
    monkeypatch.setattr(tls, "_ENV_BUNDLE_VERIFIES", {})
    try:
        mode = tls.mode_for("snow", front.url, None, True, str(front.cert_path))
        assert mode.kind == tls.BUNDLE and mode.verify == str(front.cert_path)
        mode = tls.mode_for("snow", front.url, None, True, str(other))  # another certificate
        assert mode.kind == tls.SNOWBALL and mode.verify is False
        mode = tls.mode_for("us-east-1", front.url, None, True, str(other))  # an IP address: a Snowball too
        assert mode.kind == tls.SNOWBALL
        dead = f"https://127.0.0.1:{free_port()}"
        assert tls.mode_for("snow", dead, None, True, str(other)).kind == tls.SNOWBALL  # not answering
        # the side's own ca_bundle is taken as given, and a non-Snowball endpoint uses AWS_CA_BUNDLE as it is
        assert tls.mode_for("snow", front.url, str(other), True, None).kind == tls.BUNDLE
        assert tls.mode_for("us-east-1", front.host_url, None, True, str(other)).kind == tls.BUNDLE
    finally:
        front.stop()
