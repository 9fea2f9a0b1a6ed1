"""The value objects and contracts every layer shares: events and deliveries, subscriptions, the retry
and dead-letter header contract, the error tree and the ports the layers meet through. Imports nothing
else of fanout."""
