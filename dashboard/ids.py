"""Every component id of the dashboard, in one place."""

URL = "url"
PAGE = "page-content"
ERROR_BANNER = "error-banner"  # a callback's refusal or failure, shown instead of a 500
NAV = "nav"

STATUS_REFRESH = "status-refresh"
STATUS_COUNTS = "status-counts"
STATUS_QUARANTINE_CHART = "status-quarantine-chart"
STATUS_BATCHES_CHART = "status-batches-chart"
STATUS_BATCHES_TABLE = "status-batches-table"
STATUS_QUARANTINE_TABLE = "status-quarantine-table"
STATUS_EDGE_TABLE = "status-edge-table"

USER_BADGE = "user-badge"

# Dispatch page
DISPATCH_MAP = "dispatch-map"
DISPATCH_KPIS = "dispatch-kpis"
DISPATCH_REGION = "dispatch-region"
DISPATCH_TAG = "dispatch-tag"
DISPATCH_STATUS = "dispatch-status"
DISPATCH_HOURS = "dispatch-hours"
DISPATCH_LAYERS = "dispatch-layers"
DISPATCH_REFRESH = "dispatch-refresh"
DISPATCH_NOTE = "dispatch-note"
DISPATCH_AT = "dispatch-at"  # as-of slider: epoch seconds
DISPATCH_AT_LABEL = "dispatch-at-label"
DISPATCH_AT_LATEST = "dispatch-at-latest"
DISPATCH_AT_WANT = "dispatch-at-want"  # Store: the URL's at= (epoch s, "latest" or None)
DISPATCH_MODE = "dispatch-mode"  # "live" or "asof": two modes of the same page
DISPATCH_LIVE_TICK = "dispatch-live-tick"  # Interval: live position polling
DISPATCH_LIVE_SINCE = "dispatch-live-since"  # Store: newest fix time seen (ISO)
DISPATCH_LIVE_INDEX = "dispatch-live-index"  # Store: technician -> [trace, point] on the map
DISPATCH_TICKER = "dispatch-ticker"  # verdicts, geofence events, alerts as they happen

# Ticket page
TICKET_HEADER = "ticket-header"
TICKET_TIMELINE = "ticket-timeline"
TICKET_ARRIVAL_MAP = "ticket-arrival-map"
TICKET_EVIDENCE = "ticket-evidence"
TICKET_CHECKLIST = "ticket-checklist"
TICKET_ORIGIN = "ticket-origin"
TICKET_ORIGIN_SPECTRUM = "ticket-origin-spectrum"

# Alerts & warehouse page
ALERTS_LIST = "alerts-list"
ALERTS_SELECTED = "alerts-selected"
ALERTS_DETAIL = "alerts-detail"
ALERTS_MAP = "alerts-map"
ALERTS_COUNTS = "alerts-counts"
ALERTS_ORDERS = "alerts-orders"
ALERTS_MESSAGE = "alerts-message"
ALERTS_VERSION = "alerts-version"
ALERT_PICK = "alert-pick"  # pattern-matching type: {"type": ALERT_PICK, "alert": id}
ORDER_ACTION = (
    "order-action"  # {"type": ORDER_ACTION, "action": "acknowledge"|"fulfil", "order": id}
)

# Analytics page
ANALYTICS_REGION = "analytics-region"
ANALYTICS_SEGMENTS = "analytics-segments"
ANALYTICS_LAG = "analytics-lag"
ANALYTICS_REGIONS = "analytics-regions"
ANALYTICS_TECHNICIANS = "analytics-technicians"
ANALYTICS_VERDICTS = "analytics-verdicts"
ANALYTICS_RELIABILITY = "analytics-reliability"
ANALYTICS_REPORT_TABLE = "analytics-report-table"
ANALYTICS_REPORT_BREAKDOWNS = "analytics-report-breakdowns"
ANALYTICS_HOTSPOTS = "analytics-hotspots"
