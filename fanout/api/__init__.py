"""The HTTP API (``fanout api``): an aiohttp server; see ``fanout.api.app``."""
