"""An example plugin: the smallest useful handler, and the shape every plugin follows."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobrunner import JobContext, handler


class EchoPayload(BaseModel):
    message: str = Field(max_length=10_000)


@handler("echo", payload_model=EchoPayload, timeout=10)
async def echo(ctx: JobContext[EchoPayload]) -> dict[str, str]:
    """Logs the message and stores it as the job's result."""
    ctx.log.info("echo", message=ctx.payload.message)
    return {"echo": ctx.payload.message}
