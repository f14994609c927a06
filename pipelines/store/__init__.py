"""The store: the one DuckDB gateway (``gateway``), the schema and its migrations (``schema``),
and read-side queries shared by the CLI and the dashboard (``queries``)."""
