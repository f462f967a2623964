"""quart_chat: a multi-room real-time chat server; instances stay in sync through Redis."""

from .app import create_app
from .eventloop import prefer_uvloop

__all__ = ["app", "create_app"]

prefer_uvloop()  # under Hypercorn's plain asyncio worker too (CHAT_UVLOOP=0 opts out)
app = create_app()
