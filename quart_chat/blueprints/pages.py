"""The chat page."""

from quart import Blueprint, render_template

from ..app import get_chat

bp = Blueprint("pages", __name__)


@bp.get("/")
async def index() -> str:
    """Serve the single-page chat client."""
    return await render_template("index.html", max_text=get_chat().settings.max_text)
