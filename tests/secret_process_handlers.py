"""Handlers for the daemons tests/test_secret_masking.py starts: each one leaks a secret the
way an upstream gateway or a careless handler would (`jobrunner run --handlers tests.secret_process_handlers`)."""

from __future__ import annotations

import os
from typing import Any

from jobrunner import JobContext, handler, register_secret

# a plugin that holds a credential from elsewhere (a vault, a file) registers it itself
PLUGIN_TOKEN = "plugin-held-token-5be1c0de"
register_secret(PLUGIN_TOKEN)


class GatewayError(Exception):
    pass


def _call_gateway(key: str) -> None:
    # the traceback shows this line too: the key is in the message, not in the source
    raise GatewayError(f"401 from gateway: invalid api key {key!r}; retry with a valid Authorization header")


@handler("echo_env_key")
async def echo_env_key(ctx: JobContext[dict[str, Any]]) -> None:
    key = os.environ["OPENAI_API_KEY"]
    ctx.log.warning("gateway answered", body=f"echo: {key}", nested={"tokens": [key, PLUGIN_TOKEN]})
    _call_gateway(key)


@handler("echo_plugin_token")
async def echo_plugin_token(_ctx: JobContext[dict[str, Any]]) -> None:
    raise GatewayError(f"token {PLUGIN_TOKEN} was refused")
