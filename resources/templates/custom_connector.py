"""Template for a custom connector (`"connector_type": "custom"`).

Copy this file into the data directory's `plugins/` folder (e.g. `plugins/my_connector.py`) and name
the class in the pipeline:

    {"id": "src", "kind": "source", "connector_type": "custom",
     "config": {"implementation": "my_connector.CustomConnector",
                "config": {"rows": 5, "token": {"secret": "my_api_token"}}}}

`config` is yours: it reaches `__init__` as a dict, with every {"secret": NAME} replaced by the
secret's value. Only files in plugins/ are ever loaded. Delete the methods you do not need.
"""


class CustomConnector:
    def __init__(self, config):
        self.config = config
        self.connection = None

    def connect(self):
        # Open the connection to your system here (a socket, a vendor SDK client, a file...).
        self.connection = object()

    # ---- as a source: fetch_data (simple) or fetch_batches (fast) ----------------------------
    def fetch_data(self):
        # A list of dicts, one per record.
        return [{"id": i, "value": i * 1.5} for i in range(self.config.get("rows", 3))]

    # def fetch_batches(self):
    #     # The fast path: yield pyarrow Tables / RecordBatches or Polars DataFrames.
    #     import polars as pl
    #     yield pl.DataFrame({"id": [1, 2], "value": [1.5, 3.0]})

    # ---- as a destination ---------------------------------------------------------------------
    # def write_batch(self, frame):
    #     # Called once per batch (a Polars DataFrame; `"batch_format": "arrow"` or "records" in the
    #     # connector config gives an Arrow table or a list of dicts). Stage it: nothing should be
    #     # visible to others until commit().
    #     ...
    #
    # def commit(self):
    #     # The run succeeded: make everything written visible at once.
    #     ...
    #
    # def rollback(self):
    #     # The run failed: drop what write_batch was given.
    #     ...

    # ---- both ---------------------------------------------------------------------------------
    # def test_connection(self):
    #     # "Test connection" calls this when it exists (else connect() then close()); raise to fail.
    #     ...

    def close(self):
        self.connection = None
