"""Batch pipelines on Dask: re-verifying arrivals over a period, recomputing the cluster
history, and bulk ingest of many files.

Each pipeline splits its work into pure partitions (a frame in, a frame out) and runs them
either one after another in this process (``engine="local"``) or as Dask tasks
(``engine="dask"``, on a scheduler address or a LocalCluster). Both paths call the same
partition function, so "Dask equals single-process" is a test, not a hope.
"""
