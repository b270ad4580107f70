// clipsearch web page: plain JS over the HTTP API (/api/openapi.json). No build step, no
// asset from elsewhere.
"use strict";

// Results per request; `/?k=N` overrides it (1..200), handy for small screens and tests.
const PAGE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get("k")) || 40));
// The relevance bar: "auto" unless `/?min_relevance=off` (or a number 0..1) says otherwise.
const MIN_RELEVANCE = new URLSearchParams(location.search).get("min_relevance") || "auto";
// Words and meaning fused ("hybrid") unless the page's address says `?mode=semantic|keyword`.
const INITIAL_MODE = new URLSearchParams(location.search).get("mode") || "hybrid";
const $ = (id) => document.getElementById(id);
const state = { mode: null, text: "", file: null, itemId: null, offset: 0, more: false, busy: false, seq: 0, weaker: false };

// -- the API, with the key asked for once when the server wants one ------------------------

async function api(path, options = {}, retried = false) {
  const response = await fetch(path, options);
  if (response.status === 401 && !retried) {
    const key = window.prompt("This server needs its API key:");
    if (key) {
      document.cookie = `clipsearch_key=${encodeURIComponent(key)}; path=/; SameSite=Strict`;
      return api(path, options, true);
    }
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

function filterParams() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const name of ["folder", "taken_after", "taken_before"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  for (const tag of String(form.get("tag") || "").split(",")) {
    if (tag.trim()) params.append("tag", tag.trim());
  }
  return params;
}

function request(offset) {
  const params = filterParams();
  params.set("k", PAGE);
  params.set("offset", offset);
  // "auto": only hits that clear the calibrated bar; 0 keeps every hit (with its relevance).
  params.set("min_relevance", state.weaker ? "0" : MIN_RELEVANCE);
  params.set("sort", $("sort").value);
  if (state.mode === "image") {
    if (state.text) params.set("text", state.text);
    const body = new FormData();
    body.append("file", state.file);
    return api(`/api/search/image?${params}`, { method: "POST", body });
  }
  if (state.mode === "similar") return api(`/api/items/${state.itemId}/similar?${params}`);
  params.set("q", state.text);
  params.set("mode", $("mode").value);
  return api(`/api/search?${params}`);
}

// -- searching and showing results ---------------------------------------------------------

async function run(offset = 0) {
  if (!state.mode) {  // nothing left to search by (the example cleared, the box empty)
    ++state.seq;
    $("results").replaceChildren();
    message("");
    $("more").hidden = true;
    return;
  }
  if (state.busy && offset > 0) return;
  const seq = ++state.seq;
  state.busy = true;
  if (offset === 0) {
    $("results").replaceChildren();
    message("Searching…");
  }
  try {
    const page = await request(offset);
    if (seq !== state.seq) return; // a newer search started meanwhile
    page.hits.forEach((hit, i) => $("results").append(card(hit, offset + i + 1)));
    state.offset = offset + page.hits.length;
    state.more = page.hits.length === PAGE && state.offset < 1000;
    const count = $("results").children.length;
    message(page.note ? capitalised(page.note) + "." :
      (count ? `${count} result${count === 1 ? "" : "s"} · ${page.took_ms.toFixed(0)} ms` : "No matches."));
    if (page.weaker > 0 && !state.weaker) weakerLink(page.weaker);
  } catch (error) {
    if (seq === state.seq) message(error.message, true);
    state.more = false;
  } finally {
    if (seq === state.seq) state.busy = false;
    $("more").hidden = !state.more;
  }
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// "Show weaker matches": the same search again with no relevance bar.
function weakerLink(count) {
  const link = document.createElement("a");
  link.href = "#";
  link.setAttribute("data-testid", "show-weaker");
  link.textContent = `Show ${count} weaker match${count === 1 ? "" : "es"}`;
  link.addEventListener("click", (e) => {
    e.preventDefault();
    state.weaker = true;
    run(0);
  });
  $("message").append(" ", link);
}

function card(hit, rank) {
  const li = document.createElement("li");
  li.tabIndex = 0;
  li.dataset.id = hit.id;
  li.setAttribute("data-testid", "hit");
  li.title = hit.path;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = basename(hit.path);
  // A video shows the frame that matched.
  const at = hit.time != null ? `&t=${hit.time}` : "";
  img.src = `/api/items/${hit.id}/thumbnail?size=256${at}`;
  img.addEventListener("error", () => li.classList.add("broken")); // e.g. not served (403)
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.innerHTML = `<span class="name"></span><span class="date"></span><span class="score"></span>`;
  caption.querySelector(".name").textContent = `${rank}. ${basename(hit.path)}`;
  if (hit.time != null) {
    const moment = document.createElement("span");
    moment.className = "moment";
    moment.setAttribute("data-testid", "moment");
    moment.textContent = `@ ${clock(hit.time)}`;
    caption.querySelector(".name").after(moment);
  }
  if (hit.taken_at) caption.querySelector(".date").textContent = hit.taken_at.slice(0, 10);
  // Relevance is calibrated (0..1); a raw cosine can be negative and means little alone.
  const score = caption.querySelector(".score");
  if (hit.relevance != null) {
    score.textContent = `${Math.round(hit.relevance * 100)}%`;
    score.title = `relevance ${hit.relevance.toFixed(2)} · cosine ${hit.score.toFixed(3)}`;
  } else {  // the bar is off: the raw cosine, named as such
    score.textContent = `cos ${hit.score.toFixed(3)}`;
  }
  if (hit.relevance != null && hit.relevance < 0.5) li.classList.add("weak");
  li.append(img, caption);
  li.addEventListener("click", () => showDetail(hit.id, hit.time));
  li.addEventListener("keydown", (e) => { if (e.key === "Enter") showDetail(hit.id, hit.time); });
  return li;
}

$("detail").addEventListener("close", () => $("detail-video").pause());

function clock(seconds) {
  const whole = Math.max(0, Math.floor(seconds));
  const two = (n) => String(n).padStart(2, "0");
  return `${two(Math.floor(whole / 3600))}:${two(Math.floor(whole / 60) % 60)}:${two(whole % 60)}`;
}

// A video plays from the moment that matched (the server answers byte ranges, so the
// browser fetches only what it plays).
function showVideo(id, time) {
  const video = $("detail-video");
  video.hidden = false;
  $("detail-original").hidden = true;
  video.onloadedmetadata = () => {
    video.currentTime = time || 0;
    video.play().catch(() => {});  // autoplay refused: the controls are there
  };
  video.src = `/api/items/${id}/file`;
}

async function showDetail(id, time = null) {
  try {
    const item = await api(`/api/items/${id}`);
    const video = $("detail-video");
    video.pause();
    video.hidden = true;
    $("detail-original").hidden = false;
    if (item.duration != null) showVideo(id, time);
    $("detail-image").src = `/api/items/${id}/thumbnail?size=512`;
    $("detail-image").alt = basename(item.path);
    $("detail-original").href = `/api/items/${id}/file`;
    $("detail-name").textContent = basename(item.path);
    const rows = [
      ["Path", item.path], ["Size", `${item.width} × ${item.height} · ${(item.size / 1024).toFixed(0)} KiB`],
      ["Format", item.format || "?"], ["Taken", item.taken_at || "unknown"], ["Id", item.id],
    ];
    if (item.camera) rows.push(["Camera", item.camera]);
    if (item.duration != null) rows.push(["Duration", clock(item.duration)]);
    if (time != null) rows.push(["Matched at", clock(time)]);
    if (item.text_in_photo) rows.push(["Text in photo", item.text_in_photo]);
    $("detail-meta").replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      tr.innerHTML = "<th></th><td></td>";
      tr.firstChild.textContent = k;
      tr.lastChild.textContent = v;
      return tr;
    }));
    $("detail-tags").replaceChildren(...item.tags.map((t) => {
      const span = document.createElement("span");
      span.textContent = t.tag;
      return span;
    }));
    $("more-like-this").onclick = () => {
      $("detail").close();
      setExample(null);
      Object.assign(state, { mode: "similar", itemId: id, weaker: false });
      message(`More like ${basename(item.path)}`);
      run(0);
    };
    $("detail").showModal();
  } catch (error) {
    message(error.message, true);
  }
}

function message(text, isError = false) {
  $("message").textContent = text;
  $("message").style.color = isError ? "#b00020" : "";
}

const basename = (path) => path.split(/[\\/]/).pop();

// -- example images: picked or dropped -----------------------------------------------------

function setExample(file) {
  state.file = file;
  $("example").hidden = !file;
  if (file) {
    $("example-preview").src = URL.createObjectURL(file);
    $("example-name").textContent = ` (${file.name})`;
  }
}

function searchByExample(file) {
  setExample(file);
  Object.assign(state, { mode: "image", text: $("q").value.trim(), weaker: false });
  run(0);
}

$("image-input").addEventListener("change", (e) => {
  if (e.target.files[0]) searchByExample(e.target.files[0]);
  e.target.value = "";
});
$("clear-example").addEventListener("click", () => {
  setExample(null);
  state.mode = $("q").value.trim() ? "text" : null;
  state.weaker = false;
  run(0);
});
let dragDepth = 0;
window.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; $("drop-overlay").hidden = false; });
window.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; $("drop-overlay").hidden = true; } });
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  $("drop-overlay").hidden = true;
  const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) searchByExample(file);
});

// -- the search form, filters, paging ------------------------------------------------------

// What the box and the example image ask for now (not what the last search asked).
function takeForm() {
  const text = $("q").value.trim();
  state.weaker = false;
  if (state.file) Object.assign(state, { mode: "image", text });
  else if (text) Object.assign(state, { mode: "text", text });
  else if (state.mode !== "similar") return false;
  const url = new URL(location.href);
  if (text) url.searchParams.set("q", text);
  else url.searchParams.delete("q");
  history.replaceState(null, "", url);
  return true;
}

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (takeForm()) run(0);
});
$("toggle-filters").addEventListener("click", () => {
  $("filters").hidden = !$("filters").hidden;
  $("toggle-filters").setAttribute("aria-expanded", String(!$("filters").hidden));
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); takeForm(); run(0); });
$("filters").addEventListener("reset", () => setTimeout(() => run(0)));
$("more").addEventListener("click", () => run(state.offset));
$("sort").addEventListener("change", () => { if (state.mode) run(0); });
$("mode").value = INITIAL_MODE;
$("mode").addEventListener("change", () => { if (state.mode) run(0); });
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && state.more && !state.busy) run(state.offset);
}).observe($("more-sentinel"));

// -- status line and indexing jobs ---------------------------------------------------------

let wasIndexing = false;
async function refreshStatus() {
  let delay = 10000;
  try {
    const s = await api("/api/stats");
    let line = `${s.count.toLocaleString()} images · ${s.texts.toLocaleString()} texts · ${s.model || "no model yet"} · ${s.index_type}`;
    if (s.job) {
      line += ` · indexing (${s.job.phase || s.job.state}) ${s.job.done}/${s.job.total}`;
      delay = 1500;
    } else if (wasIndexing) {
      const last = (await api("/api/jobs"))[0];
      if (last) line += last.state === "failed" ? ` · indexing failed: ${last.error}` : " · indexing done";
    }
    wasIndexing = Boolean(s.job);
    $("status").textContent = line;
  } catch (error) {
    $("status").textContent = `status unavailable: ${error.message}`;
  }
  setTimeout(refreshStatus, delay);
}

$("index-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const path = new FormData(e.target).get("path").trim();
  if (!path) return;
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ paths: [path] }),
    });
    $("status").textContent = `indexing job ${job.id} started`;
    wasIndexing = true;
  } catch (error) {
    message(error.message, true);
  }
});

refreshStatus();
const initial = new URLSearchParams(location.search).get("q");
if (initial) {
  $("q").value = initial;
  Object.assign(state, { mode: "text", text: initial });
  run(0);
}
