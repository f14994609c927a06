/* Replay page playback, in the browser (dash clientside callbacks, namespace "replay").
 *
 * Seeking to T shows, on every panel, the latest sample at or before T on its stream (per key),
 * like Foxglove. Playback advances T by TRUE elapsed wall time × speed, not by point count.
 * The server sends compact per-stream samples (epoch ms, sorted by time) once per node click;
 * every frame here is computed from them without a server round trip.
 */
(function () {
  "use strict";
  var M_PER_DEG = 111320;
  var cache = new WeakMap();

  function noUpdate() { return window.dash_clientside.no_update; }
  function clone(fig) { return fig ? JSON.parse(JSON.stringify(fig)) : fig; }
  function plotTime(ms) { return new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }

  /* Number of entries of sorted ``arr`` that are <= x. */
  function countAtOrBefore(arr, x) {
    var lo = 0, hi = arr.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (arr[mid] <= x) { lo = mid + 1; } else { hi = mid; } }
    return lo;
  }

  /* Per key (joined key columns): the sample indices in time order, and their times. */
  function groups(stream, keys) {
    var hit = cache.get(stream);
    if (hit) { return hit; }
    var out = {};
    for (var i = 0; i < stream.t.length; i++) {
      var key = keys.map(function (k) { return stream[k][i]; }).join(" · ");
      if (!out[key]) { out[key] = { idx: [], t: [] }; }
      out[key].idx.push(i);
      out[key].t.push(stream.t[i]);
    }
    cache.set(stream, out);
    return out;
  }

  /* {key: {trail: [indices <= T], latest: index | null}} */
  function stateAt(stream, keys, cursor) {
    var g = groups(stream, keys), out = {};
    Object.keys(g).forEach(function (key) {
      var n = countAtOrBefore(g[key].t, cursor);
      out[key] = { trail: g[key].idx.slice(0, n), latest: n ? g[key].idx[n - 1] : null };
    });
    return out;
  }

  function ring(lat, lon, r, n) {
    var dlat = r / M_PER_DEG, dlon = dlat / Math.max(Math.cos(lat * Math.PI / 180), 1e-6);
    var lats = [], lons = [];
    for (var i = 0; i <= n; i++) {
      var a = 2 * Math.PI * i / n;
      lats.push(lat + dlat * Math.sin(a));
      lons.push(lon + dlon * Math.cos(a));
    }
    return [lats, lons];
  }

  function moveCursor(fig, cursor) {
    if (!fig || !fig.layout || !fig.layout.shapes) { return fig; }
    fig.layout.shapes.forEach(function (s) {
      if (s.name === "cursor") { s.x0 = plotTime(cursor); s.x1 = plotTime(cursor); }
    });
    return fig;
  }

  function mapAt(fig, gps, cursor) {
    if (!fig || !fig.data) { return fig; }
    var st = stateAt(gps, ["technician_id"], cursor);
    fig.data.forEach(function (tr) {
      var s = st[tr.name] || { trail: [], latest: null };
      var i = s.latest;
      if (tr.meta === "trail") {
        tr.lat = s.trail.map(function (j) { return gps.lat[j]; });
        tr.lon = s.trail.map(function (j) { return gps.lon[j]; });
      } else if (tr.meta === "position") {
        tr.lat = i === null ? [] : [gps.lat[i]];
        tr.lon = i === null ? [] : [gps.lon[i]];
      } else if (tr.meta === "accuracy") {
        var rl = i === null ? [[], []] : ring(gps.lat[i], gps.lon[i], gps.accuracy_m[i] || 0, 16);
        tr.lat = rl[0];
        tr.lon = rl[1];
      }
    });
    return fig;
  }

  function uwbAt(fig, uwb, cursor) {
    if (!fig || !fig.data) { return fig; }
    var st = stateAt(uwb, ["tag_id"], cursor);
    fig.data.forEach(function (tr) {
      var s = st[tr.name] || { trail: [], latest: null };
      if (tr.meta === "uwb-trail") {
        tr.x = s.trail.map(function (j) { return uwb.x_m[j]; });
        tr.y = s.trail.map(function (j) { return uwb.y_m[j]; });
      } else if (tr.meta === "uwb-pos") {
        tr.x = s.latest === null ? [] : [uwb.x_m[s.latest]];
        tr.y = s.latest === null ? [] : [uwb.y_m[s.latest]];
      }
    });
    return fig;
  }

  function age(ms) {
    var s = Math.round(ms / 1000);
    if (s < 120) { return s + " s"; }
    if (s < 7200) { return Math.round(s / 60) + " min"; }
    return (s / 3600).toFixed(1) + " h";
  }

  function span(text, cls, extra) {
    return { namespace: "dash_html_components", type: "Div",
             props: Object.assign({ children: text, className: cls }, extra || {}) };
  }

  function weatherAt(w, cursor, limitS) {
    var st = stateAt(w, ["variable"], cursor), keys = Object.keys(st).sort();
    if (!keys.length) { return [span("No weather observation at the nearest grid point.", "muted")]; }
    return keys.map(function (k) {
      var i = st[k].latest;
      if (i === null) { return span(k + ": no sample yet", "muted", { "data-variable": k }); }
      var old = cursor - w.t[i], stale = old > limitS * 1000;
      return span(k + ": " + w.value[i] + " " + (w.unit[i] || "") + " · " + age(old) + " before T" +
                  (stale ? " (stale)" : ""), stale ? "muted" : "", { "data-variable": k });
    });
  }

  function statusAt(samples, cursor) {
    return ["gps", "uwb", "weather", "iot"].map(function (name) {
      var stream = samples[name], st = stateAt(stream, samples.keys[name], cursor);
      var keys = Object.keys(st), limit = samples.max_staleness_s[name] * 1000;
      var latest = keys.map(function (k) { return st[k].latest; }).filter(function (i) { return i !== null; });
      var status = "no data in window";
      if (keys.length) {
        var stale = latest.filter(function (i) { return cursor - stream.t[i] > limit; }).length;
        status = !latest.length ? "no sample yet" : stale === 0 ? "ok"
          : stale === latest.length ? "stale" : "partly stale";
      }
      return { namespace: "dash_html_components", type: "Span",
               props: { children: name + ": " + status + "  ", "data-stream": name,
                        "data-status": status, style: { marginRight: "10px" } } };
    });
  }

  function eventStyles(events, cursor, ids) {
    var n = countAtOrBefore(events.t, cursor);
    return ids.map(function (_id, k) {
      var past = k < n;
      return { opacity: past ? 1 : 0.35, fontWeight: k === n - 1 ? 700 : 400,
               background: k === n - 1 ? "#e7f5ff" : "transparent" };
    });
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    replay: {
      render: function (value, samples, mapFig, timelineFig, iotFig, uwbFig, eventIds) {
        if (!samples || value === null || value === undefined) {
          return [noUpdate(), noUpdate(), noUpdate(), noUpdate(), noUpdate(), noUpdate(),
                  noUpdate(), noUpdate()];
        }
        var cursor = samples.start_ms + value * 1000;
        return [
          mapAt(clone(mapFig), samples.gps, cursor),
          moveCursor(clone(timelineFig), cursor),
          moveCursor(clone(iotFig), cursor),
          uwbAt(clone(uwbFig), samples.uwb, cursor),
          plotTime(cursor) + " UTC",
          weatherAt(samples.weather, cursor, samples.max_staleness_s.weather),
          statusAt(samples, cursor),
          eventStyles(samples.events, cursor, eventIds || []),
        ];
      },
      toggle: function (n, clock) {
        if (clock && clock.playing) { return [{ playing: false, wall: null }, true, "▶ Play"]; }
        return [{ playing: true, wall: Date.now() }, false, "⏸ Pause"];
      },
      tick: function (n, clock, speed, value, max) {
        if (!clock || !clock.playing) { return [noUpdate(), noUpdate(), true, "▶ Play"]; }
        var now = Date.now();
        var next = (value || 0) + (now - (clock.wall || now)) / 1000 * (speed || 1);
        if (next >= max) { return [max, { playing: false, wall: null }, true, "▶ Play"]; }
        return [Math.round(next * 1000) / 1000, { playing: true, wall: now }, false, "⏸ Pause"];
      },
      seek: function (clickData, windowMin, request, value, samples) {
        var ctx = window.dash_clientside.callback_context;
        var trig = ctx && ctx.triggered && ctx.triggered.length ? ctx.triggered[0].prop_id : "";
        request = request || {};
        if (trig.indexOf("replay-timeline") === 0) {
          var p = clickData && clickData.points && clickData.points[0];
          if (!p || !p.customdata) { return noUpdate(); }
          return { ticket: request.ticket, node: p.customdata[0], t: null,
                   window_min: request.window_min };
        }
        if (windowMin === request.window_min) { return noUpdate(); }
        var t = samples ? new Date(samples.start_ms + (value || 0) * 1000).toISOString() : request.t;
        return Object.assign({}, request, { window_min: windowMin, t: t });
      },
      url: function (value, clock, samples, request) {
        if (!samples || !request || !request.ticket || (clock && clock.playing)) { return noUpdate(); }
        var q = new URLSearchParams();
        q.set("ticket", request.ticket);
        if (request.node) { q.set("node", request.node); }
        q.set("t", new Date(samples.start_ms + value * 1000).toISOString());
        if (request.window_min && request.window_min !== 30) { q.set("w", request.window_min); }
        var search = "?" + q.toString();
        return search === window.location.search ? noUpdate() : search;
      },
    },
  });
})();
