// The Audit page: "who accessed this patient" from the audit trail (PS3.15 A.5), searched by
// patient ID, study, user or AE title and time; newest first, a page at a time. Reading the
// trail is itself recorded in it.
import { api, may, query } from "../api.js";
import { go } from "../app.js";
import { html, render } from "../dom.js";

export const title = "Audit";

const FIELDS = ["patient", "study", "user", "since"];

function how(record) {
  const details = record.details || {};
  const parts = [record.message || record.kind];
  if (details.operation) parts.push(details.operation);
  else if (record.kind === "query" && details.level) parts.push(`query ${details.level}`);
  if (details.method && details.method !== "none") parts.push(`(${details.method})`);
  return parts.join(" ");
}

function rows(records) {
  return records.map((r) => html`<tr>
    <td style="white-space: nowrap"><time datetime="${r.time}">${r.time.slice(0, 19).replace("T", " ")}</time></td>
    <td>${how(r)}</td><td>${r.outcome}</td><td>${r.who}</td><td>${r.host}</td>
    <td>${r.patients.join(", ")}</td>
    <td>${r.studies.map((s) => html`<a href="/ui/studies/${encodeURIComponent(s)}">${s}</a> `)}</td>
  </tr>`);
}

export async function render_(main, _params, searchParams) {
  const wanted = Object.fromEntries(FIELDS.map((f) => [f, searchParams.get(f) || ""]));
  render(main, html`<h1>${title}</h1>
    <p>Who did what, newest first: who accessed a patient's or a study's data, what a user or
      an AE did. Each search is itself recorded in the audit trail.</p>
    <form id="audit-search" aria-label="Search the audit trail">
      <div class="grid">
        <label>Patient ID <input name="patient" value="${wanted.patient}" autocomplete="off"></label>
        <label>Study Instance UID <input name="study" value="${wanted.study}" autocomplete="off"></label>
        <label>User or AE title <input name="user" value="${wanted.user}" autocomplete="off"></label>
        <label>Since <input name="since" type="date" value="${wanted.since.slice(0, 10)}"></label>
      </div>
      <button type="submit">Search</button>
    </form>
    <div id="audit-results" aria-live="polite"></div>`);
  main.querySelector("#audit-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    go(`/ui/audit${query(Object.fromEntries(FIELDS.map((f) => [f, form.get(f).trim()])))}`);
  });
  const results = main.querySelector("#audit-results");
  if (!may("audit")) {
    render(results, html`<p role="alert">Reading the audit trail needs the auditor or the
      administrator role.</p>`);
    return;
  }
  const found = [];
  const show = async (cursor) => {
    const page = await api("GET", `/api/v1/audit${query({ ...wanted, limit: 100, cursor })}`);
    found.push(...page.items);
    const criteria = FIELDS.filter((f) => wanted[f]).map((f) => `${f} ${wanted[f]}`).join(", ");
    render(results, html`<p id="audit-count">${page.total} record(s)${criteria
      ? ` for ${criteria}` : ""}; showing ${found.length}.</p>
      <div class="overflow-auto"><table class="striped">
        <caption class="muted">Audit records, newest first</caption>
        <thead><tr><th scope="col">Time (UTC)</th><th scope="col">Event</th>
          <th scope="col">Outcome</th><th scope="col">Who</th><th scope="col">From</th>
          <th scope="col">Patients</th><th scope="col">Studies</th></tr></thead>
        <tbody>${found.length ? rows(found)
          : html`<tr><td colspan="7">No record matches.</td></tr>`}</tbody></table></div>
      ${page.next ? html`<button id="audit-more" class="secondary">Show more</button>` : ""}`);
    const more = results.querySelector("#audit-more");
    if (more) more.addEventListener("click", () => show(page.next));
  };
  await show(null);
}
export { render_ as render };
