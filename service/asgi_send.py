"""An ASGI ``send`` that remembers whether the response has started, and its status.

Middlewares that may answer in the app's place (413, 504) must know whether the app
already started its own answer; the metrics middleware needs the status.
"""

from __future__ import annotations

from starlette.types import Message, Send


class TrackedSend:
    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        await self._send(message)
