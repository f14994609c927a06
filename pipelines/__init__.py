"""FieldTrace pipelines: settings, the DuckDB store, sources, ingest and runners.

Imports flow one way: ``dashboard`` → ``pipelines`` → ``geofence``.
"""
