// One study: its patient and study data, its series with thumbnails, "Open in OHIF", and the
// toolbar of actions (actions/index.js) the user may do (api.js may()).
import { api, may } from "../api.js";
import { html, render, toast } from "../dom.js";
import { bytes, clock, count, moment, personName } from "../format.js";
import { ACTIONS } from "../actions/index.js";

export const title = "Study";

function seriesPath(study, series) {
  return `/ui/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}`;
}

function facts(pairs) {
  return html`<dl class="facts">${pairs.filter(([, value]) => value !== "" && value !== null
    && value !== undefined).map(([term, value]) => html`<div><dt>${term}</dt><dd>${value}</dd></div>`)}</dl>`;
}

export async function render_(main, params) {
  const [uid] = params;
  const page = { uid, study: null, refresh: () => show() };

  async function show() {
    const base = `/api/v1/studies/${encodeURIComponent(uid)}`;
    const [study, series] = await Promise.all([api("GET", base), api("GET", `${base}/series`)]);
    page.study = study;
    const patient = study.patient;
    const name = personName(patient.name) || "(no name)";
    document.title = `${name} · ${study.description || "Study"} · Vesalius`;
    const actions = ACTIONS.filter((action) => may(action.needs));
    render(main, html`
      <nav aria-label="breadcrumb"><ul><li><a href="/">Studies</a></li><li>${name}</li></ul></nav>
      <hgroup>
        <h1>${study.description || "Study"}</h1>
        <p>${name} · ${study.study_date || "no date"} ${clock(study.study_time)}</p>
      </hgroup>
      <div class="toolbar" role="toolbar" aria-label="Study actions">
        ${may("retrieve") ? html`<a role="button" href="/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}"
          target="_blank" rel="noopener">Open in OHIF</a>` : ""}
        ${actions.map((action, i) => html`<button type="button" class="${action.needs === "delete" ? "secondary outline" : "secondary"}"
          data-action="${i}">${action.label}</button>`)}
      </div>
      <div class="grid study-facts">
        <article aria-labelledby="patient-heading">
          <h2 id="patient-heading">Patient</h2>
          ${facts([
            ["Name", name],
            ["Patient ID", patient.patient_id],
            ["Issuer", patient.issuer],
            ["Birth date", patient.birth_date],
            ["Sex", patient.sex],
          ])}
        </article>
        <article aria-labelledby="study-heading">
          <h2 id="study-heading">Study</h2>
          ${facts([
            ["Date", `${study.study_date || ""} ${clock(study.study_time)}`.trim()],
            ["Accession", study.accession_number],
            ["Modalities", study.modalities.join(", ")],
            ["Referring physician", personName(study.referring_physician)],
            ["Institution", study.institution],
            ["Contents", `${count(study.series_count, "series", "series")}, ${count(study.instance_count, "instance")}`],
            ["Size", bytes(study.size)],
            ["Updated", moment(study.updated)],
            ["Study UID", html`<code>${study.study_uid}</code>`],
          ])}
        </article>
      </div>
      <h2 id="series-heading">Series</h2>
      <ul class="series-grid" aria-labelledby="series-heading">
        ${series.map((one) => html`<li>
          <a href="${seriesPath(uid, one.series_uid)}" class="series-card">
            <img loading="lazy" width="128" height="128"
              src="/dicom-web/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(one.series_uid)}/thumbnail?viewport=128,128"
              alt="Series ${one.number ?? ""} thumbnail">
            <span><strong>${one.number ?? "–"} · ${one.modality}</strong>
              ${one.description || html`<span class="muted">(no description)</span>`}
              <small class="muted">${count(one.instance_count, "instance")}${one.body_part ? ` · ${one.body_part}` : ""}</small></span>
          </a></li>`)}
      </ul>`);
    for (const button of main.querySelectorAll("[data-action]")) {
      button.addEventListener("click", async () => {
        const action = actions[Number(button.dataset.action)];
        button.setAttribute("aria-busy", "true");
        try {
          await action.run(page.study, page);
        } catch (error) {
          toast(error.message, "error");
        } finally {
          button.removeAttribute("aria-busy");
        }
      });
    }
  }

  await show();
  // Live updates: this study changed (a correction, more instances) or was deleted elsewhere.
  const source = new EventSource("/api/v1/events");
  source.addEventListener("study", (event) => {
    const change = JSON.parse(event.data);
    if (change.study_uid !== uid) return;
    show().catch((error) => toast(error.status === 404 ? "This study is no longer stored."
      : error.message, error.status === 404 ? "info" : "error"));
  });
  return () => source.close();
}
export { render_ as render };
