"""A SuperLink bound beyond this machine must authenticate its SuperNodes over TLS."""

from __future__ import annotations

import pytest

from ilora.flower.superlink import check_exposure

SECURE = ["--ssl-certfile", "s.pem", "--ssl-keyfile", "s.key", "--enable-supernode-auth"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_a_loopback_superlink_needs_nothing_more(host: str) -> None:
    check_exposure(host, [])


@pytest.mark.parametrize("host", ["0.0.0.0", "link.example.org"])
def test_an_exposed_superlink_with_tls_and_node_auth_is_allowed(host: str) -> None:
    check_exposure(host, SECURE)


@pytest.mark.parametrize(
    "args", [[], ["--insecure"], [*SECURE, "--insecure"], SECURE[:-1]], ids=str
)
def test_an_exposed_superlink_without_tls_or_node_auth_is_refused(args: list[str]) -> None:
    with pytest.raises(ValueError, match="exposes the SuperLink"):
        check_exposure("0.0.0.0", args)
    with pytest.raises(ValueError, match="exposes the SuperLink"):
        check_exposure("link.example.org", args)
