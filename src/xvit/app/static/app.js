// xvit serve: the page. Plain JavaScript, no build step. Everything it shows comes from the server's registries:
// models, methods and analyses with their parameter constraints, from which the form controls are built.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  config: null, methods: {}, analyses: {}, images: [], selected: null, prediction: null, target: null,
  job: null, source: null, result: null,
};

// ------------------------------------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

let toastTimer = null;
function toast(message, isError = false) {
  const box = $("#toast");
  box.textContent = message;
  box.className = "show" + (isError ? " error" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = ""; }, isError ? 7000 : 3000);
}

async function api(path, options = {}) {
  const init = { ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(options.json);
    delete init.json;
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let message = (body && body.error) || `${response.status} ${response.statusText}`;
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) message += ` (retry in ${retry} s)`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// Docstring summaries use reStructuredText literals; show them plain.
function plain(text) { return (text || "").replace(/``/g, ""); }

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 1 : 3);
}

function pct(p) { return `${(100 * p).toFixed(1)} %`; }

function decodeFloats(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

function gradient(kind) {
  const stops = state.config.colormaps[kind].stops;
  return `linear-gradient(90deg, ${stops.join(", ")})`;
}

// ------------------------------------------------------------------------------------------ parameter forms

// One control per parameter, built from its declared constraint (interval, options, nullable, any).
function control(param, constraint, value) {
  const kind = constraint.kind;
  if (kind === "nullable" && constraint.inner.kind === "boxes") {
    // No boxes drawn stands for None.
    const inner = boxesControl(value || []);
    return { node: inner.node, read: () => (inner.read().length ? inner.read() : null) };
  }
  if (kind === "boxes") return boxesControl(value);
  if (kind === "nullable") {
    const inner = control(param, constraint.inner, value === null ? innerDefault(constraint.inner) : value);
    const none = el("input", { type: "checkbox", title: "None" });
    none.checked = value === null;
    inner.node.disabled = none.checked;
    none.addEventListener("change", () => { inner.node.disabled = none.checked; });
    return {
      node: el("span", { class: "param-none" }, inner.node, el("label", {}, none, " none")),
      read: () => (none.checked ? null : inner.read()),
      focusable: inner.node,
    };
  }
  if (kind === "options") {
    const values = constraint.values;
    if (values.every((v) => typeof v === "boolean")) {
      const box = el("input", { type: "checkbox" });
      box.checked = Boolean(value);
      return { node: box, read: () => box.checked };
    }
    const select = el("select", {}, values.map((v, i) => el("option", { value: String(i) }, String(v))));
    select.value = String(Math.max(0, values.findIndex((v) => JSON.stringify(v) === JSON.stringify(value))));
    return { node: select, read: () => values[Number(select.value)] };
  }
  if (kind === "interval") {
    const input = el("input", { type: "number", step: constraint.integer ? "1" : "any", value: String(value) });
    if (constraint.low !== null) input.min = String(constraint.low);
    if (constraint.high !== null) input.max = String(constraint.high);
    input.title = constraint.description || "";
    return { node: input, read: () => (constraint.integer ? parseInt(input.value, 10) : parseFloat(input.value)) };
  }
  const input = el("input", { type: "text", value: JSON.stringify(value) });
  return {
    node: input,
    read: () => { try { return JSON.parse(input.value); } catch (e) { return input.value; } },
  };
}

// Boxes [x0, y0, x1, y1] as fractions of the image width and height, drawn by dragging on the selected image.
function boxesControl(initial) {
  const boxes = initial.map((b) => [...b]);
  const image = el("img", { alt: "selected image", draggable: "false" });
  const canvas = el("canvas", { class: "box-canvas", title: "drag to draw a box" });
  const stage = el("div", { class: "box-stage" }, image, canvas);
  const hint = el("span", { class: "muted small" }, "Choose an image, then drag on it to draw boxes.");
  const list = el("ol", { class: "box-list" });
  const clear = el("button", { class: "ghost", type: "button", onclick: () => { boxes.length = 0; update(); } }, "Clear");
  let start = null;
  let current = null;

  function showImage() {
    stage.hidden = !state.selected;
    hint.hidden = Boolean(state.selected);
    if (state.selected && image.getAttribute("src") !== state.selected.thumbnail) image.src = state.selected.thumbnail;
  }

  function fraction(e) {
    const r = canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height)];
  }

  function draw() {
    canvas.width = image.clientWidth;
    canvas.height = image.clientHeight;
    const ctx = canvas.getContext("2d");
    const { width: w, height: h } = canvas;
    ctx.lineWidth = 2;
    ctx.font = "bold 12px system-ui, sans-serif";
    const shown = current ? [...boxes, current] : boxes;
    shown.forEach(([x0, y0, x1, y1], i) => {
      ctx.fillStyle = "rgba(255, 204, 0, 0.2)";
      ctx.fillRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
      ctx.strokeStyle = "#ffcc00";
      ctx.strokeRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
      ctx.fillStyle = "#ffcc00";
      ctx.fillText(String(i + 1), x0 * w + 4, y0 * h + 14);
    });
  }

  function update() {
    list.replaceChildren(...boxes.map((b, i) => el("li", {},
      el("span", {}, b.map((v) => v.toFixed(2)).join(", ")),
      el("button", { class: "ghost", type: "button", title: "Remove this box", "aria-label": `Remove box ${i + 1}`,
                     onclick: () => { boxes.splice(i, 1); update(); } }, "×"))));
    clear.disabled = !boxes.length;
    draw();
  }

  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    start = fraction(e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!start) return;
    const [x, y] = fraction(e);
    current = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    draw();
  });
  canvas.addEventListener("pointerup", () => {
    const box = current && current.map((v) => Math.round(v * 1000) / 1000);
    start = null;
    current = null;
    if (box && box[2] - box[0] >= 0.01 && box[3] - box[1] >= 0.01) boxes.push(box);
    update();
  });
  new ResizeObserver(draw).observe(image);  // the canvas follows the image's size (loaded, shown, resized)
  const node = el("div", { class: "boxes-editor", "data-boxes": "" }, stage, hint, el("div", {}, list, clear));
  node.addEventListener("imagechange", showImage);
  showImage();
  update();
  return { node, read: () => boxes.map((b) => [...b]) };
}

function innerDefault(constraint) {
  if (constraint.kind === "interval") return constraint.low !== null ? constraint.low : 0;
  if (constraint.kind === "options") return constraint.values[0];
  return "";
}

// A form for a parameter list; read() returns only the values that differ from the defaults.
function paramForm(params, inline = false) {
  const form = el("div", { class: "params" + (inline ? " inline" : "") });
  const readers = [];
  for (const p of params) {
    const c = control(p.name, p.constraint, p.default);
    const label = el("label", { title: p.constraint.description || "" }, p.name);
    if (inline) form.append(el("span", { class: "param" }, label, c.node));
    else form.append(label, c.node);
    readers.push([p, c]);
  }
  return {
    node: form,
    read() {
      const out = {};
      for (const [p, c] of readers) {
        const v = c.read();
        if (JSON.stringify(v) !== JSON.stringify(p.default)) out[p.name] = v;
      }
      return out;
    },
  };
}

// ----------------------------------------------------------------------------------------------- sidebar

const methodForms = {};

function renderMethods() {
  const list = $("#methods");
  list.replaceChildren();
  const names = Object.keys(state.methods);
  const preferred = ["transformer_attribution", "attnlrp"].filter((m) => names.includes(m));
  const initial = new Set(preferred.length ? preferred : names.slice(0, 2));
  for (const name of names) {
    const info = state.methods[name];
    const box = el("input", { type: "checkbox", value: name, "data-method": name });
    box.checked = initial.has(name);
    box.addEventListener("change", updateMethodCount);
    const form = paramForm(info.params);
    form.node.hidden = true;
    methodForms[name] = { box, form };
    const gear = info.params.length
      ? el("button", { class: "gear", title: "Parameters", "aria-label": `Parameters of ${name}`,
                       onclick: () => { form.node.hidden = !form.node.hidden; } }, "⚙")
      : null;
    list.append(el("div", { class: "method", title: `${plain(info.summary)}\n${info.citation}` },
      el("div", { class: "method-row" },
        el("label", {}, box, el("span", { class: "name" }, name)),
        info.signed ? el("span", { class: "badge signed" }, "signed") : null,
        el("span", { class: "badge" }, info.passes || info.cost || info.resolution || ""),
        gear),
      form.node));
  }
  updateMethodCount();
}

function chosenMethods() {
  const out = {};
  for (const [name, { box, form }] of Object.entries(methodForms)) if (box.checked) out[name] = form.read();
  return out;
}

function updateMethodCount() {
  const n = Object.keys(chosenMethods()).length;
  $("#method-count").textContent = `${n} selected`;
  $("#explain").disabled = !state.selected || n === 0;
}

function renderGallery() {
  const gallery = $("#gallery");
  gallery.replaceChildren(...state.images.map((im) => el("button", {
    class: "thumb" + (state.selected && state.selected.id === im.id ? " selected" : ""), title: im.name,
    "data-image": im.id, onclick: () => select(im),
  }, el("img", { src: im.thumbnail, alt: im.name }), el("span", {}, im.name))));
}

function addImages(images) {
  for (const im of images) state.images.push(im);
  renderGallery();
  if (images.length) select(images[images.length - 1]);
}

async function uploadFiles(files) {
  for (const file of files) {
    const data = new FormData();
    data.append("file", file, file.name);
    try {
      const body = await api("/api/images", { method: "POST", body: data });
      addImages(body.images);
    } catch (e) {
      toast(e.message, true);
    }
  }
}

function setupDrop() {
  const zone = $("#drop");
  const input = $("#file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  input.addEventListener("change", () => { uploadFiles([...input.files]); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => uploadFiles([...e.dataTransfer.files]));
}

async function renderSamples() {
  const { samples } = await api("/api/samples");
  $("#samples").replaceChildren(...samples.map((s) => el("button", {
    class: "thumb", title: `${s.id}${s.label ? " · " + s.label : ""}`, "data-sample": s.id,
    onclick: async () => {
      try { addImages((await api("/api/images/sample", { json: { sample: s.id } })).images); }
      catch (e) { toast(e.message, true); }
    },
  }, el("img", { src: `/api/samples/${s.id}/thumbnail.png`, alt: s.id }), el("span", {}, s.label || s.id))));
}

// -------------------------------------------------------------------------------------------- prediction

async function select(image) {
  state.selected = image;
  state.prediction = null;
  state.target = null;
  renderGallery();
  $("#selected-thumb").src = image.thumbnail;
  $("#selected-thumb").hidden = false;
  $("#selected-name").textContent = image.name;
  $("#selected-info").textContent = `${image.width} × ${image.height} · ${image.mode} · predicting…`;
  $("#top5").replaceChildren();
  updateMethodCount();
  $("#run-analysis").disabled = false;
  for (const editor of document.querySelectorAll("[data-boxes]")) editor.dispatchEvent(new Event("imagechange"));
  await predict();
}

async function predict() {
  if (!state.selected) return;
  const image = state.selected;
  try {
    const p = await api("/api/predict", { json: { model: $("#model").value, image: image.id } });
    if (state.selected !== image) return;
    state.prediction = p;
    state.target = p.top5[0].index;
    $("#selected-info").textContent = `${image.width} × ${image.height} · ${image.mode} · model input `
      + `${p.input_size.join(" × ")} · ${p.num_classes} classes · click a class to explain it`;
    renderTop5();
  } catch (e) {
    $("#selected-info").textContent = e.message;
    toast(e.message, true);
  }
}

function renderTop5() {
  const p = state.prediction;
  $("#top5").replaceChildren(...p.top5.map((c) => el("li", {}, el("button", {
    class: c.index === state.target ? "active" : "", "data-class": c.index,
    title: `explain class ${c.index} (${c.name})`,
    onclick: () => { state.target = c.index; renderTop5(); explain(); },
  }, el("span", { class: "cls" }, `${c.name}`), barOf(c.probability), el("span", { class: "prob" }, pct(c.probability))))));
  const chosen = p.top5.find((c) => c.index === state.target);
  $("#target-label").textContent = chosen ? `explaining class ${chosen.index}: ${chosen.name}` : "";
}

function barOf(p) {
  const fill = el("div");
  fill.style.width = `${Math.max(1, 100 * p)}%`;
  return el("div", { class: "bar" }, fill);
}

// -------------------------------------------------------------------------------------------------- jobs

function showJob(snapshot) {
  $("#job").hidden = false;
  $("#progress-bar").style.width = `${Math.round(100 * snapshot.progress)}%`;
  $("#job-stage").textContent = `${snapshot.kind}: ${snapshot.stage} · ${snapshot.seconds.toFixed(1)} s`;
}

// Follow a job's progress over server-sent events; resolves with the final state.
function follow(job) {
  if (state.source) state.source.close();
  state.job = job;
  showJob(job);
  return new Promise((resolve) => {
    const source = new EventSource(`/api/jobs/${job.id}/events`);
    state.source = source;
    source.addEventListener("progress", (e) => showJob(JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      source.close();
      const final = JSON.parse(e.data);
      showJob(final);
      $("#job").hidden = true;
      state.job = null;
      resolve(final);
    });
    source.onerror = async () => {
      source.close();
      try { resolve(await api(`/api/jobs/${job.id}`)); } catch (err) { resolve({ status: "error", message: err.message }); }
      $("#job").hidden = true;
    };
  });
}

async function runJob(path, payload) {
  let job;
  try {
    job = await api(path, { json: payload });
  } catch (e) {
    toast(e.message, true);
    return null;
  }
  const final = await follow(job);
  if (final.status !== "done") {
    toast(final.status === "cancelled" ? "Cancelled." : final.message || final.status, final.status !== "cancelled");
    return null;
  }
  return final.result;
}

async function explain() {
  if (!state.selected) return;
  const methods = chosenMethods();
  if (!Object.keys(methods).length) { toast("Choose at least one method.", true); return; }
  $("#explain").disabled = true;
  const result = await runJob("/api/jobs/explain", {
    model: $("#model").value, images: [state.selected.id], methods, target: state.target,
  });
  updateMethodCount();
  if (result) renderResult(result);
}

// ----------------------------------------------------------------------------------------------- results

function renderResult(result) {
  state.result = result;
  const image = result.images[0];
  const cards = Object.entries(image.maps).map(([method, map]) => card(method, map, image));
  $("#results").replaceChildren(...cards);
  const link = $("#download-json");
  link.href = result.download;
  link.hidden = false;
  applyOpacity();
}

function card(method, map, image) {
  const record = image.record.methods[method];
  const values = decodeFloats(map.values);
  const [h, w] = map.shape;
  const heat = el("img", { src: map.heat, alt: `${method} heat map`, class: "heat" });
  const cursor = el("div", { class: "cursor" });
  cursor.hidden = true;
  const stack = el("div", { class: "stack" }, el("img", { src: image.display, alt: "input" }), heat, cursor);
  const readout = el("span", { class: "value" }, " ");
  stack.addEventListener("mousemove", (e) => {
    const box = stack.getBoundingClientRect();
    const fx = (e.clientX - box.left) / box.width;
    const fy = (e.clientY - box.top) / box.height;
    const col = Math.min(w - 1, Math.max(0, Math.floor(fx * w)));
    const row = Math.min(h - 1, Math.max(0, Math.floor(fy * h)));
    readout.textContent = `value ${fmt(values[row * w + col])} at (${row}, ${col})`;
    cursor.hidden = false;
    cursor.style.left = `${100 * fx}%`;
    cursor.style.top = `${100 * fy}%`;
  });
  stack.addEventListener("mouseleave", () => { readout.textContent = " "; cursor.hidden = true; });
  const ramp = el("div", { class: "ramp" });
  ramp.style.background = gradient(map.signed ? "diverging" : "sequential");
  const ticks = map.signed
    ? [fmt(map.scale.low), "0", fmt(map.scale.high)]
    : [fmt(map.scale.low), fmt(map.scale.high)];
  const download = el("a", { class: "button ghost", href: map.overlay, download: `${image.record.name}_${method}.png`,
                             "data-overlay": method }, "PNG");
  return el("div", { class: "card", "data-method": method },
    el("div", { class: "card-head" }, el("span", { class: "name" }, method),
      map.signed ? el("span", { class: "badge signed", title: "red supports the class, blue opposes it" }, "signed")
        : null,
      el("span", { class: "muted small", title: "time per image" }, `${(1000 * record.seconds_per_image).toFixed(0)} ms`)),
    el("div", { class: "card-sub" },
      `class ${record.target.index}: ${record.target.name} (${pct(record.target.probability)})`),
    stack,
    el("div", { class: "legend", title: map.signed ? "raw relevance, clipped at the 99th percentile of |map|" : "raw map, min to max" },
      ramp, el("div", { class: "ticks" }, ticks.map((t) => el("span", {}, t)))),
    el("div", { class: "card-foot" }, readout, download));
}

function applyOpacity() {
  const alpha = $("#opacity").value;
  for (const img of document.querySelectorAll(".stack .heat")) img.style.opacity = alpha;
  for (const a of document.querySelectorAll("a[data-overlay]")) {
    const url = new URL(a.href, location.href);
    url.searchParams.set("alpha", alpha);
    a.href = url.pathname + url.search;
  }
}

// ---------------------------------------------------------------------------------------------- analyses

let analysisForm = null;

function renderAnalyses() {
  const select = $("#analysis");
  const names = Object.keys(state.analyses);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  select.addEventListener("change", analysisChanged);
  if (!names.length) select.append(el("option", { value: "" }, "no analyses registered"));
  analysisChanged();
}

function analysisChanged() {
  const info = state.analyses[$("#analysis").value];
  if (!info) return;
  analysisForm = paramForm(info.params, true);
  $("#analysis-params").replaceChildren(analysisForm.node);
  $("#analysis-info").textContent = `${plain(info.summary)} — ${info.citation} · cost ${info.cost}`;
}

async function runAnalysis() {
  if (!state.selected) { toast("Choose an image first.", true); return; }
  const name = $("#analysis").value;
  $("#run-analysis").disabled = true;
  const result = await runJob("/api/jobs/analysis", {
    model: $("#model").value, images: [state.selected.id], analysis: name, params: analysisForm.read(),
    target: state.target,
  });
  $("#run-analysis").disabled = false;
  if (!result) return;
  const rows = [
    ["analysis", result.name], ["model", result.model], ["time", `${result.seconds.toFixed(3)} s`],
    ...Object.entries(result.tensors).map(([k, t]) => [k, `${t.dtype} (${t.shape.join(" × ")})`]),
    ...Object.entries(result.meta).map(([k, v]) => [k, JSON.stringify(v)]),
    ...Object.entries(result.params).map(([k, v]) => [`param ${k}`, JSON.stringify(v)]),
  ];
  $("#analysis-result").replaceChildren(
    el("img", { src: result.figure, alt: `${result.name} figure`, "data-figure": result.name }),
    el("table", { class: "meta" }, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))));
  const link = $("#download-analysis");
  link.href = result.download;
  link.hidden = false;
}

// ------------------------------------------------------------------------------------------------- start

async function start() {
  const [config, models, methods, analyses] = await Promise.all([
    api("/api/config"), api("/api/models"), api("/api/methods"), api("/api/analyses"),
  ]);
  state.config = config;
  state.methods = methods.methods;
  state.analyses = analyses.analyses;
  const kinds = { bundled: "Bundled", checkpoint: "Allowed checkpoints", random: "Random weights (for trying things)" };
  const picker = $("#model");
  for (const [kind, label] of Object.entries(kinds)) {
    const group = models.models.filter((m) => m.kind === kind);
    if (group.length) {
      picker.append(el("optgroup", { label }, group.map((m) => el("option", { value: m.id, title: m.description }, m.label))));
    }
  }
  picker.addEventListener("change", () => {
    $("#results").replaceChildren(el("p", { class: "muted empty" }, "Model changed: explain again."));
    $("#download-json").hidden = true;
    predict();
  });
  $("#server-status").textContent = `xvit ${config.version} · ${config.device} · ${config.workers} workers`;
  renderMethods();
  renderAnalyses();
  setupDrop();
  $("#explain").addEventListener("click", explain);
  $("#run-analysis").addEventListener("click", runAnalysis);
  $("#opacity").addEventListener("input", applyOpacity);
  $("#cancel").addEventListener("click", async () => {
    if (state.job) {
      try { await api(`/api/jobs/${state.job.id}`, { method: "DELETE" }); } catch (e) { toast(e.message, true); }
    }
  });
  await renderSamples();
}

start().catch((e) => toast(`Could not start: ${e.message}`, true));
