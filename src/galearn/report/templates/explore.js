// galearn explore: galaxies like this one, the most unusual, labels from clicks. Plain JavaScript, offline.
(function () {
  "use strict";
  var M = window.galearnMap;
  if (!M) return;
  var D = M.D, E = D.explore || {k: 0, neighbours: null, unusual: [], proposals: []};
  var canvas = M.canvas;
  var idField = M.byName.id;
  function galaxyId(i) { return idField ? String(idField.categories[idField.values[i]]) : String(i); }
  var rowOfId = {};
  for (var i = 0; i < D.n; i++) rowOfId[galaxyId(i)] = i;

  // ------------------------------------------------------------------ stamps from the sprite sheet
  function stamp(i, size, onclick, caption) {
    var wrap = document.createElement("figure"); wrap.className = "stamp";
    var c = document.createElement("canvas"); c.width = size; c.height = size;
    c.setAttribute("data-index", String(i)); c.title = "id " + galaxyId(i);
    var img = document.getElementById(D.sprite.id), s = D.sprite.size;
    var paint = function () {
      var g = c.getContext("2d"), col = i % D.sprite.cols, r = Math.floor(i / D.sprite.cols);
      g.fillStyle = "#000"; g.fillRect(0, 0, size, size);
      g.drawImage(img, col * s, r * s, s, s, 0, 0, size, size);
    };
    if (img && img.complete) paint(); else if (img) img.addEventListener("load", paint);
    if (onclick) { c.style.cursor = "pointer"; c.addEventListener("click", function () { onclick(i); }); }
    wrap.appendChild(c);
    if (caption) { var fc = document.createElement("figcaption"); fc.textContent = caption; wrap.appendChild(fc); }
    return wrap;
  }

  // ------------------------------------------------------------------ galaxies like this one
  var query = null, neighbours = [];
  var nbStrip = document.getElementById("nb-strip"), nbCaption = document.getElementById("nb-caption");
  function neighboursOf(i) {
    if (!E.neighbours || !E.k) return [];
    return E.neighbours.slice(i * E.k, (i + 1) * E.k);
  }
  function selectGalaxy(i) {
    query = i; neighbours = neighboursOf(i);
    nbStrip.innerHTML = "";
    if (!E.neighbours) {
      nbCaption.textContent = "No feature file in the workspace: run `galearn features` for neighbours.";
    } else {
      nbCaption.textContent = "Galaxy " + galaxyId(i) + ": its " + neighbours.length +
        " nearest neighbours in feature space (nearest first; ringed orange on the map).";
      neighbours.forEach(function (j, k) { nbStrip.appendChild(stamp(j, 64, selectGalaxy, (k + 1) + ". " + galaxyId(j))); });
    }
    M.show(i);
  }

  // ------------------------------------------------------------------ strips
  function strip(boxId, stripId, rows) {
    var box = document.getElementById(boxId), el = document.getElementById(stripId);
    if (!box || !el) return;
    if (!rows || !rows.length) { box.hidden = true; return; }
    box.hidden = false;
    rows.forEach(function (j, k) { el.appendChild(stamp(j, 56, selectGalaxy, "#" + (k + 1))); });
  }
  strip("unusual-box", "unusual-strip", E.unusual);
  strip("proposals-box", "proposals-strip", E.proposals);

  // ------------------------------------------------------------------ labels
  var KEY = "galearn-labels:" + location.pathname + ":" + D.n_total;
  var COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf"];
  var state = {palette: ["interesting", "boring"], labels: {}, active: null};
  try {
    var saved = JSON.parse(window.localStorage.getItem(KEY) || "null");
    if (saved && saved.palette && saved.labels) { state.palette = saved.palette; state.labels = saved.labels; }
  } catch (e) { /* no storage (file:// in some browsers): labels live until the page is closed */ }
  function save() {
    try { window.localStorage.setItem(KEY, JSON.stringify({palette: state.palette, labels: state.labels})); } catch (e) {}
  }
  function colourOf(label) {
    var k = state.palette.indexOf(label);
    return COLOURS[(k < 0 ? state.palette.length : k) % COLOURS.length];
  }
  var palette = document.getElementById("palette");
  function counts() {
    var c = {};
    Object.keys(state.labels).forEach(function (id) { var l = state.labels[id]; c[l] = (c[l] || 0) + 1; });
    return c;
  }
  function renderPalette() {
    palette.innerHTML = "";
    var c = counts();
    var none = document.createElement("button");
    none.type = "button"; none.className = "chip" + (state.active === null ? " active" : "");
    none.textContent = "look only"; none.setAttribute("data-label", "");
    none.addEventListener("click", function () { state.active = null; renderPalette(); });
    palette.appendChild(none);
    state.palette.forEach(function (label) {
      var b = document.createElement("button");
      b.type = "button"; b.className = "chip" + (state.active === label ? " active" : "");
      b.setAttribute("data-label", label);
      var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = colourOf(label);
      b.appendChild(sw);
      b.appendChild(document.createTextNode(label + " (" + (c[label] || 0) + ")"));
      b.addEventListener("click", function () { state.active = label; renderPalette(); });
      var x = document.createElement("span"); x.className = "remove"; x.textContent = "\u00d7"; x.title = "remove this label";
      x.addEventListener("click", function (ev) {
        ev.stopPropagation();
        Object.keys(state.labels).forEach(function (id) { if (state.labels[id] === label) delete state.labels[id]; });
        state.palette = state.palette.filter(function (l) { return l !== label; });
        if (state.active === label) state.active = null;
        save(); renderPalette(); M.draw();
      });
      b.appendChild(x);
      palette.appendChild(b);
    });
    var total = Object.keys(state.labels).length;
    document.getElementById("label-count").textContent = total + " galaxies labelled";
  }
  document.getElementById("add-label").addEventListener("click", function () {
    var inp = document.getElementById("new-label"), v = inp.value.trim().replace(/[,\n\r"]/g, " ");
    if (v && state.palette.indexOf(v) < 0) state.palette.push(v);
    if (v) state.active = v;
    inp.value = ""; save(); renderPalette();
  });
  document.getElementById("new-label").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") document.getElementById("add-label").click();
  });
  function setLabel(rows, toggle) {
    if (state.active === null) return;
    rows.forEach(function (i) {
      var id = galaxyId(i);
      if (toggle && state.labels[id] === state.active) delete state.labels[id];
      else state.labels[id] = state.active;
    });
    save(); renderPalette(); M.draw();
  }
  function labelsCSV() {
    var lines = ["id,label"];
    Object.keys(state.labels).sort().forEach(function (id) { lines.push(id + "," + state.labels[id]); });
    return lines.join("\n") + "\n";
  }
  document.getElementById("export-labels").addEventListener("click", function () {
    var blob = new Blob([labelsCSV()], {type: "text/csv"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "labels.csv";
    document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  });
  document.getElementById("clear-labels").addEventListener("click", function () {
    if (!Object.keys(state.labels).length || window.confirm("Remove every label?")) {
      state.labels = {}; save(); renderPalette(); M.draw();
    }
  });

  // ------------------------------------------------------------------ mouse: click and lasso
  function mode() {
    var r = document.querySelector("input[name=label-mode]:checked");
    return r ? r.value : "click";
  }
  function local(ev) {
    var rect = canvas.getBoundingClientRect();
    return [(ev.clientX - rect.left) * M.W / rect.width, (ev.clientY - rect.top) * M.H / rect.height];
  }
  var lasso = null;
  canvas.addEventListener("mousedown", function (ev) {
    if (mode() === "lasso") { lasso = [local(ev)]; ev.preventDefault(); }
  });
  canvas.addEventListener("mousemove", function (ev) {
    if (lasso) { lasso.push(local(ev)); M.draw(); }
  });
  window.addEventListener("mouseup", function () {
    if (!lasso) return;
    var path = lasso; lasso = null;
    if (path.length < 3) { M.draw(); return; }
    var inside = [];
    for (var i = 0; i < D.n; i++) {
      if (D.x[i] === null) continue;
      var x = M.px(D.x[i]), y = M.py(D.y[i]), c = false;
      for (var a = 0, b = path.length - 1; a < path.length; b = a++) {  // even-odd rule
        if (((path[a][1] > y) !== (path[b][1] > y)) &&
            (x < (path[b][0] - path[a][0]) * (y - path[a][1]) / (path[b][1] - path[a][1]) + path[a][0])) c = !c;
      }
      if (c) inside.push(i);
    }
    setLabel(inside, false);
    document.getElementById("lasso-result").textContent =
      inside.length + " galaxies in the lasso" + (state.active === null ? " (choose a label to label them)" : " labelled " + state.active);
    M.draw();
  });
  canvas.addEventListener("click", function (ev) {
    var h = M.nearest(ev);
    if (!h || h.lib) return;
    if (mode() === "click") setLabel([h.i], true);
    selectGalaxy(h.i);
  });

  // ------------------------------------------------------------------ overlay on the map
  M.overlays.push(function (ctx, px, py, radius) {
    ctx.lineWidth = 1.5;
    Object.keys(state.labels).forEach(function (id) {
      var i = rowOfId[id];
      if (i === undefined || D.x[i] === null) return;
      ctx.strokeStyle = colourOf(state.labels[id]);
      ctx.beginPath(); ctx.arc(px(D.x[i]), py(D.y[i]), radius + 3, 0, 2 * Math.PI); ctx.stroke();
    });
    if (query !== null) {
      ctx.strokeStyle = "#ff8c00"; ctx.lineWidth = 2.5;
      neighbours.forEach(function (j) {
        ctx.beginPath(); ctx.arc(px(D.x[j]), py(D.y[j]), radius + 4, 0, 2 * Math.PI); ctx.stroke();
      });
    }
    if (lasso && lasso.length > 1) {
      ctx.strokeStyle = "#333"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(lasso[0][0], lasso[0][1]);
      for (var k = 1; k < lasso.length; k++) ctx.lineTo(lasso[k][0], lasso[k][1]);
      ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
    }
  });

  // For scripted checks: the current labels as the exported CSV, and the neighbours shown.
  window.galearnLabelsCSV = labelsCSV;
  window.galearnNeighbours = function () { return neighbours.slice(); };
  window.galearnSelect = selectGalaxy;
  renderPalette();
  M.draw();
})();
