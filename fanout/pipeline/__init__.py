"""The data path: decode → route → deliver (lanes) → settle. No confluent_kafka or aiohttp imports here."""
