"""The chat page."""

from quart import Blueprint, render_template

from ..chat import get_chat

bp = Blueprint("pages", __name__)


@bp.get("/")
async def index() -> str:
    """Serve the single-page chat client."""
    settings = get_chat().settings
    # The page reads the limits it enforces from here, never from a copy of its own.
    return await render_template("index.html", max_text=settings.max_text, max_frame=settings.max_frame,
                                 archive=1 if settings.archive_url else 0)
