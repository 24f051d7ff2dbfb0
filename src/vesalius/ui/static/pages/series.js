// The Series page: a strip of the series' instances as thumbnails (DICOMweb rendered
// thumbnails), and the chosen instance's tags (GET …/instances/{uid}/tags: DICOM JSON,
// PS3.18 F.2) in a browser with expandable sequences, private tags and a filter box.
import { api, query } from "../api.js";
import { html, raw, render, toast } from "../dom.js";

export const title = "Series";

const PAGE = 200;
const SHOWN_CHARS = 160;
let dictionary = null;

function styles() {
  if (document.getElementById("series-css")) return;
  const link = document.createElement("link");
  link.id = "series-css";
  link.rel = "stylesheet";
  link.href = "/ui/static/pages/series.css";
  document.head.append(link);
}

/** Keyword and name of a tag from the data dictionary (repeating groups by mask). */
async function names() {
  if (!dictionary) {
    const entries = await api("GET", "/api/v1/dictionary");
    const masks = Object.keys(entries).filter((key) => key.includes("x"))
      .map((key) => [new RegExp(`^${key.replace(/x/g, "[0-9A-F]")}$`), entries[key]]);
    dictionary = { entries, masks };
  }
  return dictionary;
}

function describe(tag, creators) {
  const group = parseInt(tag.slice(0, 4), 16);
  const element = parseInt(tag.slice(4), 16);
  if (group % 2 === 1) {
    if (element >= 0x10 && element <= 0xff) return { keyword: "", name: "Private Creator", priv: true };
    const creator = creators[tag.slice(0, 4) + (element >> 8).toString(16).toUpperCase().padStart(4, "0")];
    return { keyword: "", name: creator ? `Private (${creator})` : "Private (no creator)", priv: true };
  }
  const found = dictionary.entries[tag] || dictionary.masks.find(([re]) => re.test(tag))?.[1];
  return found ? { keyword: found[0], name: found[1], priv: false } : { keyword: "", name: "Unknown", priv: false };
}

function shown(attribute) {
  if (attribute.BulkDataURI) return { text: "(bulk data)", link: attribute.BulkDataURI };
  if (attribute.InlineBinary) return { text: `(binary, ${Math.floor(attribute.InlineBinary.length * 3 / 4)} bytes)` };
  const values = attribute.Value || [];
  const text = values.map((v) => {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") return [v.Alphabetic, v.Ideographic, v.Phonetic].filter(Boolean).join("=");
    return String(v);
  }).join("\\");
  return { text };
}

/** The data set as a tree of rows: {id, depth, tag, keyword, name, vr, text, link, priv,
 * children}; item rows for each sequence item. */
function tree(dataset, depth = 0, prefix = "") {
  const creators = {};
  for (const [tag, attribute] of Object.entries(dataset)) {
    const element = parseInt(tag.slice(4), 16);
    if (parseInt(tag.slice(0, 4), 16) % 2 === 1 && element >= 0x10 && element <= 0xff) {
      creators[tag] = attribute.Value?.[0] || "";
    }
  }
  return Object.keys(dataset).sort().map((tag) => {
    const attribute = dataset[tag];
    const id = `${prefix}${tag}`;
    const row = { id, depth, tag, vr: attribute.vr, ...describe(tag, creators) };
    if (attribute.vr === "SQ") {
      const items = attribute.Value || [];
      row.text = `${items.length} item${items.length === 1 ? "" : "s"}`;
      row.children = items.map((item, n) => ({
        id: `${id}/${n}`, depth: depth + 1, tag: "", vr: "", keyword: "", name: `Item ${n + 1}`,
        text: "", item: true, priv: row.priv, children: tree(item, depth + 2, `${id}/${n}/`),
      }));
    } else {
      Object.assign(row, shown(attribute));
    }
    return row;
  });
}

function matches(row, needle) {
  return [row.tag, row.keyword, row.name, row.text, row.vr].some((v) => (v || "").toLowerCase().includes(needle));
}

/** The rows to show, in order, given what is expanded, the filter and the private switch. */
function visible(rows, state, out = []) {
  for (const row of rows) {
    if (row.priv && !state.showPrivate) continue;
    const kids = row.children ? visible(row.children, state, []) : [];
    if (state.filter) {
      const self = matches(row, state.filter);
      if (!self && kids.length === 0) continue;
      out.push({ row, open: kids.length > 0 });
      out.push(...kids);
    } else {
      const open = row.item || state.open.has(row.id);  // a sequence opens onto its items' attributes
      out.push({ row, open });
      if (open) out.push(...kids);
    }
  }
  return out;
}

function tagText(tag) { return tag ? `(${tag.slice(0, 4)},${tag.slice(4)})` : ""; }

function tagRows(rows, state) {
  return visible(rows, state).map(({ row, open }) => {
    const indent = raw(`style="padding-left:${0.5 + row.depth * 1.25}rem"`);
    const toggle = row.children && !row.item
      ? html`<button type="button" class="toggle secondary outline" data-id="${row.id}"
          aria-expanded="${open ? "true" : "false"}"
          aria-label="${open ? "Collapse" : "Expand"} ${row.name}">${open ? "▾" : "▸"}</button>`
      : "";
    const text = row.text && row.text.length > SHOWN_CHARS ? `${row.text.slice(0, SHOWN_CHARS)}…` : row.text;
    const value = row.link
      ? html`<a href="${row.link}" class="bulk" data-name="${row.tag || "bulkdata"}">${text}</a>`
      : html`<span title="${row.text && row.text.length > SHOWN_CHARS ? row.text : ""}">${text}</span>`;
    return html`<tr class="${row.item ? "item" : ""}${row.priv ? " private" : ""}" data-tag="${row.tag}">
      <td ${indent}>${toggle}${row.tag ? html`<code>${tagText(row.tag)}</code>` : ""}</td>
      <td>${row.name}${row.keyword ? html` <small class="muted">${row.keyword}</small>` : ""}</td>
      <td>${row.vr ? html`<code>${row.vr}</code>` : ""}</td>
      <td class="value">${value}</td></tr>`;
  });
}

/** Download a bulk data value: as its bytes where the server can (PS3.18 10.4.1.1.5,
 * single part), else as the multipart/related answer (encapsulated pixel data, by frame). */
async function save(url, name) {
  let answer = await fetch(url, { headers: { Accept: "application/octet-stream" }, credentials: "same-origin" });
  if (answer.status === 406) answer = await fetch(url, { credentials: "same-origin" });
  if (!answer.ok) { toast(`Cannot read the bulk data: HTTP ${answer.status}`, "error"); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await answer.blob());
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function thumb(study, series, item, chosen) {
  const src = `/dicom-web/studies/${study}/series/${series}/instances/${item.sop_instance_uid}/thumbnail?viewport=128,128`;
  const label = `Instance ${item.number ?? "(no number)"}`;
  return html`<li><button type="button" class="thumb" data-uid="${item.sop_instance_uid}"
      aria-pressed="${item.sop_instance_uid === chosen ? "true" : "false"}" aria-label="${label}">
      <img src="${src}" alt="" loading="lazy" width="96" height="96">
      <span>${item.number ?? "–"}</span></button></li>`;
}

function details(item) {
  const size = item.size >= 1048576 ? `${(item.size / 1048576).toFixed(1)} MiB` : `${(item.size / 1024).toFixed(1)} KiB`;
  return html`<dl class="instance-facts">
    <div><dt>Instance</dt><dd>${item.number ?? "–"}</dd></div>
    <div><dt>Image</dt><dd>${item.rows && item.columns ? `${item.columns} × ${item.rows}` : "–"}${item.frames ? `, ${item.frames} frames` : ""}</dd></div>
    <div><dt>Size</dt><dd>${size}</dd></div>
    <div><dt>SOP Instance UID</dt><dd><code>${item.sop_instance_uid}</code></dd></div>
    <div><dt>SOP Class UID</dt><dd><code>${item.sop_class_uid}</code></dd></div>
    <div><dt>Transfer Syntax UID</dt><dd><code>${item.transfer_syntax_uid}</code></dd></div>
  </dl>`;
}

async function render_(main, params, searchParams) {
  styles();
  const [study, series] = params;
  const base = `/api/v1/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}`;
  let heading = "Series";
  try {
    const info = await api("GET", base);
    heading = [`Series ${info.number ?? ""}`.trim(), info.modality, info.description].filter(Boolean).join(" · ");
  } catch { /* the series' own resource may be unavailable: the instances still tell */ }
  render(main, html`
    <nav aria-label="breadcrumb"><ul>
      <li><a href="/">Studies</a></li>
      <li><a href="/ui/studies/${encodeURIComponent(study)}">Study</a></li>
      <li aria-current="page">${heading}</li></ul></nav>
    <h1>${heading}</h1>
    <section aria-labelledby="strip-heading">
      <h2 id="strip-heading">Instances <small class="muted" id="count"></small></h2>
      <ul class="strip" id="strip" aria-label="Instances of the series"></ul>
      <button type="button" id="more" class="secondary" hidden>Load more instances</button>
    </section>
    <section aria-labelledby="tags-heading" id="chosen">
      <h2 id="tags-heading">Tags</h2>
      <div id="facts"></div>
      <div class="tag-tools">
        <label>Filter tags <input type="search" id="filter" placeholder="tag, keyword, name or value"></label>
        <label><input type="checkbox" role="switch" id="private" checked> Private tags</label>
        <button type="button" id="expand" class="secondary outline">Expand all</button>
      </div>
      <p id="tag-status" role="status" class="muted"></p>
      <div class="tag-table"><table class="striped tags">
        <caption class="visually-hidden">Tags of the chosen instance</caption>
        <thead><tr><th scope="col">Tag</th><th scope="col">Name</th><th scope="col">VR</th><th scope="col">Value</th></tr></thead>
        <tbody id="tags"></tbody></table></div>
    </section>`);

  const strip = main.querySelector("#strip");
  const more = main.querySelector("#more");
  const items = [];
  let next = null;
  let chosen = searchParams.get("instance");
  const state = { filter: "", showPrivate: true, open: new Set() };
  let rows = [];
  let alive = true;

  function drawTags() {
    const shownRows = tagRows(rows, state);
    render(main.querySelector("#tags"), html`${shownRows}`);
    main.querySelector("#tag-status").textContent = state.filter
      ? `${shownRows.length} row${shownRows.length === 1 ? "" : "s"} match “${state.filter}”.` : "";
  }

  function drawStrip() {
    render(strip, html`${items.map((item) => thumb(study, series, item, chosen))}`);
    more.hidden = !next;
  }

  async function choose(uid, focus = false) {
    chosen = uid;
    const url = new URL(location.href);
    url.searchParams.set("instance", uid);
    history.replaceState(null, "", url.pathname + url.search);
    for (const button of strip.querySelectorAll("button.thumb")) {
      button.setAttribute("aria-pressed", button.dataset.uid === uid ? "true" : "false");
      if (focus && button.dataset.uid === uid) button.focus();
    }
    const item = items.find((i) => i.sop_instance_uid === uid);
    if (item) render(main.querySelector("#facts"), details(item));
    main.querySelector("#tag-status").textContent = "Loading tags…";
    try {
      const [document_] = await Promise.all([
        api("GET", `${base}/instances/${encodeURIComponent(uid)}/tags`), names()]);
      if (!alive || chosen !== uid) return;
      rows = tree(document_);
      drawTags();
    } catch (error) {
      main.querySelector("#tag-status").textContent = `Cannot read the tags: ${error.message}`;
    }
  }

  async function load() {
    const page = await api("GET", `${base}/instances${query({ limit: PAGE, cursor: next })}`);
    items.push(...page.items);
    next = page.next;
    main.querySelector("#count").textContent = `(${page.total})`;
    drawStrip();
  }

  strip.addEventListener("click", (event) => {
    const button = event.target.closest("button.thumb");
    if (button) choose(button.dataset.uid);
  });
  strip.addEventListener("keydown", (event) => {
    const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
    if (!(event.key in keys) || !event.target.closest("button.thumb")) return;
    event.preventDefault();
    const at = items.findIndex((i) => i.sop_instance_uid === event.target.closest("button").dataset.uid);
    const to = items[Math.max(0, Math.min(items.length - 1, at + keys[event.key]))];
    if (to) choose(to.sop_instance_uid, true);
  });
  more.addEventListener("click", () => load());
  main.querySelector("#filter").addEventListener("input", (event) => {
    state.filter = event.target.value.trim().toLowerCase();
    drawTags();
  });
  main.querySelector("#private").addEventListener("change", (event) => {
    state.showPrivate = event.target.checked;
    drawTags();
  });
  main.querySelector("#expand").addEventListener("click", (event) => {
    const all = [];
    const walk = (list) => list.forEach((r) => {
      if (r.children) { if (!r.item) all.push(r.id); walk(r.children); }
    });
    walk(rows);
    const opening = state.open.size < all.length;
    state.open = new Set(opening ? all : []);
    event.target.textContent = opening ? "Collapse all" : "Expand all";
    drawTags();
  });
  main.querySelector("#tags").addEventListener("click", (event) => {
    const bulk = event.target.closest("a.bulk");
    if (bulk) {
      event.preventDefault();
      save(bulk.href, `${bulk.dataset.name}.bin`);
      return;
    }
    const button = event.target.closest("button.toggle");
    if (!button) return;
    const id = button.dataset.id;
    if (state.open.has(id)) state.open.delete(id); else state.open.add(id);
    drawTags();
    main.querySelector(`button.toggle[data-id="${CSS.escape(id)}"]`)?.focus();
  });

  await load();
  if (!items.length) {
    render(main.querySelector("#chosen"), html`<p>This series holds no instances.</p>`);
  } else {
    if (!chosen || !items.some((i) => i.sop_instance_uid === chosen)) chosen = items[0].sop_instance_uid;
    await choose(chosen);
  }
  return () => { alive = false; };
}
export { render_ as render };
