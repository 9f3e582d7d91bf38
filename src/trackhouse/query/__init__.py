"""The read side: export (streaming NDJSON); SQL and the where-language come later."""
