// galearn interactive map: plain JavaScript, no dependencies, no network.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("galearn-data").textContent);
  var canvas = document.getElementById("map-canvas");
  var ctx = canvas.getContext("2d");
  var select = document.getElementById("colour-by");
  var libBox = document.getElementById("show-library");
  var legend = document.getElementById("legend");
  var stampCanvas = document.getElementById("hover-stamp");
  var stampCtx = stampCanvas.getContext("2d");
  var table = document.getElementById("hover-table").tBodies[0];
  var W = 760, H = 760, PAD = 14;
  var dpr = window.devicePixelRatio || 1;
  canvas.width = W * dpr; canvas.height = H * dpr;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);

  var fields = D.fields, byName = {};
  fields.forEach(function (f) { byName[f.name] = f; });
  var colourFields = fields.filter(function (f) { return f.colour; });
  colourFields.forEach(function (f) {
    var o = document.createElement("option");
    o.value = f.name; o.textContent = f.label; select.appendChild(o);
  });
  if (byName.uvj_class && byName.uvj_class.colour) select.value = "uvj_class";

  // Square extent around the real galaxies (the map's own units), so distances are not distorted.
  var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity, i;
  for (i = 0; i < D.n; i++) {
    if (D.x[i] === null || D.y[i] === null) continue;
    xmin = Math.min(xmin, D.x[i]); xmax = Math.max(xmax, D.x[i]);
    ymin = Math.min(ymin, D.y[i]); ymax = Math.max(ymax, D.y[i]);
  }
  var side = Math.max(xmax - xmin, ymax - ymin) || 1;
  var cx = (xmin + xmax) / 2, cy = (ymin + ymax) / 2;
  var scale = (Math.min(W, H) - 2 * PAD) / side;
  function px(x) { return W / 2 + (x - cx) * scale; }
  function py(y) { return H / 2 - (y - cy) * scale; }

  var radius = Math.max(1.2, Math.min(4, 700 / Math.sqrt(Math.max(D.n, 1)) / 4));
  var hovered = null;  // {lib: bool, i: index}
  var overlays = [];  // functions drawn after the points (explore.js)

  function viridis(t) {
    var n = D.viridis.length;
    var k = Math.max(0, Math.min(n - 1, Math.round(t * (n - 1))));
    return D.viridis[k];
  }
  function pointColour(f, i) {
    if (!f) return "#1f77b4";
    var v = f.values[i];
    if (f.kind === "cat") return f.colours[v];
    if (v === null) return "#b0b0b0";
    return viridis((v - f.range[0]) / (f.range[1] - f.range[0]));
  }
  function fmt(f, i) {
    var v = f.values[i];
    if (f.kind === "cat") { var s = f.categories[v]; return s === "" ? "\u2013" : s; }
    if (v === null) return "\u2013";
    return String(v);
  }

  function draw() {
    ctx.clearRect(0, 0, W, H);
    var f = byName[select.value];
    // Missing values first, so classified galaxies are drawn on top.
    var order = [], last = [];
    for (var i = 0; i < D.n; i++) {
      var miss = f && ((f.kind === "cat" && f.categories[f.values[i]] === "") || (f.kind === "num" && f.values[i] === null));
      (miss ? order : last).push(i);
    }
    order = order.concat(last);
    for (var k = 0; k < order.length; k++) {
      var j = order[k];
      if (D.x[j] === null) continue;
      ctx.fillStyle = pointColour(f, j);
      ctx.beginPath(); ctx.arc(px(D.x[j]), py(D.y[j]), radius, 0, 2 * Math.PI); ctx.fill();
    }
    var L = D.library;
    if (L && libBox && libBox.checked) {
      ctx.lineWidth = 1;
      for (var m = 0; m < L.n; m++) {
        var X = px(L.x[m]), Y = py(L.y[m]), r = radius + 2;
        ctx.fillStyle = L.colours[L.values[m]];
        ctx.strokeStyle = "#000";
        ctx.beginPath(); ctx.moveTo(X, Y - r); ctx.lineTo(X + r, Y + r); ctx.lineTo(X - r, Y + r); ctx.closePath();
        ctx.fill(); ctx.stroke();
      }
    }
    if (hovered) {
      var hx = hovered.lib ? L.x[hovered.i] : D.x[hovered.i];
      var hy = hovered.lib ? L.y[hovered.i] : D.y[hovered.i];
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px(hx), py(hy), radius + 5, 0, 2 * Math.PI); ctx.stroke();
    }
    overlays.forEach(function (fn) { fn(ctx, px, py, radius); });  // explore.js: neighbours, labels, lasso
    drawLegend(f);
    document.getElementById("map-count").textContent =
      D.n + (D.n < D.n_total ? " of " + D.n_total : "") + " galaxies" +
      (L && libBox && libBox.checked ? " + " + L.n + " generated (triangles)" : "");
  }

  function drawLegend(f) {
    legend.innerHTML = "";
    if (!f) return;
    if (f.kind === "cat") {
      var counts = f.categories.map(function () { return 0; });
      f.values.forEach(function (v) { counts[v]++; });
      f.categories.forEach(function (c, k) {
        if (!counts[k]) return;
        var s = document.createElement("span");
        var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = f.colours[k];
        s.appendChild(sw); s.appendChild(document.createTextNode((c === "" ? "no class" : c) + " (" + counts[k] + ")"));
        legend.appendChild(s);
      });
    } else {
      var bar = document.createElement("canvas"); bar.className = "bar"; bar.width = 220; bar.height = 12;
      var b = bar.getContext("2d");
      for (var x = 0; x < 220; x++) { b.fillStyle = viridis(x / 219); b.fillRect(x, 0, 1, 12); }
      legend.appendChild(document.createTextNode(f.label + ": " + f.range[0].toPrecision(3)));
      legend.appendChild(bar);
      legend.appendChild(document.createTextNode(f.range[1].toPrecision(3) + " (1st-99th percentile; grey: missing)"));
    }
  }

  function row(k, v) {
    var tr = document.createElement("tr");
    var th = document.createElement("th"); th.textContent = k;
    var td = document.createElement("td"); td.textContent = v;
    tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
  }

  function showStamp(sprite, idx) {
    var img = document.getElementById(sprite.id);
    var s = sprite.size, col = idx % sprite.cols, r = Math.floor(idx / sprite.cols);
    stampCtx.imageSmoothingEnabled = true;
    stampCtx.fillStyle = "#000"; stampCtx.fillRect(0, 0, stampCanvas.width, stampCanvas.height);
    if (img && img.complete) stampCtx.drawImage(img, col * s, r * s, s, s, 0, 0, stampCanvas.width, stampCanvas.height);
  }

  function showHover() {
    table.innerHTML = "";
    if (!hovered) return;
    if (hovered.lib) {
      var L = D.library, m = hovered.i;
      showStamp(L.sprite, m);
      row("generated", "GAN library");
      row("id", L.ids[m]);
      row(L.condition || "class", L.categories[L.values[m]]);
      return;
    }
    var i = hovered.i;
    showStamp(D.sprite, i);
    fields.forEach(function (f) { row(f.label, fmt(f, i)); });
    row("map position", D.x[i] + ", " + D.y[i]);
  }

  function nearest(ev) {
    var rect = canvas.getBoundingClientRect();
    var mx = (ev.clientX - rect.left) * W / rect.width, my = (ev.clientY - rect.top) * H / rect.height;
    var best = null, bd = 100;  // within 10 CSS pixels
    for (var i = 0; i < D.n; i++) {
      if (D.x[i] === null) continue;
      var dx = px(D.x[i]) - mx, dy = py(D.y[i]) - my, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = {lib: false, i: i}; }
    }
    var L = D.library;
    if (L && libBox && libBox.checked) {
      for (var m = 0; m < L.n; m++) {
        var ex = px(L.x[m]) - mx, ey = py(L.y[m]) - my, e = ex * ex + ey * ey;
        if (e < bd) { bd = e; best = {lib: true, i: m}; }
      }
    }
    return best;
  }

  canvas.addEventListener("mousemove", function (ev) {
    var h = nearest(ev);
    if ((h && hovered && h.lib === hovered.lib && h.i === hovered.i) || (!h && !hovered)) return;
    if (!h) return;  // keep the last galaxy shown
    hovered = h; showHover(); draw();
  });
  select.addEventListener("change", draw);
  if (libBox) libBox.addEventListener("change", draw);
  // For scripted checks (headless browsers): window.galearnHover(i) shows galaxy i.
  window.galearnHover = function (i, lib) { hovered = {lib: !!lib, i: i}; showHover(); draw(); };
  window.galearnToScreen = function (i, lib) {  // client (CSS pixel) position of a point
    var rect = canvas.getBoundingClientRect(), P = lib ? D.library : D;
    return [rect.left + px(P.x[i]) * rect.width / W, rect.top + py(P.y[i]) * rect.height / H];
  };
  window.galearnData = D;
  // For explore.js: the map's drawing, hit-testing and coordinate transforms.
  window.galearnMap = {canvas: canvas, D: D, draw: draw, nearest: nearest, px: px, py: py, W: W, H: H,
                       overlays: overlays, fmt: fmt, byName: byName, select: select,
                       show: function (i) { hovered = {lib: false, i: i}; showHover(); draw(); }};
  draw();
})();
