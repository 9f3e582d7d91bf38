"""The pure ingest core: request bytes → normalized events or rejections (no I/O)."""
