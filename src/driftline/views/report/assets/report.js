/* Driftline report: draws the charts from the inlined data with Chart.js.
   Charts of collapsed features are drawn when they are first opened, so a report
   of 300 features opens as fast as one of 5. */
(function () {
  "use strict";
  var errors = [];
  function recordError(msg) {
    errors.push(String(msg));
    var el = document.getElementById("js-errors");
    if (el) { el.textContent = errors.join("\n"); el.hidden = false; }
  }
  window.addEventListener("error", function (e) { recordError(e.message || e); });
  window.addEventListener("unhandledrejection", function (e) { recordError(e.reason); });

  var D = JSON.parse(document.getElementById("driftline-data").textContent);
  var C = window.Chart;
  var COLORS = {
    ref: "rgba(120,120,120,0.55)", cur: "rgba(33,113,181,0.85)",
    worst: "rgba(230,85,13,0.75)", bad: "#d62728", line: "#2171b5",
    kinds: { input_drift: "#e6550d", output_drift: "#756bb1", data_quality: "#31a354",
             concept_drift: "#d62728", performance: "#843c39" },
    palette: ["#2171b5", "#e6550d", "#31a354", "#756bb1", "#d62728", "#8c6d31",
              "#17becf", "#7f7f7f"]
  };
  C.defaults.animation = false;
  C.defaults.maintainAspectRatio = false;
  C.defaults.font.size = 11;

  var span = D.t.length ? D.t[D.t.length - 1] - D.t[0] : 0;
  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "";
    // events without a time (a table with no timestamp column) are numbered by row
    if (D.untimed) return "row " + Math.round(ms).toLocaleString("en");
    var s = new Date(ms).toISOString();
    return span < 86400000 ? s.slice(11, 19) : s.slice(5, 16).replace("T", " ");
  }
  function timeScale(extra) {
    var o = { type: "linear", ticks: { callback: function (v) { return fmtTime(v); },
              maxRotation: 0, autoSkipPadding: 12 }, title: { display: true,
              text: D.untimed ? "row of the table (it has no timestamp column)" : "event time (UTC)" } };
    for (var k in extra) o[k] = extra[k];
    return o;
  }
  function xy(t, values) {
    var out = [];
    for (var i = 0; i < t.length; i++) out.push({ x: t[i], y: values[i] });
    return out;
  }
  function pct(v) { return (v * 100).toFixed(1) + "%"; }
  function make(canvas, config) {
    if (!canvas || canvas.dataset.drawn) return null;
    canvas.dataset.drawn = "1";
    if (config.type === "line") {
      config.data.datasets.forEach(function (ds) {
        if (!ds.backgroundColor) ds.backgroundColor = ds.borderColor;
      });
    }
    return new C(canvas, config);
  }
  function tooltipTime() {
    return { callbacks: { title: function (items) { return items.length ? fmtTime(items[0].parsed.x) : ""; } } };
  }

  function histChart(canvas, labels, series, caption) {
    var ds = [];
    series.forEach(function (s) {
      if (s.data) ds.push({ label: s.label, data: s.data, backgroundColor: s.color,
                            borderWidth: 0, barPercentage: 0.95, categoryPercentage: 0.85 });
    });
    return make(canvas, {
      type: "bar", data: { labels: labels, datasets: ds },
      options: { scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return pct(v); } },
                                title: { display: true, text: "share of events" } } },
                 plugins: { legend: { position: "bottom" },
                            tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + pct(c.parsed.y); } } },
                            title: { display: !!caption, text: caption } } }
    });
  }

  function radii(drift, n, on, off) {
    var out = [];
    for (var k = 0; k < n; k++) out.push(off);
    (drift || []).forEach(function (k) { if (k < n) out[k] = on; });
    return out;
  }

  function figure(parent, caption, kind, label) {
    var fig = document.createElement("figure");
    var cap = document.createElement("figcaption");
    cap.textContent = caption;
    var box = document.createElement("div");
    box.className = "chart";
    var canvas = document.createElement("canvas");
    canvas.dataset.chart = kind;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", label);
    box.appendChild(canvas);
    fig.appendChild(cap);
    fig.appendChild(box);
    parent.appendChild(fig);
  }

  function drawFeature(i) {
    var f = D.features[i];
    if (!f) return;
    var box = document.getElementById("feat-" + i);
    if (!box) return;
    var pair = box.querySelector(".pair.lazy");
    if (pair) {
      pair.classList.remove("lazy");
      figure(pair, pair.dataset.caption, "hist", "distribution of " + f.name);
      figure(pair, "PSI per window (dashed: threshold; red points: drifted)", "psi",
             "drift score of " + f.name + " over time");
    }
    var hc = box.querySelector('canvas[data-chart="hist"]');
    if (f.labels && f.labels.length && f.ref && f.ref.length) {
      var series = [{ label: "reference", data: f.ref, color: COLORS.ref },
                    { label: "latest window", data: f.cur, color: COLORS.cur }];
      if (f.worst && f.worst_at && f.worst_at !== D.last) {
        series.push({ label: "highest-PSI window", data: f.worst, color: COLORS.worst });
      }
      histChart(hc, f.labels, series);
    } else if (hc) {
      hc.parentNode.textContent = "No distribution stored for this feature.";
    }
    var pc = box.querySelector('canvas[data-chart="psi"]');
    var pts = xy(D.t, f.psi);
    make(pc, {
      type: "line",
      data: { datasets: [
        { label: "PSI", data: pts, borderColor: COLORS.line, borderWidth: 1.5, spanGaps: false,
          pointRadius: radii(f.drift, D.t.length, 3, 0),
          pointBackgroundColor: radii(f.drift, D.t.length, COLORS.bad, COLORS.line) },
        { label: "threshold", data: D.t.length ? [{ x: D.t[0], y: f.threshold }, { x: D.t[D.t.length - 1], y: f.threshold }] : [],
          borderColor: COLORS.bad, borderDash: [5, 4], borderWidth: 1, pointRadius: 0 }
      ] },
      options: { parsing: false, scales: { x: timeScale(), y: { beginAtZero: true, title: { display: true, text: "PSI" } } },
                 plugins: { legend: { display: false }, tooltip: tooltipTime() } }
    });
  }

  function drawSummary() {
    var top = D.features.slice(0, 20).filter(function (f) { return f.verdict !== "untested"; });
    make(document.getElementById("chart-ranking"), {
      type: "bar",
      data: { labels: top.map(function (f) { return f.name; }),
              datasets: [{ label: "peak PSI / threshold", data: top.map(function (f) { return f.ratio; }),
                           backgroundColor: top.map(function (f) { return f.ratio >= 1 ? COLORS.bad : COLORS.ref; }) }] },
      options: { indexAxis: "y", scales: { x: { beginAtZero: true, title: { display: true, text: "peak PSI / threshold" } },
                                           y: { ticks: { autoSkip: false } } },
                 plugins: { legend: { display: false } } }
    });
    var tot = D.top_over_time || [];
    make(document.getElementById("chart-top"), {
      type: "line",
      data: { datasets: tot.map(function (f, k) {
        return { label: f.name, data: xy(D.t, f.psi.map(function (v) { return v === null || !f.threshold ? null : v / f.threshold; })),
                 borderColor: COLORS.palette[k % COLORS.palette.length], borderWidth: 1.5,
                 pointRadius: 0, spanGaps: false };
      }) },
      options: { parsing: false, scales: { x: timeScale(), y: { beginAtZero: true, title: { display: true, text: "statistic / threshold" } } },
                 plugins: { legend: { position: "bottom" }, tooltip: tooltipTime() } }
    });
    var eps = D.episodes || [];
    var kinds = [];
    eps.forEach(function (e) { if (kinds.indexOf(e.kind) < 0) kinds.push(e.kind); });
    var epCanvas = document.getElementById("chart-episodes");
    if (!eps.length) {
      if (epCanvas) epCanvas.parentNode.textContent = "No alert episode in this period.";
      return;
    }
    var lo = D.t.length ? D.t[0] : eps[0].start, hi = D.t.length ? D.t[D.t.length - 1] : eps[eps.length - 1].end;
    eps.forEach(function (e) { lo = Math.min(lo, e.start); hi = Math.max(hi, e.end); });
    make(epCanvas, {
      type: "bar",
      data: { labels: kinds, datasets: [{
        label: "episodes",
        data: eps.map(function (e) { return { y: e.kind, x: [e.start, Math.max(e.end, e.start + 1)] }; }),
        backgroundColor: eps.map(function (e) { return COLORS.kinds[e.kind] || COLORS.line; }),
        borderSkipped: false, barPercentage: 0.6, minBarLength: 4 }] },
      options: { indexAxis: "y", scales: { x: timeScale({ min: lo, max: hi }) },
                 plugins: { legend: { display: false }, tooltip: { callbacks: {
                   label: function (c) { var e = eps[c.dataIndex];
                     return e.kind + " #" + e.episode + " " + e.severity + (e.feature ? " (" + e.feature + ")" : "") +
                       ": " + fmtTime(e.start) + " → " + (e.open ? "still firing" : fmtTime(e.end)); } } } } }
    });
  }

  function drawOutputs() {
    var o = D.outputs || {};
    if (o.classes) {
      histChart(document.querySelector('canvas[data-chart="classes"]'), o.classes.labels,
        [{ label: "reference", data: o.classes.ref, color: COLORS.ref },
         { label: "latest window", data: o.classes.cur, color: COLORS.cur },
         { label: "highest-PSI window", data: o.classes.worst_at !== D.last ? o.classes.worst : null, color: COLORS.worst }]);
    }
    if (o.confidence) {
      histChart(document.querySelector('canvas[data-chart="confidence"]'), o.confidence.labels,
        [{ label: "reference", data: o.confidence.ref, color: COLORS.ref },
         { label: "latest window", data: o.confidence.cur, color: COLORS.cur },
         { label: "highest-PSI window", data: o.confidence.worst_at !== D.last ? o.confidence.worst : null, color: COLORS.worst }]);
    }
    if (o.series && o.series.length) {
      make(document.querySelector('canvas[data-chart="outputs"]'), {
        type: "line",
        data: { datasets: o.series.map(function (s, k) {
          return { label: s.name, data: xy(D.t, s.values), borderColor: COLORS.palette[k % COLORS.palette.length],
                   borderWidth: 1.5, spanGaps: false,
                   pointRadius: radii(s.drift, D.t.length, 3, 0),
                   pointBackgroundColor: COLORS.bad };
        }) },
        options: { parsing: false, scales: { x: timeScale(), y: { title: { display: true, text: "score" } } },
                   plugins: { legend: { position: "bottom" }, tooltip: tooltipTime() } }
      });
    }
  }

  function drawPerf() {
    var p = D.perf;
    if (!p) return;
    var acc = [
      { label: "accuracy (labels)", data: xy(p.t, p.accuracy), borderColor: COLORS.line, spanGaps: false, pointRadius: 2 },
      { label: "estimated accuracy", data: xy(p.t, p.estimated_accuracy), borderColor: COLORS.worst,
        borderDash: [4, 3], spanGaps: false, pointRadius: 0 }
    ];
    if (p.reference_accuracy !== null && p.reference_accuracy !== undefined && p.t.length) {
      acc.push({ label: "reference accuracy", data: [{ x: p.t[0], y: p.reference_accuracy }, { x: p.t[p.t.length - 1], y: p.reference_accuracy }],
                 borderColor: COLORS.ref, borderDash: [2, 2], pointRadius: 0 });
    }
    if (p.regression) {
      var err = [{ label: "mean absolute error (labels)", data: xy(p.t, p.mae), borderColor: COLORS.line, spanGaps: false, pointRadius: 2 }];
      if (p.reference_mae !== null && p.reference_mae !== undefined && p.t.length) {
        err.push({ label: "reference MAE", data: [{ x: p.t[0], y: p.reference_mae }, { x: p.t[p.t.length - 1], y: p.reference_mae }],
                   borderColor: COLORS.ref, borderDash: [2, 2], pointRadius: 0 });
      }
      make(document.querySelector('canvas[data-chart="mae"]'), {
        type: "line", data: { datasets: err },
        options: { parsing: false, scales: { x: timeScale(), y: { beginAtZero: true, title: { display: true, text: "mean absolute error" } } },
                   plugins: { legend: { position: "bottom" }, tooltip: tooltipTime() } }
      });
    }
    make(document.querySelector('canvas[data-chart="accuracy"]'), {
      type: "line", data: { datasets: acc },
      options: { parsing: false, scales: { x: timeScale(), y: { min: 0, max: 1, title: { display: true, text: "accuracy" } } },
                 plugins: { legend: { position: "bottom" }, tooltip: tooltipTime() } }
    });
    make(document.querySelector('canvas[data-chart="coverage"]'), {
      type: "line",
      data: { datasets: [
        { label: "label coverage", data: xy(p.t, p.coverage), borderColor: COLORS.line, spanGaps: false, yAxisID: "y", pointRadius: 2 },
        { label: "label lag (s)", data: xy(p.t, p.lag_seconds), borderColor: COLORS.worst, spanGaps: false, yAxisID: "y2", pointRadius: 2 }
      ] },
      options: { parsing: false, scales: {
        x: timeScale(),
        y: { min: 0, max: 1, position: "left", title: { display: true, text: "coverage" },
             ticks: { callback: function (v) { return pct(v); } } },
        y2: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "lag (s)" } } },
        plugins: { legend: { position: "bottom" }, tooltip: tooltipTime() } }
    });
  }

  function setupFeatures() {
    var details = document.querySelectorAll("details.feature");
    details.forEach(function (el) {
      if (el.open && !el.hidden) drawFeature(+el.dataset.index);
      el.addEventListener("toggle", function () { if (el.open) drawFeature(+el.dataset.index); });
    });
    var rows = document.querySelectorAll("tr.frow");
    var search = document.getElementById("feature-search");
    var count = document.getElementById("search-count");
    var more = document.getElementById("show-all");
    var showAll = false;
    function apply() {
      var q = search ? search.value.trim().toLowerCase() : "";
      var shown = 0;
      rows.forEach(function (r) {
        var ok = q ? r.dataset.name.indexOf(q) >= 0 : (showAll || +r.dataset.rank < 25);
        r.hidden = !ok; if (ok) shown++;
      });
      details.forEach(function (el) {
        var ok = q ? el.dataset.name.indexOf(q) >= 0 : (showAll || +el.dataset.index < 25);
        el.hidden = !ok;
        if (ok && el.open) drawFeature(+el.dataset.index);
      });
      if (count) count.textContent = q ? shown + " of " + rows.length + " features match" : "";
    }
    if (search) search.addEventListener("input", apply);
    if (more) more.addEventListener("click", function () {
      showAll = !showAll;
      more.textContent = showAll ? "Show the top 25 only" : "Show all " + rows.length + " features";
      apply();
    });
    document.querySelectorAll('a[href^="#feat-"]').forEach(function (a) {
      a.addEventListener("click", function () {
        var el = document.getElementById(a.getAttribute("href").slice(1));
        if (el) { el.hidden = false; el.open = true; drawFeature(+el.dataset.index); }
      });
    });
  }

  try {
    drawSummary();
    setupFeatures();
    drawOutputs();
    drawPerf();
  } catch (e) {
    recordError(e && e.stack ? e.stack : e);
    throw e;
  }
  document.body.dataset.ready = "1";
  window.__driftlineReady = true;
})();
