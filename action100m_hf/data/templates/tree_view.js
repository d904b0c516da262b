// The Tree-of-Captions page of `action100m view`: reads the tree JSON of #tree-data and draws
// one row per level; selection, keyboard, zoom and the player live here. Plain DOM, no network.
(function () {
  "use strict";
  const startedAt = performance.now();
  const data = JSON.parse(document.getElementById("tree-data").textContent);
  const nodes = data.nodes;
  const root = nodes[data.root];
  const t0 = root.start;
  const span = Math.max(root.end - root.start, 1e-6);
  const $ = (id) => document.getElementById(id);
  const markLabel = Object.fromEntries(data.marks.map((m) => [m.name, m.label]));
  const blocks = new Array(nodes.length);
  const levels = [];
  const indexById = new Map();
  const levelPos = new Int32Array(nodes.length);
  const lastChild = new Map(); // parent -> the child on the path to the latest selection
  let selected = -1;
  let zoom = 1;
  let playing = new Set();
  let player = null;

  nodes.forEach((n, i) => {
    (levels[n.level] || (levels[n.level] = [])).push(i);
    indexById.set(n.id, i);
  });
  for (let l = 0; l < levels.length; l++) levels[l] = levels[l] || [];
  levels.forEach((ids) => {
    ids.sort((a, b) => nodes[a].start - nodes[b].start || nodes[a].end - nodes[b].end);
    ids.forEach((i, k) => { levelPos[i] = k; });
  });

  // --- formatting -------------------------------------------------------------------------
  const pct = (seconds) => (100 * seconds / span).toFixed(5) + "%";
  function clock(t, decimals) {
    const d = decimals === undefined ? 2 : decimals;
    const s = Math.max(0, t);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = (s - 3600 * h - 60 * m).toFixed(d);
    const sec = (rest.length < (d ? d + 3 : 2) ? "0" : "") + rest;
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + sec;
  }
  const seconds = (n) => (n.end - n.start).toFixed(2) + " s";
  const timesOf = (n) => clock(n.start) + " \u2013 " + clock(n.end) + "  (" + seconds(n) + ")";
  const labelOf = (n) => (n.gpt && n.gpt.action && n.gpt.action.brief) || n.plm_action || "";
  const pick = (obj, path) => path.reduce((o, k) => (o == null ? o : o[k]), obj);

  function el(tag, props, children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "text") e.textContent = v;
        else if (k === "dataset") Object.assign(e.dataset, v);
        else if (k === "className") e.className = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children || []) if (c != null) e.append(c);
    return e;
  }
  const swatch = (mark) => el("span", { className: "swatch m-" + mark });

  // --- header -------------------------------------------------------------------------------
  function drawHeader() {
    $("title").textContent = data.title || data.video_uid;
    const meta = $("meta");
    meta.append(el("span", {}, ["video_uid ", el("code", { text: data.video_uid })]));
    meta.append(el("span", { text: "tree " + clock(root.start) + " \u2013 " + clock(root.end) }));
    if (data.metadata_duration != null) {
      const off = Math.abs(data.metadata_duration - (root.end - root.start));
      meta.append(el("span", {
        className: off > 1 ? "warn" : "",
        text: "metadata.duration " + data.metadata_duration + " s" +
          (off > 1 ? " (differs from the tree by " + off.toFixed(2) + " s; node times are the reference)" : ""),
      }));
    }
    const date = data.upload_date;
    if (date) meta.append(el("span", { text: "uploaded " + (/^\d{8}$/.test(date) ? date.slice(0, 4) + "-" + date.slice(4, 6) + "-" + date.slice(6) : date) }));
    if (data.view_count != null) meta.append(el("span", { text: data.view_count.toLocaleString("en-US") + " views" }));
    if (data.like_count != null) meta.append(el("span", { text: data.like_count.toLocaleString("en-US") + " likes" }));

    const s = data.stats;
    const share = s.annotated_share == null ? "" : " (" + (100 * s.annotated_share).toFixed(1) + " %)";
    const items = [
      ["nodes", "nodes", s.nodes.toLocaleString("en-US")],
      ["leaves", "leaves", s.leaves.toLocaleString("en-US")],
      ["levels", "levels", String(s.levels)],
      ["annotated", "annotated", s.annotated + " of " + s.annotatable + " annotatable" + share],
      ["na", "\"N/A\"", String(s.marks.na)],
      ["error_records", "error records", String(s.error_records)],
      ["violations", "rule violations", String(s.violations)],
    ];
    for (const [key, name, value] of items) {
      $("stats").append(el("div", {}, [el("dt", { text: name }), el("dd", { text: value, dataset: { stat: key } })]));
    }
    for (const m of data.marks) {
      const count = s.marks[m.name];
      const b = el("button", { type: "button", className: "legend-item", dataset: { mark: m.name },
        title: count ? "next segment marked " + m.label : "no segment marked " + m.label },
      [swatch(m.name), m.label + " \u00b7 " + count.toLocaleString("en-US")]);
      b.disabled = count === 0;
      b.addEventListener("click", () => selectNextMarked(m.name));
      $("legend").append(b);
    }
    if (data.description) {
      meta.after(el("details", { id: "description" }, [el("summary", { text: "description" }), el("p", { text: data.description })]));
    }
    const problems = $("problems");
    if (data.video_errors.length) {
      problems.append(el("details", { open: "" }, [
        el("summary", { text: data.video_errors.length + " error record(s) for the whole video" }),
        el("ul", { id: "video-errors" }, data.video_errors.map((e) => el("li", { text: e.stage + ": " + e.error }))),
      ]));
    }
    if (s.violations) {
      const listed = data.violations.length < s.violations ? " (first " + data.violations.length + " listed)" : "";
      problems.append(el("details", {}, [
        el("summary", { text: s.violations + " violation(s) of the tree rules" + listed }),
        el("ul", { id: "violations" }, data.violations.map((v) => {
          const li = el("li", { text: "[" + v.rule + "] " + (v.node_id ? v.node_id + ": " : "") + v.message });
          if (v.node_id && indexById.has(v.node_id)) {
            li.style.cursor = "pointer";
            li.addEventListener("click", () => select(indexById.get(v.node_id), { reveal: true }));
          }
          return li;
        })),
      ]));
    }
  }

  // --- timeline -----------------------------------------------------------------------------
  function drawTimeline() {
    const rows = document.createDocumentFragment();
    const labels = document.createDocumentFragment();
    levels.forEach((ids, level) => {
      const row = el("div", { className: "row", dataset: { level: String(level) } });
      for (const i of ids) {
        const n = nodes[i];
        const b = document.createElement("div");
        b.className = "block m-" + n.mark;
        b.dataset.i = i;
        b.style.left = pct(n.start - t0);
        b.style.width = pct(n.end - n.start);
        b.textContent = labelOf(n);
        blocks[i] = b;
        row.appendChild(b);
      }
      rows.appendChild(row);
      labels.appendChild(el("div", { className: "level-label", text: "L" + level + " \u00b7 " + ids.length }));
    });
    $("rows").appendChild(rows);
    $("level-labels").appendChild(labels);
  }

  function drawAxis() {
    const scroller = $("scroller");
    const width = scroller.clientWidth * zoom;
    const pxPerSecond = width / span;
    const steps = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    const step = steps.find((s) => s * pxPerSecond >= 72) || steps[steps.length - 1];
    const decimals = step < 0.1 ? 2 : step < 1 ? 1 : 0;
    const from = t0 + scroller.scrollLeft / pxPerSecond;
    const to = from + scroller.clientWidth / pxPerSecond;
    const axis = $("axis");
    axis.textContent = "";
    for (let k = Math.ceil((from - t0) / step); t0 + k * step <= Math.min(to, root.end) + 1e-9; k++) {
      const t = t0 + k * step;
      axis.appendChild(el("div", { className: "tick", style: "left:" + pct(t - t0), text: clock(t, decimals) }));
    }
    $("zoom-level").textContent = "\u00d7" + (zoom < 10 ? zoom.toFixed(1) : Math.round(zoom));
    stickLabels(from, pxPerSecond);
  }

  // Blocks that begin left of the view move their label into it (one block per level at most).
  let indented = [];
  function stickLabels(from, pxPerSecond) {
    for (const i of indented) blocks[i].style.textIndent = "";
    indented = from > t0 ? blocksAt(from).filter((i) => nodes[i].start < from) : [];
    for (const i of indented) blocks[i].style.textIndent = (from - nodes[i].start) * pxPerSecond + 3 + "px";
  }

  const shortest = nodes.reduce((m, n) => Math.min(m, n.end - n.start), span);
  function maxZoom() {
    const w = Math.max($("scroller").clientWidth, 1);
    // At most the shortest segment across the whole view, the canvas below browsers' layout limit.
    return Math.max(1, Math.min(span / shortest, 8e6 / w));
  }

  function setZoom(z, anchorTime, anchorX) {
    const scroller = $("scroller");
    const w = scroller.clientWidth;
    const oldPx = (w * zoom) / span;
    const time = anchorTime === undefined ? t0 + (scroller.scrollLeft + w / 2) / oldPx : anchorTime;
    const x = anchorX === undefined ? (time - t0) * oldPx - scroller.scrollLeft : anchorX;
    zoom = Math.min(Math.max(z, 1), maxZoom());
    $("canvas").style.width = 100 * zoom + "%";
    scroller.scrollLeft = (time - t0) * ((w * zoom) / span) - x;
    drawAxis();
  }

  function reveal(i) {
    const scroller = $("scroller");
    const n = nodes[i];
    const px = (scroller.clientWidth * zoom) / span;
    const left = (n.start - t0) * px;
    const right = (n.end - t0) * px;
    if (left < scroller.scrollLeft || right > scroller.scrollLeft + scroller.clientWidth) {
      scroller.scrollLeft = right - left > scroller.clientWidth ? left : (left + right) / 2 - scroller.clientWidth / 2;
    }
  }

  // --- selection and navigation --------------------------------------------------------------
  function ancestors(i) {
    const out = [];
    for (let p = nodes[i].parent; p != null; p = nodes[p].parent) out.push(p);
    return out.reverse();
  }

  function segmentPath(i) {
    const parts = [];
    for (let c = i, p = nodes[i].parent; p != null; c = p, p = nodes[p].parent) {
      parts.push(nodes[p].children.indexOf(c) + 1);
    }
    return parts.reverse().join(".");
  }

  function select(i, opts) {
    if (i == null || i < 0 || i >= nodes.length) return;
    const o = opts || {};
    if (selected >= 0) {
      blocks[selected].classList.remove("sel");
      for (const a of ancestors(selected)) blocks[a].classList.remove("anc");
    }
    selected = i;
    blocks[i].classList.add("sel");
    let child = i;
    for (let p = nodes[i].parent; p != null; child = p, p = nodes[p].parent) {
      blocks[p].classList.add("anc");
      lastChild.set(p, child);
    }
    drawPanel(i);
    if (o.reveal) reveal(i);
    if (o.seek) seek(nodes[i].start);
    try {
      history.replaceState(null, "", "#" + nodes[i].id);
    } catch (e) {
      // some browsers refuse history changes on file: pages; the hash is only a convenience
    }
  }

  function sibling(i, step) {
    const p = nodes[i].parent;
    if (p == null) return null;
    const kids = nodes[p].children;
    const k = kids.indexOf(i) + step;
    return k >= 0 && k < kids.length ? kids[k] : null;
  }

  function neighbour(i, step) {
    const ids = levels[nodes[i].level];
    const k = levelPos[i] + step;
    return k >= 0 && k < ids.length ? ids[k] : null;
  }

  function selectNextMarked(mark) {
    for (let k = 1; k <= nodes.length; k++) {
      const i = (Math.max(selected, 0) + k) % nodes.length;
      if (nodes[i].mark === mark) {
        select(i, { reveal: true });
        return;
      }
    }
  }

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    // Keys typed into a field, or meant for the player's own controls, are theirs.
    if (e.target instanceof Element && e.target.closest("input:not([type=checkbox]), textarea, select, video")) return;
    if (e.key === "Enter" && e.target instanceof Element && e.target.closest("button")) return;
    if (selected < 0) return;
    const n = nodes[selected];
    let next = null;
    switch (e.key) {
      case "ArrowLeft":
      case "ArrowRight": {
        const step = e.key === "ArrowLeft" ? -1 : 1;
        next = e.shiftKey ? neighbour(selected, step) : sibling(selected, step);
        break;
      }
      case "ArrowUp":
        next = n.parent;
        break;
      case "ArrowDown":
        next = n.children.length ? (lastChild.has(selected) ? lastChild.get(selected) : n.children[0]) : null;
        break;
      case "Home":
        next = data.root;
        break;
      case "Enter":
        if (player) {
          seek(n.start);
          player.play();
        }
        break;
      case "+":
      case "=":
        setZoom(zoom * 2, (n.start + n.end) / 2);
        break;
      case "-":
        setZoom(zoom / 2, (n.start + n.end) / 2);
        break;
      case "0":
        setZoom(1);
        break;
      default:
        return;
    }
    e.preventDefault();
    if (next != null) select(next, { reveal: true });
  });

  // --- the panel ----------------------------------------------------------------------------
  const FIELDS = [
    ["gpt.summary.brief", ["gpt", "summary", "brief"]],
    ["gpt.summary.detailed", ["gpt", "summary", "detailed"]],
    ["gpt.action.brief", ["gpt", "action", "brief"]],
    ["gpt.action.detailed", ["gpt", "action", "detailed"]],
    ["gpt.action.actor", ["gpt", "action", "actor"]],
    ["plm_action", ["plm_action"]],
    ["plm_caption", ["plm_caption"]],
    ["llama3_caption", ["llama3_caption"]],
  ];
  const NO_GPT = {
    leaf: "none: a leaf (stage 3 annotates internal nodes of at least " + data.gpt_min_duration + " s)",
    short: "none: shorter than " + data.gpt_min_duration + " s (stage 3 annotates internal nodes of at least " + data.gpt_min_duration + " s)",
    missing: "missing: an internal node of at least " + data.gpt_min_duration + " s that stage 3 did not annotate",
  };

  function nodeButton(i, className) {
    const n = nodes[i];
    const label = labelOf(n);
    const b = el("button", { type: "button", className: className, dataset: { i: String(i) }, title: timesOf(n) + (label ? " \u00b7 " + label : "") },
      [swatch(n.mark), "L" + n.level + " " + clock(n.start) + "\u2013" + clock(n.end) + (label ? " \u00b7 " + label : "")]);
    b.addEventListener("click", () => select(i, { reveal: true, seek: true }));
    return b;
  }

  function valueCell(name, value) {
    if (value == null) return el("td", { className: "missing", dataset: { field: name }, text: "null" });
    return el("td", { dataset: { field: name }, text: value });
  }

  function drawPanel(i) {
    const n = nodes[i];
    const panel = $("panel");
    panel.textContent = "";
    const path = segmentPath(i);
    panel.append(el("h2", {}, [
      el("span", { text: path ? "Segment " + path : "Root" }),
      el("span", { className: "badge m-" + n.mark, dataset: { field: "mark" }, text: markLabel[n.mark] }),
      el("span", { className: "mono", text: "level " + n.level + (n.children.length ? "" : " \u00b7 leaf") }),
    ]));
    panel.append(el("p", { className: "times", dataset: { field: "times" }, text: timesOf(n) }));
    panel.append(el("p", { className: "node-id mono", dataset: { field: "node_id" }, text: n.id }));
    const crumbs = ancestors(i).map((a) => nodeButton(a, "crumb"));
    const current = nodeButton(i, "crumb current");
    panel.append(el("nav", { className: "path", dataset: { field: "path" }, "aria-label": "path from the root" }, crumbs.concat([current])));
    if (n.errors.length) {
      panel.append(el("div", { className: "node-errors" }, [
        el("strong", { text: "error records" }),
        el("ul", { dataset: { field: "errors" } }, n.errors.map((e) => el("li", { text: e.stage + ": " + e.error }))),
      ]));
    }
    const rows = [];
    for (const [name, keys] of FIELDS) {
      if (keys[0] === "gpt" && !n.gpt) continue;
      rows.push(el("tr", {}, [el("th", { text: name }), valueCell(name, pick(n, keys))]));
    }
    if (!n.gpt) rows.unshift(el("tr", {}, [el("th", { text: "gpt" }), el("td", { className: "missing", dataset: { field: "gpt" }, text: NO_GPT[n.no_gpt] })]));
    panel.append(el("table", { className: "fields" }, [el("tbody", {}, rows)]));
    if (n.children.length) {
      panel.append(el("div", { className: "children" }, ["children"].concat(n.children.map((c) => nodeButton(c, "child")))));
    }
    const said = data.transcript.filter(([t]) => t >= n.start && t < n.end);
    if (said.length) {
      panel.append(el("details", {}, [
        el("summary", { text: "transcript in this segment (" + said.length + " line" + (said.length > 1 ? "s" : "") + ")" }),
        el("ul", {}, said.map(([t, text]) => el("li", {}, [el("span", { className: "mono", text: clock(t) + "  " }), text]))),
      ]));
    }
  }

  // --- tooltip ------------------------------------------------------------------------------
  function showTip(i, x, y) {
    const n = nodes[i];
    const tip = $("tip");
    const caption = n.plm_caption || n.llama3_caption || "";
    tip.textContent = "";
    tip.append(el("div", { className: "tip-times", text: "L" + n.level + " \u00b7 " + timesOf(n) + " \u00b7 " + markLabel[n.mark] }));
    const label = labelOf(n);
    if (label) tip.append(el("div", {}, [el("strong", { text: label })]));
    if (caption) tip.append(el("div", { text: caption.length > 240 ? caption.slice(0, 240) + "\u2026" : caption }));
    tip.hidden = false;
    moveTip(x, y);
  }

  function moveTip(x, y) {
    const tip = $("tip");
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    tip.style.left = Math.min(x + 14, window.innerWidth - w - 4) + "px";
    tip.style.top = (y + 16 + h > window.innerHeight ? y - h - 10 : y + 16) + "px";
  }

  // --- the player ---------------------------------------------------------------------------
  function blocksAt(t) {
    const out = [];
    for (const ids of levels) {
      let lo = 0;
      let hi = ids.length - 1;
      let k = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (nodes[ids[mid]].start <= t) {
          k = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (k < 0) continue;
      const n = nodes[ids[k]];
      if (t < n.end || (t <= n.end && k === ids.length - 1)) out.push(ids[k]);
    }
    return out;
  }

  function showTime(t) {
    const now = new Set(blocksAt(t));
    for (const i of playing) if (!now.has(i)) blocks[i].classList.remove("play");
    for (const i of now) if (!playing.has(i)) blocks[i].classList.add("play");
    playing = now;
    const head = $("playhead");
    head.hidden = false;
    head.style.left = pct(Math.min(Math.max(t, t0), root.end) - t0);
    if ($("follow").checked && now.size) {
      const deepest = Array.from(now).reduce((a, b) => (nodes[b].level > nodes[a].level ? b : a));
      if (deepest !== selected) select(deepest, { reveal: true });
    }
  }

  function seek(t) {
    if (!player) return;
    player.currentTime = t;
    showTime(t);
  }

  function setUpPlayer() {
    if (!data.video_src) return;
    player = $("player");
    $("player-box").hidden = false;
    $("follow-box").hidden = false;
    $("below").classList.remove("no-player");
    const note = $("player-note");
    note.append("video ", el("code", { text: decodeURI(data.video_src) }));
    const update = () => showTime(player.currentTime);
    const tick = () => {
      update();
      if (!player.paused && !player.ended) requestAnimationFrame(tick);
    };
    player.addEventListener("timeupdate", update);
    player.addEventListener("seeked", update);
    player.addEventListener("play", () => requestAnimationFrame(tick));
    player.addEventListener("error", () => {
      note.className = "warn";
      note.textContent = "cannot play " + decodeURI(data.video_src) + ": " + ((player.error && player.error.message) || "the browser cannot decode it");
    });
    player.src = data.video_src;
  }

  // --- wiring -------------------------------------------------------------------------------
  drawHeader();
  drawTimeline();
  setUpPlayer();
  const rowsBox = $("rows");
  rowsBox.addEventListener("click", (e) => {
    const b = e.target.closest(".block");
    if (b) select(Number(b.dataset.i), { seek: true });
  });
  rowsBox.addEventListener("mouseover", (e) => {
    const b = e.target.closest(".block");
    if (b) showTip(Number(b.dataset.i), e.clientX, e.clientY);
  });
  rowsBox.addEventListener("mousemove", (e) => { if (!$("tip").hidden) moveTip(e.clientX, e.clientY); });
  rowsBox.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  $("scroller").addEventListener("wheel", (e) => {
    if (!e.ctrlKey) return;
    e.preventDefault();
    const scroller = $("scroller");
    const x = e.clientX - scroller.getBoundingClientRect().left;
    const time = t0 + ((scroller.scrollLeft + x) / (scroller.clientWidth * zoom)) * span;
    setZoom(zoom * (e.deltaY < 0 ? 1.25 : 0.8), time, x);
  }, { passive: false });
  let axisPending = false;
  $("scroller").addEventListener("scroll", () => {
    if (axisPending) return;
    axisPending = true;
    requestAnimationFrame(() => { axisPending = false; drawAxis(); });
  });
  window.addEventListener("resize", drawAxis);
  const around = () => (selected >= 0 ? (nodes[selected].start + nodes[selected].end) / 2 : undefined);
  $("zoom-in").addEventListener("click", () => setZoom(zoom * 2, around()));
  $("zoom-out").addEventListener("click", () => setZoom(zoom / 2, around()));
  $("zoom-fit").addEventListener("click", () => setZoom(1));
  drawAxis();
  const linked = indexById.get(decodeURIComponent(location.hash.slice(1)));
  select(linked === undefined ? data.root : linked, { reveal: true });

  void rowsBox.offsetHeight; // layout included in the figure
  window.__renderMs = performance.now() - startedAt;
  $("render-time").textContent = nodes.length.toLocaleString("en-US") + " segments drawn in " + window.__renderMs.toFixed(0) + " ms";
  document.body.dataset.ready = "true";
})();
