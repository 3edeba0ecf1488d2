from __future__ import annotations

import pytest

from services.alerting.webhooks import TargetUnresolvable, validate_target

PUBLIC_IP = "93.184.215.14"


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("https://172.16.5.4/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("http://224.0.0.1/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://100.64.0.1/", "non-public"),
])
def test_private_and_loopback_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        validate_target(url, allow_private=False)
    assert "CHURNWATCH_WEBHOOK_ALLOW_PRIVATE" in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook",
                                 "https://10.1.2.3/x", "http://[::1]:9000/"])
def test_private_targets_are_allowed_with_the_flag(url: str) -> None:
    assert validate_target(url, allow_private=True).startswith(url.split(":")[0] + "://")


@pytest.mark.parametrize("url, hint", [
    ("ftp://example.com/hook", "only http:// and https://"),
    ("file:///etc/passwd", "only http:// and https://"),
    ("example.com/hook", "only http:// and https://"),
    ("https:///hook", "no host"),
    ("", "empty"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://example.com:99999/", "invalid port"),
    ("https://exa mple.com/", "whitespace"),
])
def test_malformed_urls_are_refused_with_the_fix(url: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        validate_target(url, allow_private=True)


def test_public_address_is_accepted_and_normalised() -> None:
    assert validate_target(f"HTTPS://{PUBLIC_IP}:443/hooks?x=1#frag", allow_private=False) \
        == f"https://{PUBLIC_IP}/hooks?x=1"
    assert validate_target(f"http://{PUBLIC_IP}:8080", allow_private=False) \
        == f"http://{PUBLIC_IP}:8080/"


def test_unresolvable_host_is_reported_as_such() -> None:
    with pytest.raises(TargetUnresolvable, match="does not resolve"):
        validate_target("https://no-such-host.invalid/hook", allow_private=False)
