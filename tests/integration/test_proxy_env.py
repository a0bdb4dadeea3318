"""Standard HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured by both s5cmd and boto3."""

from __future__ import annotations

import os

import pytest

from fwdproxy import ForwardProxy

# A name that never resolves (RFC 2606): only a client that goes through the proxy reaches S3.
HOST = "s3.s5j-proxy-test.invalid"


@pytest.mark.parametrize("native", [False, True], ids=["s5cmd", "native"])
def test_both_sides_go_through_the_proxy(work, native):
    proxy = ForwardProxy({HOST: ("127.0.0.1", work.server.port)}).start()
    try:
        data = {f"p{i}.bin": os.urandom(3000) for i in range(5)}
        work.put_all(data)
        url = f"http://{HOST}:{work.server.port}"
        work.cfg["transfer_settings"].update(src_endpoint_url=url, dest_endpoint_url=url, src_use_native_s3=native)
        work.write_config()
        env = {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "http_proxy": proxy.url, "https_proxy": proxy.url}
        r = work.run("sync_mvol.py", "--once", env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        for k, v in data.items():
            assert work.dest_bytes(k) == v
        agents = dict(proxy.by_agent)
        assert agents.get("Boto3", 0) > 0, agents  # listings, HEADs (and native downloads)
        assert agents.get("aws-sdk-go", 0) > 0, agents  # s5cmd uploads (and downloads)
        # NO_PROXY is honoured too: with the host excluded, nothing can reach it
        work.cfg["transfer_settings"]["retries"] = 1
        work.write_config()
        before = sum(proxy.by_agent.values())
        r = work.run("src_connect_test.py", "--quiet", env={**env, "NO_PROXY": HOST, "no_proxy": HOST}, timeout=60)
        assert r.returncode == 1 and "did not answer" in r.stderr
        assert sum(proxy.by_agent.values()) == before
    finally:
        proxy.stop()
