from __future__ import annotations

import pytest

from services.alerting.webhooks import TargetUnresolvable, validate_target
from services.common.cleartext import cleartext_refusal, is_loopback_host

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
    assert validate_target(f"https://{PUBLIC_IP}:8443", allow_private=False) \
        == f"https://{PUBLIC_IP}:8443/"


# Plain http:// carries customer data in clear: only to this machine, or opted out ------------

@pytest.mark.parametrize("url, allow_private", [
    (f"http://{PUBLIC_IP}/hooks", False), (f"HTTP://{PUBLIC_IP}:8080/hooks", False),
    (f"http://{PUBLIC_IP}/hooks", True),  # the private flag opens addresses, not plain http
    ("http://10.1.2.3/hook", True), ("http://192.168.0.10:8080/hook", True),
    ("http://[fd12:3456::1]/hook", True),
])
def test_plain_http_off_this_machine_is_refused_with_the_fix(url: str, allow_private: bool) -> None:
    with pytest.raises(ValueError) as info:
        validate_target(url, allow_private=allow_private)
    message = str(info.value)
    assert "plain http://" in message and "https://" in message.split("Use ", 1)[1]
    assert "CHURNWATCH_WEBHOOK_ALLOW_HTTP=true" in message
    assert "customer" in message  # says why: the deliveries carry customer data


def test_the_refusal_names_the_https_url_to_use() -> None:
    with pytest.raises(ValueError, match=f"Use https://{PUBLIC_IP}/hooks\\?k=1,"):
        validate_target(f"http://{PUBLIC_IP}/hooks?k=1", allow_private=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://127.8.9.10/hook",
                                 "http://localhost:9000/hook", "http://LOCALHOST/hook",
                                 "http://[::1]:9000/hook", "http://[::ffff:127.0.0.1]/hook"])
def test_plain_http_to_this_machine_needs_no_opt_out(url: str) -> None:
    assert validate_target(url, allow_private=True, allow_http=False).startswith("http://")


@pytest.mark.parametrize("url", [f"http://{PUBLIC_IP}/hooks", "http://10.1.2.3/hook",
                                 "http://[fd12:3456::1]:8080/hook"])
def test_the_opt_out_allows_plain_http(url: str) -> None:
    assert validate_target(url, allow_private=True, allow_http=True).startswith("http://")


def test_the_opt_out_opens_plain_http_not_private_addresses() -> None:
    with pytest.raises(ValueError, match="CHURNWATCH_WEBHOOK_ALLOW_PRIVATE"):
        validate_target("http://10.1.2.3/hook", allow_private=False, allow_http=True)


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("LocalHost.", True), ("127.0.0.1", True), ("127.255.0.9", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("localhost.example.com", False), ("127.0.0.1.nip.io", False), ("0.0.0.0", False),
    ("::", False), ("10.0.0.1", False), ("2130706433", False), ("2002:7f00:1::", False),
    ("", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_cleartext_check_reads_the_url_only() -> None:
    assert cleartext_refusal("https://anywhere.example/x", allow_http=False, what="u") is None
    assert cleartext_refusal("http://localhost:1/x", allow_http=False, what="u") is None
    assert cleartext_refusal("http://sms.example/x", allow_http=True, what="u") is None
    why = cleartext_refusal("http://user:tok3n@sms.example:8080/x", allow_http=False,
                            what="CHURNWATCH_SMS_GATEWAY_URL")
    assert why is not None and why.startswith("CHURNWATCH_SMS_GATEWAY_URL 'http://***@sms.example")
    assert "tok3n" not in why and "Use an https:// URL" in why


def test_unresolvable_host_is_reported_as_such() -> None:
    with pytest.raises(TargetUnresolvable, match="does not resolve"):
        validate_target("https://no-such-host.invalid/hook", allow_private=False)
