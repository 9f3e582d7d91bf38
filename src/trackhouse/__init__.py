"""trackhouse: a self-hosted event store that speaks Mixpanel's ingestion API."""

__version__ = "0.1.0"
