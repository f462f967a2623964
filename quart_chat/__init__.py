"""quart_chat: a multi-room real-time chat server; instances stay in sync through Redis."""

from .app import create_app

__all__ = ["app", "create_app"]

app = create_app()
