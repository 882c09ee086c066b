// The web inspector of `illumitunnel listen`: a live, filtered, paged list of the capture store
// and one delivery's details, replay, edit-and-replay, copy as curl and test runs. Plain DOM
// code with no build step: text a sender controls only ever reaches the page through
// textContent (never innerHTML), with control and bidi characters made visible as the
// terminal inspector shows them.
"use strict";

const TOKEN = document.querySelector('meta[name="illumitunnel-token"]').content;
/** Rows fetched per page: the store may hold 100,000; the page never asks for all of them. */
const PAGE = 100;
/** Children of one JSON node drawn before a "… N more" line. */
const TREE_CHILDREN = 500;
/** Bytes of a binary body shown as hex. */
const HEX_BYTES = 64 * 1024;
const HOUR_MS = 3600 * 1000;
/** Header names whose values stay hidden until revealed (as headers::is_secret decides). */
const SECRET_WORDS = ["token", "secret", "signature", "key"];
/** What the API shows for a secret value not yet revealed; sent back, it keeps the stored one. */
const HIDDEN = "REDACTED";

const state = {
  items: [], // loaded summaries, newest first
  byId: new Map(),
  cursor: null,
  more: true,
  loading: false,
  generation: 0, // bumped when the filters change, so late pages of old filters are dropped
  selectedId: null,
  openId: null,
  detail: null,
  revealed: false,
  filters: { event: "", status: "", q: "" },
  events: new Set(),
  timeline: new Map(), // id → {t, ms} of the last hour
  firstPage: false,
  pending: [], // stream events that came before the first page
  stream: null,
  timelineCapped: false,
};

const $ = (id) => document.getElementById(id);

/** An element with a class and text (text is never parsed as HTML). */
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) appendText(node, String(text));
  return node;
}

function button(label, onClick, cls) {
  const b = el("button", cls, label);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// ---- hostile text --------------------------------------------------------------------------

/** Whether a code point must be shown escaped (src/escape.rs `is_unsafe`). */
function isUnsafe(c) {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) ||
    (c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
    (c >= 0x2060 && c <= 0x2069) || c === 0xfeff || (c >= 0xfff9 && c <= 0xfffb);
}

/** How the terminal spells an unsafe character: `^[` for ESC, `\u{202e}` for a bidi mark. */
function spell(c) {
  if (c < 0x20) return "^" + String.fromCharCode(c + 0x40);
  if (c === 0x7f) return "^?";
  return "\\u{" + c.toString(16) + "}";
}

/** Appends `s` to `parent` as text, each unsafe character as a marked, visible spelling;
 * characters in `keep` (newline and tab in bodies) stay as they are. */
function appendText(parent, s, keep = "") {
  let run = "";
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (isUnsafe(c) && !keep.includes(ch)) {
      if (run) parent.appendChild(document.createTextNode(run));
      run = "";
      const mark = document.createElement("span");
      mark.className = "ctl";
      mark.textContent = spell(c);
      parent.appendChild(mark);
    } else {
      run += ch;
    }
  }
  if (run) parent.appendChild(document.createTextNode(run));
  return parent;
}

/** `s` with unsafe characters spelled out, for titles and plain strings. */
function visible(s) {
  let out = "";
  for (const ch of String(s)) {
    const c = ch.codePointAt(0);
    out += isUnsafe(c) ? spell(c) : ch;
  }
  return out;
}

// ---- API -----------------------------------------------------------------------------------

/** Calls the local API; POSTs carry the per-process token. Throws the server's sentence. */
async function api(path, method = "GET", body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-Illumitunnel-Token"] = TOKEN;
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "same-origin",
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!res.ok) throw new Error((data && data.error) || res.status + " " + res.statusText);
  return data;
}

/** The filters as query parameters; the list, the stream and the timeline all take them. */
function filterParams() {
  const p = new URLSearchParams();
  const f = state.filters;
  if (f.event) p.set("event", f.event);
  if (f.status) p.set("status", f.status);
  if (f.q) p.set("q", f.q);
  return p;
}

function listQuery(cursor) {
  const p = filterParams();
  p.set("limit", String(PAGE));
  if (cursor) p.set("cursor", cursor);
  return "/api/deliveries?" + p.toString();
}

// ---- the list ------------------------------------------------------------------------------

function statusClass(status) {
  if (status === null || status === undefined) return "st-err";
  return "st-" + Math.floor(status / 100) + "xx";
}

/** The marks of a summary: duplicate, retry, trigger, replay, skipped, queued. */
function marks(d) {
  const out = [];
  if (d.duplicate) out.push(["dup", "duplicate: an earlier delivery of this event was answered"]);
  if (d.retry) out.push(["retry " + d.retry, "IllumiChat's retry number " + d.retry]);
  if (d.source === "trigger") out.push(["trigger", "made up by illumitunnel trigger"]);
  if (d.source === "replay") out.push(["replay", "replay of " + (d.replay_of || "a delivery")]);
  if (d.skipped) out.push(["skipped", "filtered out by --events: answered 200, not forwarded"]);
  if (d.queued) out.push(["queued", "waited in the relay's offline queue"]);
  return out;
}

function clock(iso) {
  const t = new Date(iso);
  if (isNaN(t)) return "";
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds()) + "." +
    pad(t.getMilliseconds(), 3);
}

function rowFor(d) {
  const row = el("div", "row");
  row.setAttribute("role", "option");
  row.dataset.id = d.id;
  row.appendChild(el("span", "time", clock(d.received_at)));
  const m = el("span", "marks");
  for (const [label, title] of marks(d)) {
    const badge = el("span", "mark mark-" + label.split(" ")[0], label);
    badge.title = title;
    m.appendChild(badge);
  }
  row.appendChild(m);
  const req = el("span", "req");
  req.appendChild(el("b", null, d.method));
  req.appendChild(document.createTextNode(" "));
  appendText(req, d.path);
  row.appendChild(req);
  row.appendChild(el("span", "event", d.event || "-"));
  const st = el("span", "status " + statusClass(d.status), d.status == null ? "ERR" : d.status);
  if (d.error) st.title = visible(d.error);
  row.appendChild(st);
  row.appendChild(el("span", "num", Number(d.duration_ms || 0).toFixed(1)));
  row.addEventListener("click", () => {
    select(d.id);
    openDetail(d.id);
  });
  if (d.id === state.selectedId) row.classList.add("selected");
  return row;
}

/** Adds an event type to the filter's choices (IllumiChat's six are there from the start). */
function noteEvent(d) {
  if (!d.event || state.events.has(d.event)) return;
  state.events.add(d.event);
  const opt = document.createElement("option");
  opt.value = d.event;
  opt.textContent = visible(d.event);
  $("f-event").appendChild(opt);
}

function updateFoot() {
  const foot = $("list-foot");
  foot.textContent = state.loading ? "loading…" :
    state.more ? "scroll for older deliveries" :
    state.items.length ? "that is all" : "no deliveries match";
  $("count").textContent = state.items.length + (state.more ? "+" : "") + " shown";
}

/** Loads the next page of older deliveries for the current filters. */
async function loadMore() {
  if (state.loading || !state.more) return;
  state.loading = true;
  updateFoot();
  const generation = state.generation;
  try {
    const page = await api(listQuery(state.cursor));
    if (generation !== state.generation) return;
    const list = $("list");
    const frag = document.createDocumentFragment();
    for (const d of page.deliveries || []) {
      noteEvent(d);
      if (state.byId.has(d.id)) continue;
      state.byId.set(d.id, d);
      state.items.push(d);
      frag.appendChild(rowFor(d));
    }
    list.appendChild(frag);
    state.cursor = page.next_cursor || null;
    state.more = Boolean(page.next_cursor);
    if (!performance.getEntriesByName("rows-rendered").length) performance.mark("rows-rendered");
  } catch (e) {
    toast(e.message);
    state.more = false;
  } finally {
    if (generation === state.generation) state.loading = false;
    updateFoot();
  }
}

/** Starts the list over for the current filters: the filtered stream first, so that nothing
 * committed between the first page and the stream is missed, then the first page. */
function reload() {
  state.generation++;
  state.items = [];
  state.byId = new Map();
  state.cursor = null;
  state.more = true;
  state.loading = false;
  state.firstPage = false;
  state.pending = [];
  state.timeline = new Map();
  $("list").replaceChildren();
  updateFoot();
  connectStream(state.generation);
}

/** A delivery committed after the stream opened: at the top of the list. Until the first
 * page is in, they wait, so the list stays newest first. */
function onNew(d) {
  if (!state.firstPage) {
    state.pending.push(d);
    return;
  }
  noteEvent(d);
  state.timeline.set(d.id, { t: Date.parse(d.received_at) || Date.now(), ms: d.duration_ms || 0 });
  drawSoon();
  if (state.byId.has(d.id)) return;
  state.byId.set(d.id, d);
  state.items.unshift(d);
  const list = $("list");
  list.insertBefore(rowFor(d), list.firstChild);
  updateFoot();
}

/** The first page of a generation: then what the stream sent meanwhile, then the timeline. */
async function loadFirst(generation) {
  await loadMore();
  if (generation !== state.generation) return;
  state.firstPage = true;
  const waiting = state.pending;
  state.pending = [];
  waiting.forEach(onNew);
  loadTimeline(generation);
}

function rowOf(id) {
  return $("list").querySelector('.row[data-id="' + CSS.escape(id) + '"]');
}

function select(id) {
  const old = state.selectedId && rowOf(state.selectedId);
  if (old) old.classList.remove("selected");
  state.selectedId = id;
  const row = id && rowOf(id);
  if (row) {
    row.classList.add("selected");
    row.scrollIntoView({ block: "nearest" });
  }
}

/** Moves the selection by `step` rows; loads older rows at the end of the list. */
async function move(step) {
  let i = state.items.findIndex((d) => d.id === state.selectedId);
  i = i < 0 ? 0 : i + step;
  if (i >= state.items.length && state.more) await loadMore();
  i = Math.max(0, Math.min(i, state.items.length - 1));
  if (state.items[i]) select(state.items[i].id);
}

function onScroll() {
  const list = $("list");
  if (list.scrollTop + list.clientHeight > list.scrollHeight - 300) loadMore();
}

// ---- the live stream -----------------------------------------------------------------------

/** Follows `/api/stream` with the current filters. The browser reconnects by itself and sends
 * the last event's id, from which the server goes on, so a dropped stream loses nothing. */
function connectStream(generation) {
  if (state.stream) state.stream.close();
  const live = $("live");
  const query = filterParams().toString();
  const stream = new EventSource("/api/stream" + (query ? "?" + query : ""));
  state.stream = stream;
  let started = false;
  const start = () => {
    if (started || generation !== state.generation) return;
    started = true;
    loadFirst(generation);
  };
  stream.addEventListener("open", () => {
    live.textContent = "live";
    live.className = "live on";
    start();
  });
  stream.addEventListener("error", () => {
    live.textContent = stream.readyState === EventSource.CLOSED ? "stopped" : "reconnecting";
    live.className = "live off";
    // A stream the server refused: the list says why.
    if (stream.readyState === EventSource.CLOSED) start();
  });
  stream.addEventListener("delivery", (e) => {
    if (generation !== state.generation) return;
    let d;
    try {
      d = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    onNew(d);
  });
}

// ---- details -------------------------------------------------------------------------------

function isSecretName(name) {
  const n = name.toLowerCase();
  return n === "authorization" || n === "cookie" || n === "set-cookie" ||
    n.startsWith("proxy-") || SECRET_WORDS.some((w) => n.includes(w));
}

function headerValue(headers, name) {
  const h = (headers || []).find(([n]) => n.toLowerCase() === name);
  return h ? h[1] : null;
}

async function openDetail(id, revealed = false) {
  state.openId = id;
  try {
    const q = revealed ? "?include_secrets=true" : "";
    const d = await api("/api/deliveries/" + encodeURIComponent(id) + q);
    if (state.openId !== id) return;
    state.detail = d;
    state.revealed = revealed;
    renderDetail(d);
  } catch (e) {
    toast(e.message);
  }
}

function section(title) {
  const s = el("section", "block");
  s.appendChild(el("h3", null, title));
  return s;
}

function renderDetail(d) {
  const pane = $("details");
  pane.replaceChildren();
  const title = el("h2", "title");
  title.appendChild(el("b", null, d.request ? d.request.method : d.method));
  title.appendChild(document.createTextNode(" "));
  appendText(title, d.path);
  title.appendChild(el("span", "status " + statusClass(d.status), d.status == null ? "ERR" : d.status));
  pane.appendChild(title);

  const actions = el("div", "actions");
  const action = (id, label, onClick, cls) => {
    const b = button(label, onClick, cls);
    b.id = id;
    actions.appendChild(b);
  };
  action("btn-replay", "Replay (r)", () => replay(d.id), "primary");
  action("btn-edit", "Edit and replay (e)", () => showEdit(d));
  action("btn-curl", "Copy as curl", () => copyCurl(d));
  action("btn-test", "Test", () => runTest([d.id]));
  if (!state.revealed) action("btn-reveal", "Reveal secrets", () => openDetail(d.id, true));
  pane.appendChild(actions);

  const req = d.request || {};
  const facts = el("dl", "facts");
  const fact = (k, v) => {
    if (v === null || v === undefined || v === "") return;
    facts.appendChild(el("dt", null, k));
    facts.appendChild(el("dd", null, v));
  };
  fact("id", d.id);
  fact("received", d.received_at);
  fact("event", d.event);
  fact("resource id", d.resource_id);
  fact("sender", senderOf(req));
  fact("marks", marks(d).map(([m]) => m).join(", "));
  if (d.replay_of) {
    facts.appendChild(el("dt", null, "replay of"));
    const dd = el("dd");
    dd.appendChild(button(d.replay_of, () => {
      select(d.replay_of);
      openDetail(d.replay_of);
    }, "link"));
    facts.appendChild(dd);
  }
  fact("latency", Number(d.duration_ms || 0).toFixed(2) + " ms");
  fact("forwarded to", d.target);
  fact("error", d.error);
  pane.appendChild(facts);

  const extra = el("div", "extra");
  extra.id = "extra";
  pane.appendChild(extra);

  const reqSec = section("Request");
  reqSec.appendChild(headersTable(req.headers, d.id));
  reqSec.appendChild(bodyView(req));
  reqSec.appendChild(rawLink(d.id, "request"));
  pane.appendChild(reqSec);

  const resSec = section("Response");
  if (d.response) {
    resSec.appendChild(el("p", "status " + statusClass(d.response.status), "status " + d.response.status));
    resSec.appendChild(headersTable(d.response.headers, d.id));
    resSec.appendChild(bodyView(d.response));
    resSec.appendChild(rawLink(d.id, "response"));
  } else {
    resSec.appendChild(el("p", "st-err", "no answer: " + (d.error || "none recorded")));
  }
  pane.appendChild(resSec);

  const rawSec = section("Raw request, as it went to the handler");
  rawSec.appendChild(appendText(el("pre", "raw"), rawRequest(req), "\n\t"));
  pane.appendChild(rawSec);
}

/** The sender's address: the first of the relay's `X-Forwarded-For`. */
function senderOf(req) {
  const forwarded = headerValue(req.headers, "x-forwarded-for");
  return forwarded ? forwarded.split(",")[0].trim() : null;
}

function headersTable(headers, id) {
  const table = el("table", "headers");
  for (const [name, value] of headers || []) {
    const tr = el("tr");
    tr.appendChild(el("th", null, name));
    const td = el("td");
    if ((isSecretName(name) || value === HIDDEN) && !state.revealed) {
      td.appendChild(button("hidden — click to reveal", () => openDetail(id, true), "secret"));
    } else {
      appendText(td, value);
    }
    tr.appendChild(td);
    table.appendChild(tr);
  }
  if (!table.firstChild) return el("p", "muted", "no headers");
  return table;
}

function rawRequest(req) {
  const lines = [(req.method || "") + " " + (req.path || "") + (req.query ? "?" + req.query : "") + " HTTP/1.1"];
  for (const [name, value] of req.headers || []) {
    lines.push(name + ": " + (isSecretName(name) && !state.revealed ? HIDDEN : value));
  }
  const body = req.body_base64 !== undefined ? "(" + base64Bytes(req.body_base64).length + " bytes of binary, shown as hex above)" : (req.body || "");
  return lines.join("\n") + "\n\n" + body;
}

// ---- bodies --------------------------------------------------------------------------------

function base64Bytes(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** A link that downloads the body's exact bytes (`GET /api/deliveries/{id}/body`). */
function rawLink(id, part) {
  const a = el("a", "raw-link", "download the " + part + " body as recorded");
  a.href = "/api/deliveries/" + encodeURIComponent(id) + "/body?part=" + part;
  a.download = id + "-" + part + ".bin";
  return a;
}

function bodyView(part) {
  const box = el("div", "body");
  if (part.body_base64 !== undefined && part.body_base64 !== null) {
    box.appendChild(hexDump(base64Bytes(part.body_base64)));
    return box;
  }
  const text = part.body || "";
  if (!text) {
    box.appendChild(el("p", "muted", "empty body"));
    return box;
  }
  const type = (headerValue(part.headers, "content-type") || "").toLowerCase();
  const looksJson = type.includes("json") || /^\s*[[{]/.test(text);
  if (!looksJson) {
    box.appendChild(appendText(el("pre", "text"), text, "\n\t"));
    return box;
  }
  const parsed = parseJson(text);
  if (parsed.error) {
    box.appendChild(el("p", "st-err", "not valid JSON: " + parsed.error.message + " at line " +
      parsed.error.line + ", column " + parsed.error.column));
    const pre = el("pre", "text");
    appendText(pre, text.slice(0, parsed.error.at), "\n\t");
    const bad = el("mark", "json-error");
    appendText(bad, text.slice(parsed.error.at, parsed.error.at + 1) || "⏎", "\t");
    pre.appendChild(bad);
    appendText(pre, text.slice(parsed.error.at + 1), "\n\t");
    box.appendChild(pre);
    return box;
  }
  const tools = el("div", "tree-tools");
  const tree = el("div", "tree");
  tree.appendChild(treeNode(null, parsed.value, 0));
  tools.appendChild(button("expand all", () => setOpen(tree, true), "small"));
  tools.appendChild(button("collapse all", () => setOpen(tree, false), "small"));
  box.appendChild(tools);
  box.appendChild(tree);
  return box;
}

function hexDump(bytes) {
  const pre = el("pre", "hex");
  const lines = [];
  const n = Math.min(bytes.length, HEX_BYTES);
  for (let off = 0; off < n; off += 16) {
    const chunk = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(off.toString(16).padStart(8, "0") + "  " + hex.padEnd(47) + "  " + ascii);
  }
  if (bytes.length > n) lines.push("… " + (bytes.length - n) + " more bytes");
  pre.textContent = bytes.length + " bytes, binary\n" + lines.join("\n");
  return pre;
}

/** A JSON parser that keeps key order and numbers' spelling and says where an error is:
 * {value} or {error: {message, at, line, column}}. Nodes: {t, v} with t one of
 * object (v: [[key, node]…]), array (v: [node…]), string, number, literal. */
function parseJson(text) {
  let i = 0;
  const fail = (message) => {
    throw { message, at: i };
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const string = () => {
    i++; // opening quote
    let out = "";
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text[i];
      if (c === '"') {
        i++;
        return out;
      }
      if (c === "\\") {
        const e = text[i + 1];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
        if (e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          i++;
          fail("bad escape in a string");
        }
      } else if (c.charCodeAt(0) < 0x20) {
        fail("control character in a string");
      } else {
        out += c;
        i++;
      }
    }
  };
  const value = (depth) => {
    if (depth > 500) fail("nested more than 500 deep");
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const entries = [];
      ws();
      if (text[i] === "}") {
        i++;
        return { t: "object", v: entries };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a quoted key");
        const key = string();
        ws();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        entries.push([key, value(depth + 1)]);
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "}") {
          i++;
          return { t: "object", v: entries };
        } else fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const items = [];
      ws();
      if (text[i] === "]") {
        i++;
        return { t: "array", v: items };
      }
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "]") {
          i++;
          return { t: "array", v: items };
        } else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return { t: "string", v: string() };
    const num = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (num && num[0]) {
      i += num[0].length;
      return { t: "number", v: num[0] };
    }
    for (const lit of ["true", "false", "null"]) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return { t: "literal", v: lit };
      }
    }
    fail(i >= text.length ? "unexpected end" : "unexpected character");
  };
  try {
    const v = value(0);
    ws();
    if (i < text.length) fail("text after the JSON value");
    return { value: v };
  } catch (e) {
    if (!e || e.at === undefined) throw e;
    const before = text.slice(0, e.at);
    const line = before.split("\n").length;
    const column = e.at - before.lastIndexOf("\n");
    return { error: { message: e.message, at: e.at, line, column } };
  }
}

/** One JSON node; objects and arrays are <details> whose children are drawn on first open. */
function treeNode(key, node, depth) {
  const keyPart = (parent) => {
    if (key === null) return;
    const k = el("span", "j-key");
    appendText(k, typeof key === "number" ? String(key) : JSON.stringify(key));
    parent.appendChild(k);
    parent.appendChild(document.createTextNode(": "));
  };
  if (node.t !== "object" && node.t !== "array") {
    const leaf = el("div", "j-leaf");
    keyPart(leaf);
    const cls = node.t === "string" ? "j-str" : node.t === "number" ? "j-num" : "j-lit";
    const span = el("span", cls);
    appendText(span, node.t === "string" ? '"' + node.v + '"' : node.v);
    leaf.appendChild(span);
    return leaf;
  }
  const isObj = node.t === "object";
  const box = el("details", "j-node");
  const summary = el("summary");
  keyPart(summary);
  summary.appendChild(el("span", "j-punct", isObj ? "{" : "["));
  const count = node.v.length;
  summary.appendChild(el("span", "j-count", count + (isObj ? (count === 1 ? " key" : " keys") : (count === 1 ? " item" : " items"))));
  box.appendChild(summary);
  let drawn = false;
  const draw = () => {
    if (drawn) return;
    drawn = true;
    const kids = el("div", "j-kids");
    node.v.slice(0, TREE_CHILDREN).forEach((child, n) => {
      kids.appendChild(isObj ? treeNode(child[0], child[1], depth + 1) : treeNode(n, child, depth + 1));
    });
    if (count > TREE_CHILDREN) kids.appendChild(el("div", "muted", "… " + (count - TREE_CHILDREN) + " more"));
    box.appendChild(kids);
    box.appendChild(el("span", "j-punct", isObj ? "}" : "]"));
  };
  box.addEventListener("toggle", () => {
    if (box.open) draw();
  });
  if (depth === 0) {
    box.open = true;
    draw();
  }
  return box;
}

function setOpen(tree, open) {
  // Opening draws children, which may hold more closed nodes: a few passes, bounded.
  for (let pass = 0; pass < (open ? 8 : 1); pass++) {
    const nodes = tree.querySelectorAll(open ? "details:not([open])" : "details[open]");
    if (!nodes.length) break;
    nodes.forEach((n) => {
      if (open || n !== tree.firstChild) n.open = open;
    });
  }
}

// ---- actions -------------------------------------------------------------------------------

function toast(message) {
  const t = $("toast");
  t.textContent = visible(message);
  t.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add("hidden"), 5000);
}

/** Adds a delivery the API just returned (it also arrives on the stream) and opens it. */
function adopt(d) {
  onNew(d);
  select(d.id);
  openDetail(d.id);
}

async function replay(id, changes) {
  try {
    const d = await api("/api/deliveries/" + encodeURIComponent(id) + "/replay", "POST", changes);
    toast("replayed as " + d.id + " → " + (d.status == null ? "no answer" : d.status));
    adopt(d);
  } catch (e) {
    toast("replay failed: " + e.message);
  }
}

function showEdit(d) {
  const extra = $("extra");
  extra.replaceChildren();
  const req = d.request || {};
  const form = el("form", "edit");
  form.id = "edit-form";
  const field = (label, input) => {
    const l = el("label", null, label);
    l.appendChild(input);
    form.appendChild(l);
    return input;
  };
  const method = field("method", el("input"));
  method.id = "edit-method";
  method.value = req.method || "POST";
  const path = field("path", el("input"));
  path.id = "edit-path";
  path.value = (req.path || "/") + (req.query ? "?" + req.query : "");
  const headers = field("headers, one “name: value” a line (" + HIDDEN + " keeps a hidden value)", el("textarea"));
  headers.id = "edit-headers";
  headers.rows = 6;
  headers.value = (req.headers || []).map(([n, v]) =>
    n + ": " + (isSecretName(n) && !state.revealed ? HIDDEN : v)).join("\n");
  const body = field("body", el("textarea"));
  body.id = "edit-body";
  body.rows = 8;
  const binary = req.body_base64 !== undefined && req.body_base64 !== null;
  body.value = binary ? "" : req.body || "";
  body.disabled = binary;
  body.placeholder = binary ? "binary body: sent as recorded" : "";
  const row = el("div", "actions");
  const send = el("button", "primary", "Send");
  send.type = "submit";
  send.id = "edit-send";
  row.appendChild(send);
  row.appendChild(button("Cancel", () => extra.replaceChildren()));
  form.appendChild(row);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    extra.replaceChildren();
    replay(d.id, edits(req, method.value, path.value, headers.value, binary ? null : body.value));
  });
  extra.appendChild(form);
  method.focus();
}

/** The replay body for what the edit form holds: only what changed. Each header line sets
 * that header (every header of the name); a header whose line was removed is sent as null. */
function edits(req, method, path, headerText, body) {
  const out = {};
  const wasPath = (req.path || "/") + (req.query ? "?" + req.query : "");
  if (method.trim() && method.trim() !== req.method) out.method = method.trim();
  if (path.trim() && path.trim() !== wasPath) out.path = path.trim();
  const headers = {};
  const kept = new Set();
  const before = new Map((req.headers || []).map(([n, v]) => [n.toLowerCase(), v]));
  for (const line of headerText.split("\n")) {
    const at = line.indexOf(":");
    if (at <= 0) continue;
    const name = line.slice(0, at).trim();
    const value = line.slice(at + 1).trim();
    kept.add(name.toLowerCase());
    if (before.get(name.toLowerCase()) !== value) headers[name] = value;
  }
  for (const [name] of req.headers || []) {
    if (!kept.has(name.toLowerCase())) headers[name] = null;
  }
  if (Object.keys(headers).length) out.headers = headers;
  if (body !== null && body !== (req.body || "")) out.body = body;
  return out;
}

/** Single-quotes `s` for a POSIX shell. */
function quote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

/** `curl` resending the request to where it was forwarded (as the terminal's `c` does). */
function curlCommand(d) {
  const req = d.request || {};
  const url = d.target || req.path + (req.query ? "?" + req.query : "");
  const parts = ["curl -X " + quote(req.method) + " " + quote(url)];
  for (const [name, value] of req.headers || []) {
    if (["host", "content-length"].includes(name.toLowerCase())) continue;
    parts.push("-H " + quote(name + ": " + value));
  }
  if (req.body_base64) parts.push("--data-binary @body.bin");
  else if (req.body) parts.push("--data-binary " + quote(req.body));
  return parts.join(" ");
}

async function copyCurl(d) {
  let full = d;
  try {
    full = await api("/api/deliveries/" + encodeURIComponent(d.id) + "?include_secrets=true");
  } catch (e) {
    toast(e.message);
  }
  const text = curlCommand(full);
  const extra = $("extra");
  extra.replaceChildren();
  const block = section("curl");
  const pre = appendText(el("pre", "curl"), curlCommand(state.revealed ? full : d), "\n\t");
  pre.id = "curl";
  block.appendChild(pre);
  extra.appendChild(block);
  try {
    await navigator.clipboard.writeText(text);
    toast("curl command copied");
  } catch (_) {
    toast("the browser refused the clipboard: select the command below");
  }
}

/** Replays `ids` and shows the JSON-aware comparison `illumitunnel test` prints. */
async function runTest(ids) {
  const extra = $("extra");
  extra.replaceChildren(el("p", "muted", "testing…"));
  let result;
  try {
    result = await api("/api/test", "POST", { ids });
  } catch (e) {
    extra.replaceChildren(el("p", "st-err", "test failed to run: " + e.message));
    return;
  }
  const cases = Array.isArray(result) ? result : result.cases || result.results || [];
  const block = section("Test run");
  block.id = "test-run";
  for (const c of cases) {
    const head = el("p", "case");
    head.appendChild(el("span", c.passed ? "verdict pass" : "verdict fail", c.passed ? "PASS" : "FAIL"));
    appendText(head, " " + (c.event || c.method || "") + " " + (c.path || "") + "  expected " +
      c.expected_status + ", got " + (c.status == null ? "no answer" : c.status) + "  " +
      Number(c.duration_ms || 0).toFixed(1) + " ms");
    block.appendChild(head);
    if (c.diff) {
      const pre = el("pre", "diff");
      for (const line of c.diff.replace(/\n$/, "").split("\n")) {
        const t = line.trimStart();
        const cls = t.startsWith("+") ? "add" : t.startsWith("-") ? "del" : t.startsWith("changed:") ? "note" : null;
        pre.appendChild(appendText(el("span", cls ? "d-" + cls : "d-same"), line || " ", "\t"));
      }
      block.appendChild(pre);
    } else if (c.error) {
      block.appendChild(el("p", "st-err", c.error));
    }
  }
  if (!cases.length) block.appendChild(el("p", "muted", "no comparisons"));
  extra.replaceChildren(block);
}

// ---- timeline ------------------------------------------------------------------------------

/** The last hour's deliveries for the current filters, at most 5,000 (then the note says "≥"). */
async function loadTimeline(generation) {
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const p = filterParams();
    p.set("since", "1h");
    p.set("limit", "500");
    if (cursor) p.set("cursor", cursor);
    let res;
    try {
      res = await api("/api/deliveries?" + p.toString());
    } catch (_) {
      return;
    }
    if (generation !== state.generation) return;
    for (const d of res.deliveries || []) {
      state.timeline.set(d.id, { t: Date.parse(d.received_at) || 0, ms: d.duration_ms || 0 });
    }
    cursor = res.next_cursor;
    if (!cursor) break;
  }
  state.timelineCapped = Boolean(cursor);
  drawSoon();
}

function drawSoon() {
  if (drawSoon.pending) return;
  drawSoon.pending = true;
  requestAnimationFrame(() => {
    drawSoon.pending = false;
    drawTimeline();
  });
}

/** Sixty one-minute bars of deliveries with each minute's median latency as a line. */
function drawTimeline() {
  const canvas = $("timeline");
  const now = Date.now();
  for (const [id, p] of state.timeline) if (p.t <= now - HOUR_MS) state.timeline.delete(id);
  const points = [...state.timeline.values()];
  const buckets = Array.from({ length: 60 }, () => []);
  for (const p of points) {
    const b = 59 - Math.floor((now - p.t) / 60000);
    if (b >= 0 && b < 60) buckets[b].push(p.ms);
  }
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 56;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.body);
  const maxCount = Math.max(1, ...buckets.map((b) => b.length));
  const medians = buckets.map((b) => (b.length ? b.slice().sort((x, y) => x - y)[Math.floor(b.length / 2)] : null));
  const maxMs = Math.max(1, ...medians.filter((m) => m !== null));
  const w = width / 60;
  // A faint line every ten minutes; "now" is the right edge.
  g.fillStyle = css.getPropertyValue("--border").trim() || "#ddd";
  for (let m = 0; m <= 60; m += 10) g.fillRect(Math.min(m * w, width - 1), 0, 1, height);
  g.fillStyle = css.getPropertyValue("--bar").trim() || "#4a7";
  buckets.forEach((b, i) => {
    const h = (b.length / maxCount) * (height - 4);
    g.fillRect(i * w + 1, height - h, Math.max(1, w - 2), h);
  });
  g.strokeStyle = css.getPropertyValue("--line").trim() || "#d70";
  g.lineWidth = 1.5;
  g.beginPath();
  let started = false;
  medians.forEach((m, i) => {
    if (m === null) return;
    const x = i * w + w / 2;
    const y = height - 2 - (m / maxMs) * (height - 6);
    if (started) g.lineTo(x, y);
    else g.moveTo(x, y);
    started = true;
  });
  g.stroke();
  const all = points.map((p) => p.ms).sort((x, y) => x - y);
  const p50 = all.length ? all[Math.floor(all.length / 2)] : 0;
  $("timeline-note").textContent = "last hour: " + (state.timelineCapped ? "≥" : "") + all.length +
    " deliveries (bars: per minute, now at the right) · median latency " + p50.toFixed(1) + " ms (line, peak " +
    maxMs.toFixed(1) + " ms)";
}

// ---- keys and start ------------------------------------------------------------------------

function onKey(e) {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
    if (e.key === "Escape") t.blur();
    return;
  }
  if (e.key === "j" || e.key === "ArrowDown") move(1);
  else if (e.key === "k" || e.key === "ArrowUp") move(-1);
  else if (e.key === "Enter" && state.selectedId && !(t && t.tagName === "BUTTON")) openDetail(state.selectedId);
  else if (e.key === "r" && (state.openId || state.selectedId)) replay(state.openId || state.selectedId);
  else if (e.key === "e" && state.detail) showEdit(state.detail);
  else if (e.key === "/") $("f-q").focus();
  else if (e.key === "Escape") $("extra") && $("extra").replaceChildren();
  else return;
  e.preventDefault();
}

function readFilters() {
  state.filters = {
    event: $("f-event").value,
    status: $("f-status").value,
    q: $("f-q").value.trim(),
  };
  reload();
}

function start() {
  for (const option of $("f-event").options) if (option.value) state.events.add(option.value);
  let timer = null;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(readFilters, 200);
  };
  $("f-event").addEventListener("change", readFilters);
  $("f-q").addEventListener("input", later);
  $("f-status").addEventListener("change", readFilters);
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    readFilters();
  });
  $("list").addEventListener("scroll", onScroll);
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", drawSoon);
  setInterval(drawSoon, 15000);
  reload();
}

start();
