"""Log pseudonyms (services/common/pseudonym.py): stable, keyed, per tenant, never the id."""

from __future__ import annotations

import pytest

from services.common.exceptions import ConfigError
from services.common.pseudonym import TOKEN_RE, pseudonym
from services.common.settings import load_settings


def test_a_token_is_stable_and_depends_on_key_tenant_and_id() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    token = pseudonym(key, "default", "+8613800138000")
    assert TOKEN_RE.match(token)
    assert token == pseudonym(key, "default", "+8613800138000")
    others = {pseudonym(b"another key of 32 characters...", "default", "+8613800138000"),
              pseudonym(key, "acme", "+8613800138000"),
              pseudonym(key, "default", "+8613800138001"),
              pseudonym(key, "default\x00+", "8613800138000")}  # the separator is unambiguous
    assert token not in others and len(others) == 4
    assert "8613800138000" not in token


def test_production_refuses_a_weak_pseudonym_key_and_never_echoes_it() -> None:
    base = {"env": "production", "api_keys": "adm-key-0001:admin",
            "ack_link_secret": "Zx7" * 12}
    with pytest.raises(ConfigError) as err:
        load_settings(**base, pseudonym_key="short-Pk-value")
    assert "CHURNWATCH_PSEUDONYM_KEY" in str(err.value) and "short-Pk-value" not in str(err.value)
    load_settings(**base, pseudonym_key="Qw9" * 12)
    assert load_settings(**base).pseudonym_key is None  # unset: the key kept in Redis
    assert load_settings(**base, pseudonym_key="").pseudonym_key is None  # empty = unset
