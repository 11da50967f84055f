"""Example plugin for the `python` transformation: takes and returns a Polars DataFrame."""

import polars as pl


def add_power(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns((pl.col("voltage") * pl.col("current") / 1000).alias("power_kw"))
