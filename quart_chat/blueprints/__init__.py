"""The HTTP surface: the page, the WebSocket route and the REST routes, one blueprint each."""
