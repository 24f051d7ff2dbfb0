// The study page's "Correct" action (owner: the changes part of issue 15): a dialog with the
// patient and study attributes as they are; only what the user changes is sent, with the
// study's ETag in If-Match (a study changed meanwhile is refused, 412). The correction runs as
// a job: its progress, then what changed, with an Undo button.
import { api, ApiError } from "../api.js";
import { html, render, toast } from "../dom.js";
import { follow, openDialog, progressOf } from "./changes_dialog.js";

export const label = "Correct";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "admin";

/** The attributes: API field, label, how to read the current value from a Study, input. */
const FIELDS = [
  ["patient_name", "Patient's Name (Family^Given)", (s) => s.patient.name, "text", 324],
  ["patient_id", "Patient ID", (s) => s.patient.patient_id, "text", 64],
  ["patient_birth_date", "Birth date", (s) => s.patient.birth_date || "", "date", 10],
  ["patient_sex", "Sex", (s) => s.patient.sex || "", "sex", 1],
  ["accession_number", "Accession Number", (s) => s.accession_number, "text", 16],
  ["study_description", "Study Description", (s) => s.description, "text", 64],
];
const LABELS = Object.fromEntries(FIELDS.map(([name, text]) => [name, text]));
const SEXES = [["", "Unknown (empty)"], ["F", "Female"], ["M", "Male"], ["O", "Other"]];

async function current(uid) {
  const answer = await fetch(`/api/v1/studies/${encodeURIComponent(uid)}`, {
    headers: { Accept: "application/json" }, credentials: "same-origin",
  });
  if (!answer.ok) throw new ApiError(answer.status, await answer.json().catch(() => null));
  return { study: await answer.json(), etag: answer.headers.get("ETag") };
}

function input([name, text, value, kind, max], study) {
  const id = `correct-${name}`;
  if (kind === "sex") {
    return html`<label for="${id}">${text}</label><select id="${id}" name="${name}">
      ${SEXES.map(([code, meaning]) => html`<option value="${code}" ${code === value(study) ? "selected" : ""}>${meaning}</option>`)}
    </select>`;
  }
  return html`<label for="${id}">${text}</label>
    <input id="${id}" name="${name}" type="${kind}" maxlength="${max}" value="${value(study)}">`;
}

function changesTable(changes) {
  return html`<table><thead><tr><th scope="col">Attribute</th><th scope="col">Before</th>
    <th scope="col">After</th></tr></thead><tbody>
    ${Object.entries(changes).map(([name, change]) => html`<tr><th scope="row">${LABELS[name] || name}</th>
      <td>${change.old}</td><td>${change.new}</td></tr>`)}</tbody></table>`;
}

/** Run the action on `study` (the API's Study); `page.refresh()` reloads the study page. */
export async function run(study, page) {
  const { body, dialog, close, closed } = openDialog("Correct patient and study");
  closed.then(() => page.refresh());
  let fresh;
  try { fresh = await current(study.study_uid); } catch (error) {
    render(body, html`<p role="alert">${error.message}</p>`);
    return;
  }
  render(body, html`<form data-form>
      ${FIELDS.map((field) => input(field, fresh.study))}
      <label for="correct-reason">Reason (kept with the correction)</label>
      <textarea id="correct-reason" name="reason" maxlength="1000" rows="2"></textarea>
      <p class="muted">The patient's name, birth date and sex change in all of the patient's
      studies. Another patient's ID moves this study to that patient. The files are rewritten,
      pixel data untouched; the previous versions are kept so this can be undone.</p>
      <p role="alert" data-error></p>
      <div class="grid"><button type="button" class="secondary" data-close>Cancel</button>
      <button type="submit">Correct</button></div></form>`);
  const form = body.querySelector("[data-form]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, , value] of FIELDS) {
      const now = form.elements[name].value.trim();
      if (now !== value(fresh.study)) values[name] = now;
    }
    const reason = form.elements.reason.value.trim();
    const error = body.querySelector("[data-error]");
    if (!Object.keys(values).length) { error.textContent = "Nothing changed."; return; }
    if (reason) values.reason = reason;
    form.querySelector("[type=submit]").setAttribute("aria-busy", "true");
    try {
      const correction = await api("POST",
        `/api/v1/studies/${encodeURIComponent(study.study_uid)}/corrections`, values,
        { headers: fresh.etag ? { "If-Match": fresh.etag } : {} });
      await watch(correction, body, dialog, close);
    } catch (failure) {
      form.querySelector("[type=submit]").removeAttribute("aria-busy");
      error.textContent = failure.status === 412
        ? "Someone changed this study since you opened this dialog: close it and try again."
        : failure.message;
    }
  });
}

async function watch(correction, body, dialog, close) {
  const path = `/api/v1/corrections/${correction.id}`;
  const show = (c, doing) => render(body, html`<p aria-live="polite">${doing}</p>${progressOf(c.job)}`);
  const applied = await follow(path, (c) => !["pending"].includes(c.state),
    (c) => show(c, "Rewriting the study's files…"), dialog);
  if (applied.state !== "applied") {
    render(body, html`<p role="alert">The correction failed: ${applied.message || applied.state}.
      Nothing was changed.</p><footer><button type="button" data-close>Close</button></footer>`);
    return;
  }
  render(body, html`<p role="status">Corrected. ${applied.message}</p>${changesTable(applied.changes)}
    <footer><button type="button" class="secondary" data-undo>Undo</button>
    <button type="button" data-close>Close</button></footer>`);
  body.querySelector("[data-undo]").addEventListener("click", async () => {
    try {
      await api("POST", `${path}/undo`);
      const undone = await follow(path, (c) => c.state !== "undoing",
        (c) => show(c, "Putting the previous files back…"), dialog);
      render(body, html`<p role="status">${undone.state === "undone" ? "Undone: the study is as it was." : `Undo ended ${undone.state}: ${undone.message}`}</p>
        <footer><button type="button" data-close>Close</button></footer>`);
    } catch (failure) {
      toast(failure.message, "error");
    }
  });
}
