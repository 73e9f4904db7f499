"""Web doors: the Litestar app, the WebSocket gateway, REST, SSE, admin and health routes."""
