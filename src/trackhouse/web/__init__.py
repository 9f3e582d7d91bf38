"""The HTTP face of trackhouse: a small ASGI application (see app.create_app)."""
