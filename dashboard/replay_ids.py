"""Component ids of the replay page (kept apart from ``dashboard.ids`` while pages are added)."""

REQUEST = "replay-request"  # dcc.Store: {"ticket", "node", "t", "window_min"}
SAMPLES = "replay-samples"  # dcc.Store: compact per-stream playback samples
BUNDLE_KEY = SAMPLES  # the node-click (load) callback's first output
CLOCK = "replay-clock"  # dcc.Store: {"playing", "wall"}
INTERVAL = "replay-interval"
DOWNLOAD = "replay-download"
HEADER = "replay-header"
TIMELINE = "replay-timeline"
SLIDER = "replay-slider"
PLAY = "replay-play"
SPEED = "replay-speed"
WINDOW = "replay-window"
TIME = "replay-time"
STATUS = "replay-status"
EXPORT = "replay-export"
MAP = "replay-map"
VERDICT = "replay-verdict"
VERDICT_BADGE = "replay-verdict-badge"
WEATHER = "replay-weather"
EVENTS = "replay-events"
EVENT_ITEM = "replay-event"  # pattern-matching type: {"type": EVENT_ITEM, "index": i}
IOT = "replay-iot"
UWB = "replay-uwb"
UWB_PANEL = "replay-uwb-panel"
SPECTRUM = "replay-spectrum"
SPECTRUM_PANEL = "replay-spectrum-panel"
