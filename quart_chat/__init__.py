"""quart_chat: a multi-room real-time chat server; instances stay in sync through Redis.

``hypercorn quart_chat:app`` serves `app`, which is built from the environment when the
server first calls it (see `entry`): importing the package builds nothing.
"""

from .app import create_app
from .entry import EnvApp
from .eventloop import prefer_uvloop

__all__ = ["app", "create_app"]

prefer_uvloop()  # under Hypercorn's plain asyncio worker too (CHAT_UVLOOP=0 opts out)
app = EnvApp()
