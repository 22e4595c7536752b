// The chart of a published qkbench cell page: one SVG, no library, no network (works from
// file://). It reads the page's data from <script id="qk-data" type="application/json"> and
// draws every machine's runs (median and interval), the level between steps and the steps,
// with hover for a run's figures, click to open its commit (when the site has a commit URL
// template), drag to zoom on the x axis, double-click to zoom out, and switches between raw
// and normalised values and between time and run order on the x axis.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                 "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  var MARGIN = {left: 78, right: 18, top: 26, bottom: 44};

  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function seconds(value) {
    var units = [[1, "s"], [1e-3, "ms"], [1e-6, "µs"], [1e-9, "ns"]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(value) >= units[i][0] || i === units.length - 1) {
        return (value / units[i][0]).toPrecision(4) + " " + units[i][1];
      }
    }
  }

  function Chart(root, data) {
    this.root = root;
    this.data = data;
    this.view = data.normalize_by ? "norm" : "raw";
    this.xmode = "time";
    this.zoom = null;
    this.hidden = {};
    // Run order: every run of every machine, by time, numbered once (ties keep machine order).
    var all = [];
    data.series.forEach(function (s, si) {
      s.points.forEach(function (p, pi) { all.push([p.t, si, pi]); });
    });
    all.sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]; });
    this.order = {};
    for (var k = 0; k < all.length; k++) { this.order[all[k][1] + ":" + all[k][2]] = k + 1; }
    this.tooltip = document.createElement("div");
    this.tooltip.className = "qk-tooltip";
    this.tooltip.style.display = "none";
    document.body.appendChild(this.tooltip);
  }

  Chart.prototype.value = function (p) {
    return this.view === "norm" ? [p.vn, p.lon, p.hin] : [p.v, p.lo, p.hi];
  };

  Chart.prototype.x = function (si, pi) {
    var p = this.data.series[si].points[pi];
    return this.xmode === "time" ? Date.parse(p.t) : this.order[si + ":" + pi];
  };

  Chart.prototype.format = function (value) {
    return this.view === "norm" ? value.toPrecision(4) + "× " + this.data.normalize_by
                                : seconds(value);
  };

  Chart.prototype.draw = function () {
    var self = this, data = this.data;
    this.root.textContent = "";
    var width = Math.max(this.root.clientWidth || 0, 480), height = 420;
    var svg = el("svg", {width: width, height: height, "class": "qk-svg",
                         viewBox: "0 0 " + width + " " + height}, this.root);
    this.svg = svg;
    var pts = [];
    data.series.forEach(function (s, si) {
      if (self.hidden[si]) { return; }
      s.points.forEach(function (p, pi) {
        var v = self.value(p);
        if (v[0] === null || v[0] === undefined || !isFinite(v[0])) { return; }
        pts.push({si: si, pi: pi, x: self.x(si, pi), v: v[0],
                  lo: v[1] === null || v[1] === undefined ? v[0] : v[1],
                  hi: v[2] === null || v[2] === undefined ? v[0] : v[2]});
      });
    });
    if (!pts.length) {
      el("text", {x: 20, y: 40, "class": "qk-empty"}, svg, "no ok run to show");
      return;
    }
    var x0 = Math.min.apply(null, pts.map(function (p) { return p.x; }));
    var x1 = Math.max.apply(null, pts.map(function (p) { return p.x; }));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var edge = (x1 - x0) * 0.02;  // the first and last runs sit inside the frame
    x0 -= edge; x1 += edge;
    if (this.zoom) { x0 = this.zoom[0]; x1 = this.zoom[1]; }
    var shown = pts.filter(function (p) { return p.x >= x0 && p.x <= x1; });
    if (!shown.length) { shown = pts; }
    var y0 = Math.min.apply(null, shown.map(function (p) { return p.lo; }));
    var y1 = Math.max.apply(null, shown.map(function (p) { return p.hi; }));
    var pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.05 || 1;
    y0 = Math.max(0, y0 - pad); y1 += pad;
    var plotW = width - MARGIN.left - MARGIN.right, plotH = height - MARGIN.top - MARGIN.bottom;
    var sx = function (x) { return MARGIN.left + (x - x0) / (x1 - x0) * plotW; };
    var sy = function (y) { return MARGIN.top + (1 - (y - y0) / (y1 - y0)) * plotH; };
    this.sx = sx; this.x0 = x0; this.x1 = x1; this.plotW = plotW;

    var axes = el("g", {"class": "qk-axes"}, svg);
    el("rect", {x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH,
                "class": "qk-frame"}, axes);
    for (var t = 0; t <= 5; t++) {
      var yv = y0 + (y1 - y0) * t / 5;
      el("line", {x1: MARGIN.left, x2: MARGIN.left + plotW, y1: sy(yv), y2: sy(yv),
                  "class": "qk-grid"}, axes);
      el("text", {x: MARGIN.left - 6, y: sy(yv) + 4, "text-anchor": "end"}, axes,
         this.view === "norm" ? yv.toPrecision(3) + "×" : seconds(yv));
    }
    for (var u = 0; u <= 5; u++) {
      var xv = x0 + (x1 - x0) * u / 5;
      var label = this.xmode === "time" ? new Date(xv).toISOString().slice(0, 10)
                                        : "#" + Math.round(xv);
      el("text", {x: sx(xv), y: MARGIN.top + plotH + 18,
                  "text-anchor": u === 0 ? "start" : u === 5 ? "end" : "middle"}, axes, label);
    }
    el("text", {x: 14, y: MARGIN.top + plotH / 2, "text-anchor": "middle",
                transform: "rotate(-90 14 " + (MARGIN.top + plotH / 2) + ")",
                "class": "qk-axis-title"}, axes,
       this.view === "norm" ? "time ÷ " + data.normalize_by + "'s in the same run"
                            : "median time");
    el("text", {x: MARGIN.left + plotW / 2, y: height - 6, "text-anchor": "middle",
                "class": "qk-axis-title"}, axes,
       this.xmode === "time" ? "date of the run" : "run (in time order)");

    var clip = "qk-clip-" + Math.random().toString(36).slice(2);
    var defs = el("defs", {}, svg);
    el("rect", {x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH},
       el("clipPath", {id: clip}, defs));
    var plot = el("g", {"clip-path": "url(#" + clip + ")"}, svg);
    data.series.forEach(function (s, si) {
      if (self.hidden[si]) { return; }
      var colour = COLOURS[si % COLOURS.length];
      var mine = pts.filter(function (p) { return p.si === si; });
      el("polyline", {points: mine.map(function (p) { return sx(p.x) + "," + sy(p.v); }).join(" "),
                      "class": "qk-line", stroke: colour}, plot);
      var steps = (s.steps[self.view] || []).slice().sort(function (a, b) { return a.i - b.i; });
      // The level of each segment between steps (its median), as asv draws it.
      var bounds = [0].concat(steps.map(function (st) { return st.i; }), [s.points.length]);
      for (var b = 0; b + 1 < bounds.length; b++) {
        var level = b === 0 ? (steps.length ? steps[0].before : null) : steps[b - 1].after;
        if (level === null) { continue; }
        var seg = mine.filter(function (p) { return p.pi >= bounds[b] && p.pi < bounds[b + 1]; });
        if (!seg.length) { continue; }
        el("line", {x1: sx(seg[0].x), x2: sx(seg[seg.length - 1].x), y1: sy(level),
                    y2: sy(level), "class": "qk-level", stroke: colour}, plot);
      }
      mine.forEach(function (p) {
        el("line", {x1: sx(p.x), x2: sx(p.x), y1: sy(p.lo), y2: sy(p.hi),
                    "class": "qk-interval", stroke: colour}, plot);
        el("circle", {cx: sx(p.x), cy: sy(p.v), r: 3.2, fill: colour, "class": "qk-point",
                      "data-series": si, "data-point": p.pi}, plot);
      });
      steps.forEach(function (st) {
        if (self.hidden[si] || !s.points[st.i]) { return; }
        var xs = sx(self.x(si, st.i));
        var up = st.change > 0;
        var g = el("g", {"class": "qk-step " + (up ? "qk-slower" : "qk-faster"),
                         "data-commit": st.commit}, plot);
        el("line", {x1: xs, x2: xs, y1: MARGIN.top, y2: MARGIN.top + plotH, stroke: colour,
                    "class": "qk-step-line"}, g);
        var tip = up ? "M" + (xs - 6) + "," + (MARGIN.top + 12) + " L" + (xs + 6) + "," +
                  (MARGIN.top + 12) + " L" + xs + "," + (MARGIN.top + 2) + " Z"
                     : "M" + (xs - 6) + "," + (MARGIN.top + 2) + " L" + (xs + 6) + "," +
                  (MARGIN.top + 2) + " L" + xs + "," + (MARGIN.top + 12) + " Z";
        el("path", {d: tip, fill: colour, "class": "qk-step-marker"}, g);
        el("title", {}, g, (up ? "slower " : "faster ") + (st.change * 100).toFixed(1) +
           "% from commit " + st.commit + " (" + st.t + "): " + self.format(st.before) +
           " → " + self.format(st.after));
      });
    });
    this.points = pts;
    this.listen(svg, plotH);
  };

  Chart.prototype.nearest = function (event) {
    var box = this.svg.getBoundingClientRect(), best = null, bestD = 900;
    var mx = event.clientX - box.left, my = event.clientY - box.top;
    var circles = this.svg.querySelectorAll("circle.qk-point");
    for (var i = 0; i < circles.length; i++) {
      var dx = +circles[i].getAttribute("cx") - mx, dy = +circles[i].getAttribute("cy") - my;
      if (dx * dx + dy * dy < bestD) { bestD = dx * dx + dy * dy; best = circles[i]; }
    }
    return best;
  };

  Chart.prototype.commitUrl = function (commit) {
    var template = this.data.commit_url;
    if (!template || !commit) { return null; }
    return template.split("{commit}").join(commit.replace(/-dirty$/, ""));
  };

  Chart.prototype.listen = function (svg, plotH) {
    var self = this, start = null, band = null;
    svg.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect();
      if (start !== null && band) {
        var now = event.clientX - box.left;
        band.setAttribute("x", Math.min(start, now));
        band.setAttribute("width", Math.abs(now - start));
      }
      var hit = self.nearest(event);
      if (!hit) { self.tooltip.style.display = "none"; return; }
      var si = +hit.getAttribute("data-series"), pi = +hit.getAttribute("data-point");
      var s = self.data.series[si], p = s.points[pi], v = self.value(p);
      self.tooltip.innerHTML = "";
      [["machine", s.machine], ["value", self.format(v[0])],
       ["interval", v[1] != null && v[2] != null ? self.format(v[1]) + " – " + self.format(v[2])
                                                 : "—"],
       ["commit", p.commit], ["date", p.t], ["run", p.run]].forEach(function (row) {
        var line = document.createElement("div");
        var key = document.createElement("b");
        key.textContent = row[0] + " ";
        line.appendChild(key);
        line.appendChild(document.createTextNode(row[1]));
        self.tooltip.appendChild(line);
      });
      self.tooltip.style.display = "block";
      self.tooltip.style.left = (event.pageX + 14) + "px";
      self.tooltip.style.top = (event.pageY + 10) + "px";
    });
    svg.addEventListener("mouseleave", function () { self.tooltip.style.display = "none"; });
    svg.addEventListener("mousedown", function (event) {
      start = event.clientX - svg.getBoundingClientRect().left;
      band = el("rect", {x: start, y: MARGIN.top, width: 0, height: plotH, "class": "qk-band"},
                svg);
    });
    svg.addEventListener("mouseup", function (event) {
      var end = event.clientX - svg.getBoundingClientRect().left;
      if (start !== null && Math.abs(end - start) > 6) {
        var inv = function (px) { return self.x0 + (px - MARGIN.left) / self.plotW *
                                         (self.x1 - self.x0); };
        self.zoom = [inv(Math.min(start, end)), inv(Math.max(start, end))];
        start = null;
        self.draw();
        return;
      }
      start = null;
      if (band) { band.remove(); band = null; }
      var hit = self.nearest(event);
      if (hit) {
        var p = self.data.series[+hit.getAttribute("data-series")]
          .points[+hit.getAttribute("data-point")];
        var url = self.commitUrl(p.commit);
        if (url) { window.open(url, "_blank"); }
      }
    });
    svg.addEventListener("dblclick", function () { self.zoom = null; self.draw(); });
  };

  function button(parent, text, pressed, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-pressed", pressed ? "true" : "false");
    b.addEventListener("click", onClick);
    parent.appendChild(b);
    return b;
  }

  function controls(chart, box) {
    box.textContent = "";
    if (chart.data.normalize_by) {
      button(box, "normalised (÷ " + chart.data.normalize_by + ")", chart.view === "norm",
             function () { chart.view = "norm"; chart.draw(); controls(chart, box); });
      button(box, "raw time", chart.view === "raw",
             function () { chart.view = "raw"; chart.draw(); controls(chart, box); });
      box.appendChild(document.createTextNode(" · "));
    }
    button(box, "by date", chart.xmode === "time",
           function () { chart.xmode = "time"; chart.zoom = null; chart.draw();
                         controls(chart, box); });
    button(box, "by run", chart.xmode === "run",
           function () { chart.xmode = "run"; chart.zoom = null; chart.draw();
                         controls(chart, box); });
    box.appendChild(document.createTextNode(" · "));
    button(box, "zoom out", false, function () { chart.zoom = null; chart.draw(); });
    var legend = document.createElement("div");
    legend.className = "qk-legend";
    chart.data.series.forEach(function (s, si) {
      var item = button(legend, "● " + s.label, !chart.hidden[si], function () {
        chart.hidden[si] = !chart.hidden[si]; chart.draw(); controls(chart, box);
      });
      item.style.color = COLOURS[si % COLOURS.length];
      item.title = s.machine + " (click to hide or show)";
    });
    box.appendChild(legend);
  }

  function start() {
    var source = document.getElementById("qk-data"), root = document.getElementById("qk-chart");
    if (!source || !root) { return; }
    var chart = new Chart(root, JSON.parse(source.textContent));
    chart.draw();
    controls(chart, document.getElementById("qk-controls"));
    window.addEventListener("resize", function () { chart.draw(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
