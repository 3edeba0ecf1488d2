"""One-click acknowledge links against the real API process (issue 14, item 4).

The notifier's side (record the alert, store the link) is done here with the notifier's own
``AckLinks`` and ``record_alert``; the API process must accept the link without an API key,
show a page on GET without acknowledging (mail scanners pre-fetch links), acknowledge once on
POST, and refuse forged, expired and used links.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest
from redis.asyncio import Redis

from services.alerting.acks import AckLinks, get_acknowledgement, record_alert
from services.common.embedded import Server
from services.common.kafka import ensure_topics
from services.common.profiles import CustomerProfile, ProfileStore
from services.common.redisconn import Keys
from services.common.settings import Settings
from tests.conftest import LOG_DIR, make_test_settings
from tests.procs import ServiceProcess

KEYS = "links-admin-0001:admin"


@pytest.fixture(scope="module")
def api(broker: Server, redis_server: Server, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ServiceProcess, Settings]]:
    settings = make_test_settings(broker, redis_server, tmp_path_factory.mktemp("links"),
                                  api_keys=KEYS, ack_link_secret="links-test-" + "k" * 32,
                                  ack_link_ttl_seconds=3600)
    asyncio.run(ensure_topics(settings))
    with ServiceProcess("api", settings, LOG_DIR / f"links-api-{settings.redis_prefix}.log",
                        health_port_setting="api_port") as proc:
        yield proc, settings


def _stands_alone(page: httpx.Response) -> None:
    """The page fetches nothing (no stylesheet, script, image or font: it opens from a mail)
    and its one inline style is the one its Content-Security-Policy allows, by hash: a browser
    applies it (an inline style attribute, or a style the policy does not name, it would not)."""
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none';") and "script-src" not in policy
    [style] = re.findall(r"<style>(.*?)</style>", page.text, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}';" in policy
    assert not re.search(r"<link|<script|<img|\bsrc=|\bstyle=|url\(", page.text), page.text


def _links(redis: Redis, settings: Settings, proc: ServiceProcess) -> AckLinks:
    return AckLinks(redis, Keys(settings.redis_prefix), secret=settings.ack_link_key,
                    public_url=proc.url, ttl_s=settings.ack_link_ttl_seconds)


async def test_a_link_acknowledges_once_without_a_key(api) -> None:
    proc, settings = api
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    links = _links(redis, settings, proc)
    await record_alert(redis, keys, "alert-l1", tenant="acme", customer_id="c-9",
                       store_id="north")
    await ProfileStore(redis, keys).put_profile("c-9", CustomerProfile(name="Mei <Chen>"), "acme")
    url = await links.register("acme", "alert-l1", "Olga")
    assert url.startswith(proc.url + "/a/") and len(url) == len(proc.url) + 3 + 22
    assert await links.register("acme", "alert-l1", "Olga") == url  # a replay: the same link
    async with httpx.AsyncClient(timeout=30) as client:
        page = await client.get(url)  # what a mail scanner does: changes nothing
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<form method="post">' in page.text and "Olga" in page.text
        assert "Mei &lt;Chen&gt;" in page.text and "<Chen>" not in page.text  # escaped
        assert page.headers["cache-control"] == "no-store"
        _stands_alone(page)
        # a way on to the customer's console page (signing in first), relative to the link
        assert '<a href="../console/customers/c-9" id="console">Open in the console</a>' \
            in page.text
        console = await client.get(urljoin(url, "../console/customers/c-9"))
        assert (console.status_code, console.headers["location"]) == (
            303, "/console/sign-in?next=%2Fconsole%2Fcustomers%2Fc-9")
        assert await get_acknowledgement(redis, keys, "alert-l1", "acme") is None
        # what the page's button sends: an empty form body
        done = await client.post(url, content=b"",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and "Acknowledged" in done.text
        # a time people read, and no alert id in the sentence (it showed
        # "... (<code>alert-l1</code>) ... at 2026-12-04T17:11:57.193000Z.")
        said = re.search(r"<p>(.*?)</p>", done.text)
        assert said is not None and re.fullmatch(
            r"The alert about <strong>Mei &lt;Chen&gt;</strong> was acknowledged by "
            r"<strong>Olga</strong> at \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", said.group(1)), said
        assert "alert-l1" not in done.text and 'id="console"' in done.text
        _stands_alone(done)
        ack = await get_acknowledgement(redis, keys, "alert-l1", "acme")
        assert ack is not None and ack["by"] == "Olga"
        again = await client.post(url)  # single use: said in words, styled as the others
        assert again.status_code == 410 and "<h1>Link already used</h1>" in again.text
        assert "This link was already used. The alert about <strong>Mei &lt;Chen&gt;" \
            "</strong> was acknowledged by <strong>Olga</strong>" in again.text, again.text
        assert "acknowledge link was already used" not in again.text  # the API's wording
        _stands_alone(again)
        shown = await client.get(url)
        assert shown.status_code == 410 and "Olga" in shown.text
        # the API's own route sees the same, first acknowledgement
        api_ack = await client.post(f"{proc.url}/v1/alerts/alert-l1/ack",
                                    headers={"Authorization": "Bearer links-admin-0001"})
        assert api_ack.status_code == 404  # alert-l1 is tenant acme's, the key is default's
        timeline = await redis.lrange(keys.timeline("c-9", "acme"), 0, -1)
        assert any('"via":"link"' in t for t in timeline)
    await redis.aclose()


async def test_forged_expired_and_made_up_links_are_refused(api) -> None:
    proc, settings = api
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    links = _links(redis, settings, proc)
    await record_alert(redis, keys, "alert-l2", tenant="default", customer_id="c-8",
                       store_id=None)
    async with httpx.AsyncClient(timeout=30) as client:
        # made up, and a tampered valid token
        good = await links.register("default", "alert-l2", "Ann")
        token = good.rsplit("/", 1)[1]
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        # ...or cut short or garbled in copying: a page in plain words in the browser's
        # language (it was the API's wording, in English, or its JSON), styled as the others,
        # with a way on to the console
        for bad in ("AAAAAAAAAAAAAAAAAAAAAA", tampered, "x", "abc.def", f"{token}/x"):
            for method in ("GET", "POST"):
                for lang, said in (("en-US,en;q=0.9", "<h1>This link does not work</h1>"),
                                   ("zh-CN,zh;q=0.9", "<h1>此链接无法使用</h1>")):
                    r = await client.request(method, f"{proc.url}/a/{bad}",
                                             headers={"accept-language": lang})
                    assert r.status_code in (404, 422), (method, bad, r.status_code)
                    assert said in r.text, (method, bad, lang, r.text)
                    assert "/v1/" not in r.text and "unknown acknowledge link" not in r.text
                    assert r.headers["content-type"].startswith("text/html"), r.text
                    _stands_alone(r)
                    home = await client.get(urljoin(f"{proc.url}/a/{bad}", re.search(
                        r'<a href="([^"]+)" id="console">', r.text).group(1)),  # type: ignore[union-attr]
                        follow_redirects=True)
                    assert home.url.path == "/console/sign-in", (bad, home.url)
        r = await client.get(f"{proc.url}/a/x")  # no Accept-Language: English
        assert 'lang="en"' in r.text and "This acknowledge link is not one we know" in r.text
        # a record written without the secret (someone with Redis access, not the key)
        forger = AckLinks(redis, keys, secret="not-the-secret-" + "z" * 32, public_url=proc.url,
                          ttl_s=3600)
        forged = await forger.register("default", "alert-l2", "Mallory")
        r = await client.post(forged.replace(forger.public_url, proc.url))
        assert r.status_code == 404
        # expired: registered with a lifetime already over
        old = await links.register("default", "alert-l2", "Bob",
                                   now=time.time() - settings.ack_link_ttl_seconds - 60)
        r = await client.post(old, headers={"accept-language": "zh-CN"})
        assert r.status_code == 410 and "<h1>This link has expired</h1>" in r.text, r.text
        assert "You can still acknowledge the alert about <strong>c-8</strong> on their page " \
            "in the staff console." in r.text  # in the recipient's language, not the browser's
        assert '<a href="../console/customers/c-8" id="console">' in r.text
        assert "/v1/" not in r.text and "acknowledge link has expired" not in r.text
        _stands_alone(r)
        assert (await client.get(old)).text == r.text  # opening it says the same
        old_zh = await links.register("default", "alert-l2", "周", locale="zh-CN",
                                      now=time.time() - settings.ack_link_ttl_seconds - 60)
        r = await client.get(old_zh, headers={"accept-language": "en"})
        assert r.status_code == 410 and 'lang="zh-CN"' in r.text and "<h1>链接已过期</h1>" in r.text
        assert "您仍可在员工控制台中 <strong>c-8</strong> 的页面上确认此提醒。" in r.text
        assert await get_acknowledgement(redis, keys, "alert-l2") is None  # nothing took
        # the valid one still works, and the HTML never echoes markup
        r = await client.post(good)
        assert r.status_code == 200 and re.search(r"acknowledged by\s*<strong>Ann", r.text)
        # a zh-CN recipient's link speaks Chinese; a second recipient's link of the same alert
        # still works, answering with the first acknowledgement
        zh = await links.register("default", "alert-l2", "李伟", locale="zh-CN")
        page = await client.get(zh)
        assert page.status_code == 200 and 'lang="zh-CN"' in page.text and "确认" in page.text
        assert '<a href="../console/customers/c-8" id="console">在控制台中打开</a>' in page.text
        r = await client.post(zh)
        assert r.status_code == 200 and "此前已确认" in r.text and "Ann" in r.text
        again = await client.post(zh, headers={"accept-language": "en"})
        assert again.status_code == 410 and "<h1>链接已使用</h1>" in again.text, again.text
        assert "此链接已被使用。" in again.text and "already used" not in again.text
        assert re.search(r"已由 <strong>Ann</strong> 于 \d{4}-\d\d-\d\d \d\d:\d\d UTC 确认。",
                         r.text), r.text
    await redis.aclose()
