"""The chat page."""

from quart import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
async def index() -> str:
    """Serve the single-page chat client."""
    return await render_template("index.html")
