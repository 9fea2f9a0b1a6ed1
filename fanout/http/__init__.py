"""The only package that imports the aiohttp client: sending, classification, signing, SSRF guard."""
