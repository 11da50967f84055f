"""Store-and-forward: a durable local outbox per remote destination, and its forwarder."""
