"""The ``fieldtrace`` command line: the top layer (cli > dashboard > pipelines > geofence)."""
