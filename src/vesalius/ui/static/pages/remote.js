// The Query/Retrieve page (owner: the transfers part of issue 15): pick a peer, search it
// (C-FIND, POST /api/v1/peers/{name}/query), list its studies and their series, and retrieve
// a study or a series into this archive (C-MOVE to our AE, or C-GET) with live progress.
import { api, may } from "../api.js";
import { html, render, toast } from "../dom.js";
import { watchJob } from "../jobwatch.js";

export const title = "Query/Retrieve";

/** "Family^Given^Middle" as "Family, Given Middle". */
function personName(value) {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return "";
  const [family = "", ...rest] = String(text).split("=")[0].split("^");
  const given = rest.filter(Boolean).join(" ");
  return given ? `${family}, ${given}` : family;
}

/** "YYYYMMDD" as "YYYY-MM-DD". */
function isoDate(value) {
  const text = String(value || "");
  return /^\d{8}$/.test(text) ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text;
}

function list(value) { return Array.isArray(value) ? value.join(", ") : value ?? ""; }

/** The C-FIND keys of the search form (PS3.4 C.2.2.2): names and text as prefixes unless
 * they hold a wildcard already; dates as a range. */
function keysOf(form) {
  const data = new FormData(form);
  const keys = {};
  const text = (name) => String(data.get(name) || "").trim();
  const prefix = (value) => (value && !/[*?]/.test(value) ? `${value}*` : value);
  if (text("name")) keys.PatientName = prefix(text("name"));
  if (text("id")) keys.PatientID = text("id");
  if (text("accession")) keys.AccessionNumber = text("accession");
  if (text("modality")) keys.ModalitiesInStudy = text("modality").toUpperCase();
  if (text("description")) keys.StudyDescription = prefix(text("description"));
  const from = text("from").replaceAll("-", "");
  const to = text("to").replaceAll("-", "");
  if (from || to) keys.StudyDate = from === to ? from : `${from}-${to}`;
  return keys;
}

export async function render_(main, params, searchParams) {
  let peers = [];
  try {
    peers = await api("GET", "/api/v1/transfers/peers");
  } catch (error) {
    render(main, html`<h1>${title}</h1><p role="alert">${error.message}</p>`);
    return null;
  }
  const wanted = searchParams?.get("peer") || "";
  const canRetrieve = may("store");
  render(main, html`
    <h1>${title}</h1>
    ${peers.length ? "" : html`<p role="alert">No peers are configured: add one on the
      <a href="/ui/peers">Peers</a> page.</p>`}
    <form id="remote-search" aria-label="Search a remote AE">
      <div class="grid">
        <div><label for="remote-peer">Peer</label>
          <select id="remote-peer" name="peer" required>
            ${peers.map((p) => html`<option value="${p.name}" ${p.name === wanted ? "selected" : ""}>
              ${p.name} (${p.ae_title})</option>`)}
          </select></div>
        <label>Patient name <input name="name" placeholder="DOE^J" autocomplete="off"></label>
        <label>Patient ID <input name="id" autocomplete="off"></label>
        <label>Accession number <input name="accession" autocomplete="off"></label>
      </div>
      <div class="grid">
        <label>Study date from <input type="date" name="from"></label>
        <label>to <input type="date" name="to"></label>
        <label>Modality <input name="modality" placeholder="CT" autocomplete="off"></label>
        <label>Description <input name="description" autocomplete="off"></label>
      </div>
      <div class="grid">
        ${canRetrieve ? html`<div><label for="remote-method">Retrieve with</label>
          <select id="remote-method" name="method">
            <option value="move">C-MOVE (the peer sends to us)</option>
            <option value="get">C-GET (on our association)</option>
          </select></div>` : ""}
        <div><button type="submit" id="remote-go">Search</button></div>
      </div>
    </form>
    <section id="remote-jobs" aria-label="Retrieves"></section>
    <p id="remote-status" class="muted" role="status" aria-live="polite"></p>
    <div class="overflow-auto"><table id="remote-results" hidden>
      <caption class="muted">Studies on the peer</caption>
      <thead><tr>
        <th scope="col">Patient</th><th scope="col">Patient ID</th><th scope="col">Birth date</th>
        <th scope="col">Study date</th><th scope="col">Accession</th><th scope="col">Modalities</th>
        <th scope="col">Description</th><th scope="col">Series</th><th scope="col">Instances</th>
        <th scope="col">Actions</th>
      </tr></thead>
      <tbody></tbody>
    </table></div>`);
  const form = main.querySelector("#remote-search");
  const table = main.querySelector("#remote-results");
  const status = main.querySelector("#remote-status");
  const jobs = main.querySelector("#remote-jobs");
  const stops = [];

  const retrieve = async (peer, studyUid, seriesUid, what) => {
    const method = form.querySelector('[name="method"]')?.value || "move";
    try {
      const job = await api("POST", `/api/v1/peers/${encodeURIComponent(peer)}/retrieve`,
        { study_uid: studyUid, series_uid: seriesUid || null, method });
      const box = document.createElement("div");
      jobs.prepend(box);
      stops.push(watchJob(job, box, {
        label: `Retrieve ${what} from ${peer}`,
        needs: "store",
        onEnd: (ended) => {
          if (ended.state === "succeeded") {
            const link = document.createElement("a");
            link.href = `/ui/studies/${encodeURIComponent(studyUid)}`;
            link.textContent = "Open the study";
            box.querySelector("article").append(link);
          }
        },
      }));
    } catch (error) {
      toast(error.message, "error");
    }
  };

  const showSeries = async (peer, study, row, button) => {
    const next = row.nextElementSibling;
    if (next?.classList.contains("remote-series")) {
      next.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    const holder = document.createElement("tr");
    holder.className = "remote-series";
    holder.innerHTML = '<td colspan="10"><span aria-busy="true">Loading series…</span></td>';
    row.after(holder);
    try {
      const answer = await api("POST", `/api/v1/peers/${encodeURIComponent(peer)}/query`,
        { level: "series", keys: { StudyInstanceUID: study.StudyInstanceUID } });
      render(holder.firstElementChild, html`<table class="striped">
        <caption class="muted">Series of ${personName(study.PatientName)}'s study</caption>
        <thead><tr><th scope="col">#</th><th scope="col">Modality</th>
          <th scope="col">Description</th><th scope="col">Instances</th>
          <th scope="col">Actions</th></tr></thead>
        <tbody>${answer.items.map((s, i) => html`<tr>
          <td>${s.SeriesNumber ?? ""}</td><td>${s.Modality ?? ""}</td>
          <td>${s.SeriesDescription ?? ""}</td><td>${s.NumberOfSeriesRelatedInstances ?? ""}</td>
          <td>${canRetrieve ? html`<button type="button" class="outline" data-series="${i}">
            Retrieve series ${s.SeriesNumber ?? ""}</button>` : ""}</td></tr>`)}</tbody></table>`);
      holder.querySelectorAll("button[data-series]").forEach((b) => b.addEventListener("click", () => {
        const s = answer.items[Number(b.dataset.series)];
        retrieve(peer, study.StudyInstanceUID, s.SeriesInstanceUID, `series ${s.SeriesNumber ?? ""}`);
      }));
    } catch (error) {
      holder.firstElementChild.textContent = error.message;
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const peer = new FormData(form).get("peer");
    if (!peer) return;
    const url = new URL(location.href);
    url.searchParams.set("peer", peer);
    history.replaceState(null, "", url);
    const go = form.querySelector("#remote-go");
    go.setAttribute("aria-busy", "true");
    go.disabled = true;
    status.textContent = `Searching ${peer}…`;
    try {
      const answer = await api("POST", `/api/v1/peers/${encodeURIComponent(peer)}/query`,
        { level: "study", keys: keysOf(form) });
      const items = answer.items;
      status.textContent = `${items.length} ${items.length === 1 ? "study" : "studies"} found on ${peer}`
        + (answer.truncated ? " (more matched: narrow the search)" : "");
      table.hidden = items.length === 0;
      render(table.querySelector("tbody"), html`${items.map((s, i) => html`<tr data-study="${s.StudyInstanceUID}">
        <td>${personName(s.PatientName)}</td><td>${s.PatientID ?? ""}</td>
        <td>${isoDate(s.PatientBirthDate)}</td><td>${isoDate(s.StudyDate)}</td>
        <td>${s.AccessionNumber ?? ""}</td><td>${list(s.ModalitiesInStudy)}</td>
        <td>${s.StudyDescription ?? ""}</td><td>${s.NumberOfStudyRelatedSeries ?? ""}</td>
        <td>${s.NumberOfStudyRelatedInstances ?? ""}</td>
        <td class="remote-actions">
          <button type="button" class="secondary outline" data-index="${i}" data-act="series"
            aria-expanded="false" aria-label="Series of ${personName(s.PatientName)}'s study">Series</button>
          ${canRetrieve ? html`<button type="button" data-index="${i}" data-act="retrieve"
            aria-label="Retrieve ${personName(s.PatientName)}'s study">Retrieve</button>` : ""}
        </td></tr>`)}`);
      table.querySelectorAll("button[data-act]").forEach((button) => {
        const study = items[Number(button.dataset.index)];
        button.addEventListener("click", () => {
          if (button.dataset.act === "retrieve") {
            retrieve(peer, study.StudyInstanceUID, null, `${personName(study.PatientName)}'s study`);
          } else {
            showSeries(peer, study, button.closest("tr"), button);
          }
        });
      });
    } catch (error) {
      status.textContent = "";
      table.hidden = true;
      toast(error.message, "error");
    } finally {
      go.removeAttribute("aria-busy");
      go.disabled = false;
    }
  });
  return () => stops.forEach((stop) => stop());
}
export { render_ as render };
