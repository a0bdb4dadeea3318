"""TLS per endpoint: the pure rule deciding how a certificate is checked, and the lines saying which.

The rule (README "TLS"), for one endpoint of one side:
- http://                                      -> no TLS at all
- AWS (no_endpoint, *.amazonaws.com, s3-accelerate included) -> verified, always (with the
  side's ca_bundle, or AWS_CA_BUNDLE, when one is given)
- verify_tls: false                            -> NOT verified (a warning at every start)
- a ca_bundle (the side's, else AWS_CA_BUNDLE)  -> verified against that bundle
- a Snowball: region snow, or a host written as an IP address -> NOT verified (its certificate
  is its own, self-signed; a warning at every start names the fix)
- anything else                                -> verified against the system's CAs

AWS_CA_BUNDLE is often set machine-wide to the system's CA list, which cannot verify a
Snowball: for a Snowball, a bundle that comes only from AWS_CA_BUNDLE is used when one TLS
handshake with it verifies the device (mode_for), else the Snowball rule applies.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import urllib.parse
from typing import NamedTuple

SNOW = "snow"

PLAIN = "plain"  # http: no TLS
VERIFIED = "verified"  # the system's CA store
BUNDLE = "bundle"  # a CA bundle file
SNOWBALL = "snowball"  # not verified: a Snowball's self-signed certificate
OFF = "off"  # not verified: verify_tls false


class Mode(NamedTuple):
    kind: str
    bundle: str | None = None  # the CA bundle file, for BUNDLE
    from_env: bool = False  # the bundle came from AWS_CA_BUNDLE, not config.yaml

    @property
    def verify(self) -> bool | str:
        """boto3's `verify`: a bundle path, True (system CAs) or False (not verified)."""
        if self.kind == BUNDLE:
            return self.bundle or True
        return self.kind not in (SNOWBALL, OFF)

    @property
    def checks(self) -> bool:
        """Whether s5cmd must verify (no --no-verify-ssl)."""
        return self.kind not in (SNOWBALL, OFF)

    def label(self) -> str:
        """What the connect tests print."""
        if self.kind == PLAIN:
            return "no TLS (http)"
        if self.kind == VERIFIED:
            return "verified"
        if self.kind == BUNDLE:
            return f"verified with ca_bundle {self.bundle}" + (" (from AWS_CA_BUNDLE)" if self.from_env else "")
        if self.kind == SNOWBALL:
            return "NOT verified: snowball self-signed"
        return "NOT verified: verify_tls false"


def is_aws(endpoint: str | None) -> bool:
    """The default AWS endpoint (None), or a URL whose host is AWS's (Transfer Acceleration too)."""
    if endpoint is None:
        return True
    host = (urllib.parse.urlsplit(endpoint).hostname or "").lower().rstrip(".")
    return host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def is_ip(endpoint: str) -> bool:
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def is_snowball(region: str, endpoint: str | None) -> bool:
    """A Snowball's endpoint, as far as TLS is concerned: region snow, or a host given as an IP address."""
    return endpoint is not None and (region == SNOW or is_ip(endpoint))


def decide(region: str, endpoint: str | None, ca_bundle: str | None = None, verify_tls: bool = True,
           env_bundle: str | None = None) -> Mode:
    """How the certificate of `endpoint` (None: the default AWS endpoint) is checked. Pure."""
    if endpoint is not None and urllib.parse.urlsplit(endpoint).scheme.lower() == "http":
        return Mode(PLAIN)
    bundle = ca_bundle or env_bundle or None
    from_env = not ca_bundle and bool(env_bundle)
    if is_aws(endpoint):
        return Mode(BUNDLE, bundle, from_env) if bundle else Mode(VERIFIED)
    if not verify_tls:
        return Mode(OFF)
    if bundle:
        return Mode(BUNDLE, bundle, from_env)
    if is_snowball(region, endpoint):
        return Mode(SNOWBALL)
    return Mode(VERIFIED)


_ENV_BUNDLE_VERIFIES: dict[tuple[str, str], bool] = {}


def mode_for(region: str, endpoint: str | None, ca_bundle: str | None, verify_tls: bool,
             env_bundle: str | None) -> Mode:
    """decide(), except that a Snowball whose only bundle is AWS_CA_BUNDLE is verified with it only
    when a TLS handshake with that bundle verifies the device (asked once per process and
    endpoint); when it does not, or the device does not answer then, the Snowball rule applies."""
    mode = decide(region, endpoint, ca_bundle, verify_tls, env_bundle)
    if mode.kind == BUNDLE and mode.from_env and is_snowball(region, endpoint):
        key = (endpoint, mode.bundle)
        if key not in _ENV_BUNDLE_VERIFIES:
            _ENV_BUNDLE_VERIFIES[key] = _handshake(endpoint, mode.bundle)[0] == "ok"
        if not _ENV_BUNDLE_VERIFIES[key]:
            return Mode(SNOWBALL)
    return mode


def start_warning(side_name: str, modes: dict[str, Mode]) -> str | None:
    """The one warning a start logs for a side whose certificates are not verified, or None.
    modes: endpoint URL -> Mode."""
    snow = [u for u, m in modes.items() if m.kind == SNOWBALL]
    off = [u for u, m in modes.items() if m.kind == OFF]
    parts = []
    if snow:
        parts.append(f"the TLS certificate of the {side_name} endpoint {', '.join(snow)} is NOT verified (taken as "
                     f"a Snowball's self-signed one); to verify it, fetch the device's certificate (snowballEdge "
                     f"list-certificates, then snowballEdge get-certificate --certificate-arn ARN > snowball.pem) "
                     f"and set {side_name}.ca_bundle: /path/to/snowball.pem in config.yaml")
    if off:
        parts.append(f"the TLS certificate of the {side_name} endpoint {', '.join(off)} is NOT verified "
                     f"({side_name}.verify_tls: false in config.yaml); set {side_name}.ca_bundle to its "
                     f"certificate and remove verify_tls to protect this link")
    return "; ".join(parts) or None


_REASON = re.compile(r"certificate verify failed: ([^(\]]+)")


def cert_failure(text: str) -> str | None:
    """The reason a certificate was refused, from an error's text (Python's ssl or Go's
    crypto/x509, as s5cmd prints it), or None when the text is not a certificate failure."""
    m = _REASON.search(text)
    if m:
        return m.group(1).strip()
    for marker in ("x509: ", "CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "hostname mismatch"):
        i = text.find(marker)
        if i >= 0:
            return text[i:i + 200].split("\n")[0].strip()
    return None


def probe(endpoint: str, verify: bool | str, timeout: float = 3.0) -> str | None:
    """Why the certificate of an https endpoint does not verify, from one TLS handshake (no
    request is sent), checked as `verify` says (a bundle's path, or True: the default CAs); None
    when it verifies, when it is not checked, or when the endpoint cannot be reached (the regular
    requests then name that, and retry)."""
    outcome, reason = _handshake(endpoint, verify, timeout)
    return reason if outcome == "refused" else None


def _handshake(endpoint: str, verify: bool | str, timeout: float = 3.0) -> tuple[str, str | None]:
    """One TLS handshake with an https endpoint: ("ok", None), ("refused", why the certificate
    does not verify), or ("skipped", None) when not https, not checked or not answering."""
    u = urllib.parse.urlsplit(endpoint)
    if u.scheme.lower() != "https" or verify is False or not u.hostname:
        return "skipped", None
    try:
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        with socket.create_connection((u.hostname, u.port or 443), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=u.hostname):
                return "ok", None
    except ssl.SSLCertVerificationError as exc:
        return "refused", exc.verify_message or str(exc)
    except (OSError, ValueError):
        return "skipped", None


def is_refusal(exc: BaseException) -> bool:
    """Whether exc (or the exception it was raised from) is a certificate that did not verify:
    a setting to change, not a network failure to retry."""
    for e in (exc, exc.__cause__):
        if e is None:
            continue
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        if type(e).__name__ == "SSLError" and cert_failure(str(e)):  # botocore's, without importing it
            return True
    return False


def refusal(side_name: str, endpoint: str, reason: str) -> str:
    """The message of an endpoint whose certificate does not verify: the endpoint, why, and both fixes."""
    return (f"the TLS certificate of the {side_name} endpoint {endpoint} does not verify ({reason}); "
            f"refusing to use it. Fix: set {side_name}.ca_bundle: /path/to/cert.pem (the endpoint's certificate "
            f"or its CA, PEM) in config.yaml, or, to accept any certificate from it, {side_name}.verify_tls: false")
