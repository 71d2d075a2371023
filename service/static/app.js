// The search page: plain JavaScript over the public API (/v1/info, /v1/search,
// /v1/items/{id}/thumbnail). Item ids are 63-bit integers, past what a JS number
// holds exactly, so they are kept as strings: read from the JSON text, written into it.
"use strict";

const $ = (id) => document.getElementById(id);
const K_CHOICES = [5, 10, 20, 30, 50, 100];
let chosenFile = null;
let last = null; // the last search: [query, label], rerun when k or the recall changes
let baseThumbnails = true; // false when the live snapshot has none (precomputed vectors)

// JSON.parse, keeping every "id" integer as its exact decimal string.
function parseKeepingIds(text) {
  try {
    return JSON.parse(text, (key, value, context) =>
      key === "id" && typeof value === "number" && context && context.source
        ? context.source : value);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new Error("the service answered something that is not JSON");
  }
}

function hasSourceAccess() {
  let seen = false;
  JSON.parse('{"id":1}', (k, v, c) => { if (k === "id") seen = !!(c && c.source); return v; });
  return seen;
}

// Browsers without JSON.parse source text access: quote the integers after "id" keys.
function quoteIds(text) {
  return text.replace(/(?<!\\)"id":\s*(\d+)/g, '"id":"$1"');
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error(`the service cannot be reached (${e.message})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = hasSourceAccess() ? parseKeepingIds(text) : JSON.parse(quoteIds(text));
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const reason = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(reason);
  }
  if (body === null) throw new Error("the service answered something that is not JSON");
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function fmt(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : "not measured";
}

async function loadInfo() {
  let info;
  try {
    info = await api("v1/info");
  } catch (e) {
    $("snapshot").textContent = `Cannot read the service: ${e.message}`;
    return;
  }
  const snap = info.snapshot;
  baseThumbnails = !snap || snap.thumbnails > 0;
  if (snap) {
    const recall = snap.recall["image_to_image@10"];
    $("snapshot").textContent =
      `snapshot ${snap.snapshot_id} · ${snap.vectors.toLocaleString("en")} vectors` +
      ` · recall@10 ${fmt(recall, 3)}` +
      (info.delta_upserts ? ` · ${info.delta_upserts} live upserts` : "") +
      ` · ${snap.encoder}`;
  } else {
    $("snapshot").textContent = `Not serving yet: ${info.not_ready || "no snapshot"}`;
  }
  const wanted = new URLSearchParams(location.search).get("snapshot");
  if (wanted && snap && wanted !== snap.snapshot_id) {
    const note = $("pinned");
    note.textContent = `This link asked for snapshot ${wanted}; the service now serves ` +
      `${snap.snapshot_id}, which is what the searches below use.`;
    note.hidden = false;
  }
  const k = $("k");
  k.replaceChildren();
  for (const n of K_CHOICES.filter((n) => n <= info.max_k)) {
    k.append(new Option(String(n), String(n), false, n === info.default_k));
  }
  const reason = $("text-reason");
  $("text").disabled = info.encoder.text === false;
  reason.hidden = info.encoder.text === true;
  if (info.encoder.text === false) {
    $("text").placeholder = "text search is off";
    reason.textContent = `Text search is off: ${info.encoder.reason}`;
  } else if (info.encoder.text === null) {
    reason.textContent = `Text search: ${info.encoder.reason}`;
  }
  if (!info.encoder.images) {
    $("drop-help").textContent = `Image search is off: ${info.encoder.reason}.`;
  }
}

function searchOptions() {
  const options = { k: Number($("k").value || 10) };
  const recall = $("recall").value;
  if (recall === "exact") options.exact = true;
  else if (recall) options.target_recall = Number(recall);
  return options;
}

// JSON with an exact integer id spliced in as text.
function jsonBody(fields, id) {
  const text = JSON.stringify({ ...fields, ...searchOptions() });
  return id === undefined ? text : `{"id":${id},${text.slice(1)}`;
}

async function search(query, label) {
  last = [query, label];
  clearError();
  $("status").textContent = `Searching ${label}…`;
  const request = { method: "POST" };
  if (query.file) {
    const form = new FormData();
    form.append("image", query.file);
    for (const [name, value] of Object.entries(searchOptions())) {
      form.append(name, JSON.stringify(value));
    }
    request.body = form;
  } else {
    request.headers = { "Content-Type": "application/json" };
    request.body = query.id !== undefined ? jsonBody({}, query.id) : jsonBody(query);
  }
  try {
    const result = await api("v1/search", request);
    render(result, label);
    loadInfo(); // the snapshot may have changed, and the encoder has loaded by now
  } catch (e) {
    showError(e.message);
  }
}

function caption(hit) {
  const m = hit.metadata || {};
  return m.caption || m.key || `item ${hit.id}`;
}

function card(hit) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "hit";
  button.dataset.id = hit.id;
  button.setAttribute("aria-label", `More like this: ${caption(hit)}`);
  const missing = document.createElement("div");
  missing.className = "thumb missing";
  missing.textContent = "no thumbnail";
  let img = missing;
  if (baseThumbnails || hit.source === "delta") {
    img = document.createElement("img");
    img.className = "thumb";
    img.alt = caption(hit);
    img.loading = "lazy";
    img.src = `v1/items/${encodeURIComponent(hit.id)}/thumbnail`;
    img.addEventListener("error", () => img.replaceWith(missing));
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = fmt(hit.score, 3);
  const source = document.createElement("span");
  source.className = `source ${hit.source}`;
  source.textContent = hit.source;
  meta.append(score, source);
  const text = document.createElement("div");
  text.className = "caption";
  text.textContent = caption(hit);
  text.title = caption(hit);
  button.append(img, meta, text);
  button.addEventListener("click", () => search({ id: hit.id }, `more like "${caption(hit)}"`));
  li.append(button);
  return li;
}

function render(result, label) {
  const list = $("results");
  list.replaceChildren(...result.hits.map(card));
  $("status").textContent = `${result.hits.length} results for ${label} · snapshot ` +
    `${result.snapshot_id} · ${result.took_ms} ms`;
  const first = list.querySelector("button");
  if (first && document.activeElement === document.body) first.focus({ preventScroll: true });
}

function useFile(file) {
  if (!file) return;
  chosenFile = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  search({ file }, `the photo ${file.name || "pasted"}`);
}

function wire() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    const url = $("image-url").value.trim();
    if (text && !$("text").disabled) search({ text }, `"${text}"`);
    else if (url) search({ image_url: url }, url);
    else if (chosenFile) search({ file: chosenFile }, `the photo ${chosenFile.name}`);
    else showError("Type some text, give an image URL, or drop a photo.");
  });
  $("file").addEventListener("change", () => useFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("file").click();
    }
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])]
      .find((f) => f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      useFile(file);
    }
  });
  for (const id of ["k", "recall"]) {
    $(id).addEventListener("change", () => {
      if (last) search(...last);
    });
  }
}

wire();
loadInfo();
