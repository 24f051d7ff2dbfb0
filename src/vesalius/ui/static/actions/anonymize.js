// The study page's "Anonymize" action (owner: the changes part of issue 15): a dialog with the
// de-identification options (PS3.15 Annex E) as checkboxes, into a new study of the archive
// (a job: its progress, then a link to the new study) or downloaded as a ZIP.
import { api, may } from "../api.js";
import { html, render } from "../dom.js";
import { follow, openDialog, progressOf } from "./changes_dialog.js";

export const label = "Anonymize";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "export";

const OPTIONS = [
  ["retain_device", "Keep device identity"],
  ["retain_institution", "Keep institution identity"],
  ["retain_patient_characteristics", "Keep patient characteristics (age, sex, size, weight)"],
  ["retain_full_dates", "Keep full dates"],
  ["modify_dates", "Shift dates by a per-patient offset"],
  ["clean_descriptors", "Keep descriptions, cleaned"],
  ["clean_structured_content", "Keep structured content, cleaned"],
  ["clean_graphics", "Keep graphics, cleaned"],
  ["retain_safe_private", "Keep safe private attributes"],
  ["retain_uids", "Keep the UIDs (download only)"],
];

/** Run the action on `study` (the API's Study); `page.refresh()` reloads the study page. */
export async function run(study, page) {
  const { body, dialog } = openDialog("Anonymize the study");
  const uid = encodeURIComponent(study.study_uid);
  render(body, html`<form data-form>
    <fieldset><legend>Keep (PS3.15 Annex E options; none: the Basic Profile)</legend>
      ${OPTIONS.map(([name, text]) => html`<label><input type="checkbox" name="option" value="${name}"> ${text}</label>`)}
    </fieldset>
    <fieldset><legend>Instances whose pixels may show text</legend>
      <label><input type="checkbox" name="burned"> Include them (they are listed for review)</label>
    </fieldset>
    <fieldset><legend>Where</legend>
      ${may("store") ? html`<label><input type="radio" name="where" value="archive" checked> A new study in this archive</label>` : ""}
      <label><input type="radio" name="where" value="download" ${may("store") ? "" : "checked"}> Download as a ZIP</label>
    </fieldset>
    <p role="alert" data-error></p>
    <div class="grid"><button type="button" class="secondary" data-close>Cancel</button>
    <button type="submit">Anonymize</button></div></form>`);
  const form = body.querySelector("[data-form]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const options = [...form.querySelectorAll("[name=option]:checked")].map((box) => box.value);
    const error = body.querySelector("[data-error]");
    if (form.elements.where.value === "download") {
      const query = new URLSearchParams(options.map((o) => ["options", o]));
      const link = document.createElement("a");
      link.href = `/api/v1/studies/${uid}/anonymized.zip${options.length ? `?${query}` : ""}`;
      link.download = "anonymized.zip";
      document.body.append(link);
      link.click();
      link.remove();
      render(body, html`<p role="status">The download has started.</p>
        <footer><button type="button" data-close>Close</button></footer>`);
      return;
    }
    try {
      const made = await api("POST", `/api/v1/studies/${uid}/anonymize`,
        { options, include_burned_in: form.elements.burned.checked });
      const job = await follow(`/api/v1/jobs/${made.job.id}`,
        (j) => ["succeeded", "failed", "cancelled"].includes(j.state),
        (j) => render(body, html`<p aria-live="polite">De-identifying…</p>${progressOf(j)}`), dialog);
      render(body, job.state === "succeeded"
        ? html`<p role="status">${job.message}</p>
            <p><a href="/ui/studies/${made.study_uid}" data-close>Open the new study</a></p>
            <footer><button type="button" data-close>Close</button></footer>`
        : html`<p role="alert">De-identification ${job.state}: ${job.message}</p>
            <footer><button type="button" data-close>Close</button></footer>`);
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
}
