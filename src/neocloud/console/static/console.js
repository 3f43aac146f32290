// neocloud console: the little script every page shares. No inline script anywhere (the CSP
// forbids it): page data comes in <script type="application/json"> blocks read here.
(function () {
  "use strict";
  var csrf = document.body ? document.body.getAttribute("data-csrf") : null;

  function data(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  // Times: the browser's zone in the text, UTC in the title (hover).
  function localTimes(root) {
    var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    (root || document).querySelectorAll("time.local").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = fmt.format(d);
    });
  }

  document.addEventListener("htmx:configRequest", function (e) {
    if (csrf) e.detail.headers["X-CSRF-Token"] = csrf;
  });
  document.addEventListener("htmx:afterSwap", function (e) { localTimes(e.target); });

  // ---------------------------------------------------------------------------- heatmap
  var COLORS = { free: "#2e9e5b", busy: "#2456d6", held: "#d49a00", setup: "#8a5cd6",
    broken: "#c62828", gone: "#9aa1a9", healthy: "#2e9e5b", warning: "#d49a00", failed: "#c62828" };

  function heatmap() {
    var canvas = document.getElementById("heatmap");
    var d = data("heatmap-data");
    if (!canvas || !d) return;
    var legend = document.getElementById("legend"), by = document.getElementById("heat-by");
    var healths = d.healths || [], ng = d.groups.length;
    var orgs = d.orgs || [], tenants = d.tenants || {};
    var ORG_COLORS = ["#2456d6", "#d49a00", "#8a5cd6", "#2e9e5b", "#c62828", "#00838f",
      "#6d4c41", "#ad1457", "#558b2f", "#3949ab"];
    function orgColor(i) { return ORG_COLORS[i % ORG_COLORS.length]; }
    function mode() { return by ? by.value : "state"; }
    function names() { return mode() === "health" ? healths : d.groups; }
    function showLegend() {
      legend.textContent = "";
      if (mode() === "tenant") {
        orgs.forEach(function (o, i) {
          var s = document.createElement("span"); s.style.setProperty("--c", orgColor(i));
          s.textContent = o; legend.appendChild(s);
        });
        var none = document.createElement("span"); none.className = "g-gone";
        none.textContent = "no tenant"; legend.appendChild(none);
        return;
      }
      names().forEach(function (g) {
        var s = document.createElement("span"); s.className = "g-" + g; s.textContent = g;
        legend.appendChild(s);
      });
    }
    showLegend();
    // One band per fabric (the path above the block), its blocks side by side in reading
    // order with a one-cell gap between blocks, wrapping at the canvas's width.
    var cell = 10, gap = 1, width = Math.max(600, Math.min(1500, canvas.parentElement.clientWidth));
    var perRow = Math.floor((width - 8) / (cell + gap));
    var boxes = [], x = 0, y = 18, lastGroup = null, lastBlock = null, labels = [];
    d.cells.forEach(function (raw) {
      var above = d.parents[raw[0]], c = { path: (above ? above.split("/") : []).concat([raw[1]]),
        model: d.models[raw[2]], n: raw.slice(3) };
      var cut = Math.max(1, c.path.length - 2);
      var group = c.path.slice(0, cut).join(" / "), block = c.path.slice(0, -1).join("/");
      if (group !== lastGroup) {
        if (lastGroup !== null) { y += cell + gap + 20; }
        x = 0; labels.push([group, y - 5]); lastGroup = group; lastBlock = block;
      } else if (block !== lastBlock) { x += 1; lastBlock = block; }
      if (x >= perRow) { x = 0; y += cell + gap; }
      boxes.push([4 + x * (cell + gap), y, c]); x += 1;
    });
    canvas.width = width; canvas.height = y + cell + 8;
    var ctx = canvas.getContext("2d");
    function counts(c) { return mode() === "health" ? c.n.slice(ng) : c.n.slice(0, ng); }
    function draw() {  // a cell's colour: the state group (or health) most of its nodes are in
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#5b6470";
      labels.forEach(function (l) { ctx.fillText(l[0], 4, l[1]); });
      var keys = names();
      boxes.forEach(function (b) {
        if (mode() === "tenant") {  // the org holding most of the cell's GPUs
          var t = tenants[b[2].path[b[2].path.length - 1]];
          ctx.fillStyle = t ? orgColor(t[0]) : COLORS.gone;
          ctx.fillRect(b[0], b[1], cell, cell);
          return;
        }
        var n = counts(b[2]), best = 0;
        for (var i = 1; i < n.length; i++) if (n[i] > n[best]) best = i;
        ctx.fillStyle = COLORS[keys[best]] || "#999";
        ctx.fillRect(b[0], b[1], cell, cell);
      });
    }
    draw();
    if (by) by.addEventListener("change", function () { showLegend(); draw(); });
    var hover = document.getElementById("heat-hover"), focused = 0;
    function describe(b) {
      var c = b[2], parts = [];
      if (mode() === "tenant") {
        var t = tenants[c.path[c.path.length - 1]];
        parts.push(t ? orgs[t[0]] + " holds " + t[1] + " of " + t[3] + " GPUs (" + t[2] +
          " held by all tenants)" : "no tenant");
        return c.path.join(" / ") + " (" + c.model + "): " + parts.join(", ");
      }
      var n = counts(c);
      names().forEach(function (g, i) { if (n[i]) parts.push(n[i] + " " + g); });
      return c.path.join(" / ") + " (" + c.model + "): " + parts.join(", ");
    }
    function at(ev) {
      var r = canvas.getBoundingClientRect(), sx = canvas.width / r.width;
      var px = (ev.clientX - r.left) * sx, py = (ev.clientY - r.top) * sx;
      for (var i = 0; i < boxes.length; i++) {
        var b = boxes[i];
        if (px >= b[0] && px < b[0] + cell && py >= b[1] && py < b[1] + cell) return i;
      }
      return -1;
    }
    function open(i) {  // a block opens its fabric's racks; a rack lists its nodes
      var c = boxes[i][2];
      if (d.drill && c.path.length >= 2) {
        window.location.href = "/operator/heatmap?open=" + encodeURIComponent(c.path[c.path.length - 2]);
        return;
      }
      window.location.href = "/operator/nodes?" + encodeURIComponent(d.leaf) + "=" +
        encodeURIComponent(c.path[c.path.length - 1]);
    }
    canvas.addEventListener("mousemove", function (ev) {
      var i = at(ev); if (i >= 0) hover.textContent = describe(boxes[i]);
    });
    canvas.addEventListener("click", function (ev) { var i = at(ev); if (i >= 0) open(i); });
    canvas.addEventListener("keydown", function (ev) {  // arrows walk the cells, Enter opens
      if (!boxes.length) return;
      if (ev.key === "ArrowRight" || ev.key === "ArrowDown") focused = Math.min(boxes.length - 1, focused + (ev.key === "ArrowDown" ? perRow : 1));
      else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") focused = Math.max(0, focused - (ev.key === "ArrowUp" ? perRow : 1));
      else if (ev.key === "Enter") { open(focused); return; }
      else return;
      ev.preventDefault(); hover.textContent = describe(boxes[focused]);
    });
  }

  // -------------------------------------------------------------------------- playground
  function playground() {
    var form = document.getElementById("chat");
    if (!form) return;
    var transcript = document.getElementById("transcript"), usage = document.getElementById("usage");
    var history = [];
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var prompt = form.prompt.value.trim(); if (!prompt) return;
      history.push({ role: "user", content: prompt }); form.prompt.value = "";
      var u = document.createElement("div"); u.className = "msg user"; u.textContent = "You: " + prompt;
      var a = document.createElement("div"); a.className = "msg assistant"; a.textContent = "";
      transcript.appendChild(u); transcript.appendChild(a);
      var send = document.getElementById("send"); send.disabled = true;
      usage.textContent = "Streaming…";
      try {
        var res = await fetch("/playground/stream", { method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify({ model: form.model.value, messages: history }) });
        if (!res.ok) {
          var err = await res.json().catch(function () { return {}; });
          throw new Error((err.error && err.error.message) || res.statusText);
        }
        var reader = res.body.getReader(), dec = new TextDecoder(), buf = "", text = "", event = "message";
        for (;;) {
          var step = await reader.read(); if (step.done) break;
          buf += dec.decode(step.value, { stream: true });
          var lines = buf.split("\n"); buf = lines.pop();
          lines.forEach(function (line) {
            if (line.indexOf("event: ") === 0) { event = line.slice(7).trim(); return; }
            if (line.indexOf("data: ") !== 0) { if (!line) event = "message"; return; }
            var payload = line.slice(6);
            if (payload === "[DONE]") return;
            var obj = JSON.parse(payload);
            if (event === "neocloud.cost") {
              usage.textContent = obj.prompt_tokens + " tokens in, " + obj.completion_tokens +
                " tokens out · cost " + obj.cost.amount + " " + obj.cost.currency;
              usage.setAttribute("data-done", "1");
              return;
            }
            (obj.choices || []).forEach(function (c) {
              if (c.delta && c.delta.content) { text += c.delta.content; a.textContent = "Model: " + text; }
            });
          });
        }
        history.push({ role: "assistant", content: text });
      } catch (e) {
        a.textContent = "Error: " + e.message; usage.textContent = "";
      } finally { send.disabled = false; }
    });
  }

  // ---------------------------------------------------------------------------- charts
  function economics() {
    var el = document.getElementById("econ-chart"), rows = data("econ-data");
    if (!el || !rows || !rows.length || typeof uPlot === "undefined") return;
    var keys = ["revenue", "ebitda", "net_income"].filter(function (k) { return k in rows[0]; });
    var covers = ["dscr", "ebit_interest_cover"].filter(function (k) { return k in rows[0]; });
    var x = rows.map(function (r) { return r.year; });
    var palette = ["#2456d6", "#2e9e5b", "#8a5cd6", "#d49a00", "#c62828"];
    var series = [{ label: "year" }], values = [x];
    keys.forEach(function (k, i) {
      series.push({ label: k, stroke: palette[i], scale: "money" });
      values.push(rows.map(function (r) { return Number(r[k]); }));
    });
    covers.forEach(function (k, i) {
      series.push({ label: k, stroke: palette[3 + i], dash: [4, 4], scale: "x1" });
      values.push(rows.map(function (r) { return r[k] === null ? null : Number(r[k]); }));
    });
    new uPlot({ width: Math.min(1000, el.clientWidth || 1000), height: 300, series: series,
      scales: { x: { time: false } },
      axes: [{ incrs: [1] },
        { scale: "money", size: 70, values: function (u, vs) {
          return vs.map(function (v) { return (v / 1e6).toFixed(1) + "M"; }); } },
        { scale: "x1", side: 1, size: 50, grid: { show: false } }] }, values, el);
  }

  function utilization() {  // the fleet overview's chart: one point per step, in percent
    var el = document.getElementById("use-chart"), rows = data("use-data");
    if (!el || !rows || !rows.length || typeof uPlot === "undefined") return;
    var x = rows.map(function (r) { return Date.parse(r.end) / 1000; });
    var pct = rows.map(function (r) { return r.utilization === null ? null : 100 * r.utilization; });
    var used = rows.map(function (r) { return r.gpu_hours; });
    new uPlot({ width: Math.min(1000, el.clientWidth || 1000), height: 240,
      series: [{ label: "time" },
        { label: "utilization %", stroke: "#2456d6", fill: "rgba(36,86,214,0.12)", scale: "%" },
        { label: "allocated GPU-h", stroke: "#2e9e5b", scale: "h" }],
      scales: { "%": { range: [0, 100] } },
      axes: [{}, { scale: "%", size: 50 }, { scale: "h", side: 1, size: 70, grid: { show: false } }] },
      [x, pct, used], el);
  }

  function tornado() {
    var el = document.getElementById("tornado"), t = data("tornado-data");
    if (!el || !t) return;
    var base = Number(t.base_npv), span = 0;
    t.bars.forEach(function (b) {
      span = Math.max(span, Math.abs(Number(b.npv_low) - base), Math.abs(Number(b.npv_high) - base));
    });
    t.bars.forEach(function (b) {
      var row = document.createElement("div"); row.className = "t-row";
      var label = document.createElement("span"); label.textContent = b.input + " (" + b.low + " / " + b.high + ")";
      var track = document.createElement("div"); track.className = "t-track";
      [["low", b.npv_low], ["high", b.npv_high]].forEach(function (p) {
        var d = Number(p[1]) - base, bar = document.createElement("div");
        bar.className = "t-bar " + p[0]; bar.title = p[0] + ": NPV " + p[1];
        var w = span ? Math.abs(d) / span * 50 : 0;
        bar.style.width = w + "%"; bar.style.left = (d < 0 ? 50 - w : 50) + "%";
        track.appendChild(bar);
      });
      row.appendChild(label); row.appendChild(track); el.appendChild(row);
    });
  }

  function gantt() {
    var el = document.getElementById("gantt"), rows = data("gantt-data");
    if (!el || !rows || !rows.length) return;
    var lo = Infinity, hi = -Infinity;
    rows.forEach(function (r) { r.bars.forEach(function (b) {
      lo = Math.min(lo, Date.parse(b.start)); hi = Math.max(hi, Date.parse(b.end)); }); });
    var span = Math.max(1, hi - lo);
    rows.forEach(function (r) {
      var row = document.createElement("div"); row.className = "g-row";
      var label = document.createElement("span"); label.className = "g-label"; label.textContent = r.block;
      row.appendChild(label);
      r.bars.forEach(function (b) {
        var bar = document.createElement("div"); bar.className = "g-bar " + b.state;
        var left = (Date.parse(b.start) - lo) / span, width = (Date.parse(b.end) - Date.parse(b.start)) / span;
        bar.style.left = (210 + left * (el.clientWidth - 220)) + "px";
        bar.style.width = Math.max(2, width * (el.clientWidth - 220)) + "px";
        bar.title = b.org + ": " + new Date(b.start).toLocaleString() + " – " + new Date(b.end).toLocaleString() +
          " (" + b.nodes + " nodes, " + b.state + ")";
        row.appendChild(bar);
      });
      el.appendChild(row);
    });
  }

  function shares() {
    document.querySelectorAll(".bar[data-share]").forEach(function (b) {
      b.style.width = Math.round(Number(b.getAttribute("data-share")) * 120) + "px";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document); heatmap(); playground(); economics(); utilization(); tornado(); gantt(); shares();
  });
})();
