"""The only package that imports HTTP client libraries (aiohttp, httptools): the sender, the transports
(``transport`` is the boundary; ``fast`` and ``aiohttp_transport`` implement it), classification, signing,
the SSRF guard and the egress proxy."""
