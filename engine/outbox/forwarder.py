"""The forwarder thread of one destination (placeholder until the real one is committed: it
starts and ends at once, so the outbox only accumulates)."""

import threading


class Forwarder(threading.Thread):
    def __init__(self, store, make_target, config, say=None):
        super().__init__(daemon=True)

    def update(self, make_target, config):
        pass

    def stop(self):
        pass

    def run(self):
        pass
