// The Upload page: DICOM files, folders and zips by drag and drop or by picking them, sent
// to POST /api/v1/uploads a few at a time (one request per file, so each has its own
// progress bar from XMLHttpRequest's upload progress), then a summary of what was stored,
// with links to the studies, and what was refused and why.
import { api, may } from "../api.js";
import { html, render } from "../dom.js";

export const title = "Upload";

/** Files sent at once. */
const PARALLEL = 3;

function styles() {
  if (document.getElementById("upload-css")) return;
  const link = document.createElement("link");
  link.id = "upload-css";
  link.rel = "stylesheet";
  link.href = "/ui/static/pages/upload.css";
  document.head.append(link);
}

async function csrfToken() {
  try {
    const session = await (await fetch("/session", { credentials: "same-origin" })).json();
    return session.csrf_token || "";
  } catch { return ""; }
}

function bytes(n) {
  if (n >= 1073741824) return `${(n / 1073741824).toFixed(1)} GiB`;
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${Math.max(1, Math.round(n / 1024))} KiB`;
}

/** Every file under the dropped entries (folders walked; readEntries answers in batches). */
async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, name: entry.fullPath.replace(/^\//, "") || file.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await walk(child, out);
    }
  }
}

async function dropped(transfer) {
  // webkitGetAsEntry must be called while the drop event is being handled: take them all first
  const entries = [...transfer.items].filter((item) => item.kind === "file")
    .map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((file) => ({ file, name: file.name }));
  const out = [];
  for (const entry of entries) await walk(entry, out);
  return out;
}

async function render_(main) {
  styles();
  if (!may("store")) {
    render(main, html`<h1>${title}</h1><p>You may not upload: your role does not include storing.</p>`);
    return undefined;
  }
  render(main, html`
    <h1>${title}</h1>
    <p>DICOM files, whole folders and zips of them. Each file is checked and stored as if a
      modality had sent it; what is refused is listed with the reason.</p>
    <section class="dropzone" id="drop" aria-labelledby="drop-label">
      <p id="drop-label"><strong>Drop files, folders or zips on this page</strong>, or</p>
      <div class="buttons">
        <button type="button" id="pick-files">Choose files…</button>
        <button type="button" id="pick-folder" class="secondary">Choose a folder…</button>
      </div>
      <input type="file" id="files" multiple hidden aria-label="Files to upload">
      <input type="file" id="folder" webkitdirectory multiple hidden aria-label="Folder to upload">
    </section>
    <section aria-labelledby="progress-heading" id="progress" hidden>
      <h2 id="progress-heading">Files <small class="muted" id="tally" aria-live="polite"></small></h2>
      <div class="uploads-scroll"><table class="uploads striped">
        <thead><tr><th scope="col">File</th><th scope="col">Size</th><th scope="col">Progress</th><th scope="col">Result</th></tr></thead>
        <tbody id="rows"></tbody></table></div>
    </section>
    <section aria-labelledby="summary-heading" id="summary" hidden>
      <h2 id="summary-heading">Summary</h2>
      <p id="summary-text" role="status"></p>
      <div id="studies"></div>
      <div id="refused"></div>
    </section>`);

  const token = await csrfToken();
  const queue = [];
  const entries = [];
  const stored = [];
  const refused = [];
  let active = 0;
  let alive = true;
  const xhrs = new Set();

  function row(entry) {
    return main.querySelector(`#u-${entry.id}`);
  }

  function setState(entry, text, kind = "") {
    const cell = row(entry)?.querySelector(".state");
    if (!cell) return;
    cell.textContent = text;
    cell.className = `state ${kind}`;
  }

  function tally() {
    const done = entries.filter((e) => e.done).length;
    main.querySelector("#tally").textContent = `(${done} of ${entries.length} sent)`;
  }

  function add(files) {
    if (!files.length) return;
    main.querySelector("#progress").hidden = false;
    const fresh = files.map(({ file, name }, n) => ({ id: entries.length + n + 1, file, name, done: false }));
    entries.push(...fresh);
    main.querySelector("#rows").insertAdjacentHTML("beforeend", html`${fresh.map((entry) => html`
      <tr id="u-${entry.id}"><td>${entry.name}</td><td>${bytes(entry.file.size)}</td>
      <td><progress value="0" max="100" aria-label="Upload of ${entry.name}"></progress></td>
      <td class="state">waiting</td></tr>`)}`.text);
    queue.push(...fresh);
    tally();
    pump();
  }

  function pump() {
    while (alive && active < PARALLEL && queue.length) send(queue.shift());
  }

  function finish(entry, result, problem) {
    entry.done = true;
    const bar = row(entry)?.querySelector("progress");
    if (bar) bar.value = 100;
    if (problem) {
      refused.push({ name: entry.name, reason: problem });
      setState(entry, `refused: ${problem}`, "refused-reason");
    } else {
      stored.push(...result.stored);
      refused.push(...result.refused);
      const parts = [];
      if (result.stored.length) parts.push(`${result.stored.length} stored`);
      if (result.refused.length) {
        parts.push(result.refused.length === 1 && result.stored.length === 0
          ? `refused: ${result.refused[0].reason}` : `${result.refused.length} refused`);
      }
      setState(entry, parts.join(", "), result.stored.length ? "" : "refused-reason");
    }
    tally();
    if (entries.every((e) => e.done)) summary();
  }

  function send(entry) {
    active += 1;
    setState(entry, "sending");
    const xhr = new XMLHttpRequest();
    xhrs.add(xhr);
    xhr.open("POST", "/api/v1/uploads");
    xhr.setRequestHeader("Accept", "application/json");
    if (token) xhr.setRequestHeader("X-CSRF-Token", token);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const bar = row(entry)?.querySelector("progress");
      if (bar) bar.value = Math.round((event.loaded / event.total) * 100);
      if (event.loaded === event.total) setState(entry, "storing");
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if ((xhr.status === 200 || xhr.status === 409) && body?.stored) finish(entry, body, null);
      else if (xhr.status === 413) finish(entry, null, body?.detail || "too large for this server (http.max_upload_mb)");
      else finish(entry, null, body?.detail || body?.error || `HTTP ${xhr.status}`);
    });
    xhr.addEventListener("error", () => finish(entry, null, "the connection failed (too large, or the server stopped?)"));
    xhr.addEventListener("loadend", () => { xhrs.delete(xhr); active -= 1; pump(); });
    const form = new FormData();
    form.append("files", entry.file, entry.name);
    xhr.send(form);
  }

  async function summary() {
    const section = main.querySelector("#summary");
    section.hidden = false;
    const studies = [...new Set(stored.map((s) => s.study_uid))];
    main.querySelector("#summary-text").textContent =
      `${stored.length} instance${stored.length === 1 ? "" : "s"} stored in ${studies.length} ` +
      `stud${studies.length === 1 ? "y" : "ies"}; ${refused.length} file${refused.length === 1 ? "" : "s"} refused.`;
    const described = await Promise.all(studies.map(async (uid) => {
      try {
        const study = await api("GET", `/api/v1/studies/${encodeURIComponent(uid)}`);
        return { uid, label: [study.patient?.name, study.description, study.study_date].filter(Boolean).join(" · ") };
      } catch { return { uid, label: "" }; }
    }));
    const count = (uid) => stored.filter((s) => s.study_uid === uid).length;
    render(main.querySelector("#studies"), studies.length ? html`
      <table class="stored-studies"><caption>Studies stored</caption>
        <thead><tr><th scope="col">Study</th><th scope="col">Instances</th></tr></thead>
        <tbody>${described.map(({ uid, label }) => html`<tr>
          <td><a href="/ui/studies/${encodeURIComponent(uid)}">${label || uid}</a></td>
          <td>${count(uid)}</td></tr>`)}</tbody></table>` : html``);
    render(main.querySelector("#refused"), refused.length ? html`
      <table class="refused striped"><caption>Refused</caption>
        <thead><tr><th scope="col">File</th><th scope="col">Reason</th></tr></thead>
        <tbody>${refused.map((r) => html`<tr><td>${r.name}</td><td>${r.reason}</td></tr>`)}</tbody>
      </table>` : html``);
  }

  const drop = main.querySelector("#drop");
  const files = main.querySelector("#files");
  const folder = main.querySelector("#folder");
  main.querySelector("#pick-files").addEventListener("click", () => files.click());
  main.querySelector("#pick-folder").addEventListener("click", () => folder.click());
  files.addEventListener("change", () => {
    add([...files.files].map((file) => ({ file, name: file.name })));
    files.value = "";
  });
  folder.addEventListener("change", () => {
    add([...folder.files].map((file) => ({ file, name: file.webkitRelativePath || file.name })));
    folder.value = "";
  });
  // Files dropped anywhere on the page are taken (a drop outside a drop target would
  // otherwise make the browser open the file in place of the page).
  const over = (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    drop.classList.add("over");
  };
  const leaveZone = (event) => { if (!event.relatedTarget) drop.classList.remove("over"); };
  const take = async (event) => {
    if (!event.dataTransfer?.types?.includes("Files")) return;
    event.preventDefault();
    drop.classList.remove("over");
    add(await dropped(event.dataTransfer));
  };
  document.addEventListener("dragover", over);
  document.addEventListener("dragleave", leaveZone);
  document.addEventListener("drop", take);
  return () => {
    alive = false;
    document.removeEventListener("dragover", over);
    document.removeEventListener("dragleave", leaveZone);
    document.removeEventListener("drop", take);
    for (const xhr of xhrs) xhr.abort();
  };
}
export { render_ as render };
