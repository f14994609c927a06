"""Every component id of the dashboard, in one place."""

URL = "url"
PAGE = "page-content"
NAV = "nav"

STATUS_REFRESH = "status-refresh"
STATUS_COUNTS = "status-counts"
STATUS_QUARANTINE_CHART = "status-quarantine-chart"
STATUS_BATCHES_CHART = "status-batches-chart"
STATUS_BATCHES_TABLE = "status-batches-table"
STATUS_QUARANTINE_TABLE = "status-quarantine-table"
