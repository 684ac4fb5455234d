"""Secrets, resolved once at flow start: environment first, then Prefect Secret blocks.

Resolved values are handed to the tasks that need them and never logged.
"""

from __future__ import annotations

import logging
import os
import re

import sqlalchemy as sa

from framework.config import FrameworkConfig
from framework.errors import SourceError

log = logging.getLogger("growth.secrets")

SLACK_TOKEN_ENV = "SLACK_BOT_TOKEN"
SLACK_TOKEN_BLOCK = "slack-bot-token"


def source_env_var(name: str) -> str:
    """The environment variable that overrides a source's URL: GROWTH_SOURCE_URL_<NAME>."""
    return "GROWTH_SOURCE_URL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _load_secret_block(block_name: str) -> str:
    from prefect.blocks.system import Secret  # only when a framework names a block

    value = Secret.load(block_name).get()
    return value if isinstance(value, str) else str(value)


def resolve_source_urls(cfg: FrameworkConfig) -> dict[str, str]:
    """One URL per source: GROWTH_SOURCE_URL_<NAME>, else ``url``, else the Secret block ``secret``."""
    urls: dict[str, str] = {}
    for name, src in cfg.sources.items():
        override = os.environ.get(source_env_var(name))
        if override:
            urls[name] = override
        elif src.url:
            urls[name] = src.url
        else:
            assert src.secret
            try:
                urls[name] = _load_secret_block(src.secret)
            except Exception as exc:  # noqa: BLE001 - any failure to read the block is the same to the user
                raise SourceError(
                    f"source '{name}': cannot read the Prefect Secret block '{src.secret}': {type(exc).__name__}"
                ) from None
    return urls


def resolve_slack_token() -> str | None:
    """SLACK_BOT_TOKEN, else the Prefect Secret block ``slack-bot-token``, else None."""
    token = os.environ.get(SLACK_TOKEN_ENV)
    if token:
        return token
    try:
        return _load_secret_block(SLACK_TOKEN_BLOCK)
    except Exception:  # noqa: BLE001 - no block simply means no Slack credentials
        log.debug("no Secret block %s", SLACK_TOKEN_BLOCK)
        return None


STORE_URL_ENV = "GROWTH_STORE_URL"
STORE_URL_BLOCK = "growth-store-url"
DEFAULT_STORE_URL = "sqlite:///data/growth.db"


def resolve_store_url() -> str:
    """GROWTH_STORE_URL, else the Prefect Secret block ``growth-store-url``, else the local SQLite file."""
    url = os.environ.get(STORE_URL_ENV)
    if url:
        return url
    try:
        return _load_secret_block(STORE_URL_BLOCK)
    except Exception:  # noqa: BLE001 - no block: the local default
        return DEFAULT_STORE_URL


def redact(url: str | sa.URL) -> str:
    """A database URL fit for messages and logs: the password hidden; an unparsable URL is
    shown by its scheme only, if it has one, never its text (it may be a secret put where
    the URL belongs)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        scheme, sep, _ = str(url).partition("://")
        ok = sep and scheme and all(c.isalnum() or c in "+-." for c in scheme)
        return f"{scheme}://***" if ok else "<an unparsable URL>"
