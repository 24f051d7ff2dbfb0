// The study page's "Delete" action: a confirmation dialog saying what goes, then
// DELETE /api/v1/studies/{uid} (a job of the delete service); the page follows the job until
// the study is gone, then returns to the study list.
import { api } from "../api.js";
import { go } from "../app.js";
import { html, render, toast } from "../dom.js";
import { count, personName } from "../format.js";

export const label = "Delete";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "delete";

/** Ask "are you sure?" in a modal dialog; resolves true when the user confirms. */
export function confirmDialog(heading, body, confirmLabel) {
  const dialog = document.createElement("dialog");
  dialog.setAttribute("aria-labelledby", "confirm-heading");
  render(dialog, html`<article>
    <header><h2 id="confirm-heading">${heading}</h2></header>
    ${body}
    <footer>
      <button type="button" class="secondary" value="cancel">Cancel</button>
      <button type="button" class="danger" value="confirm">${confirmLabel}</button>
    </footer></article>`);
  document.body.append(dialog);
  return new Promise((resolve) => {
    const close = (answer) => { dialog.close(); dialog.remove(); resolve(answer); };
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(false); });
    dialog.addEventListener("click", (event) => {
      const button = event.target.closest("button[value]");
      if (button) close(button.value === "confirm");
    });
    dialog.showModal();
    dialog.querySelector("button[value=cancel]").focus();
  });
}

/** Wait until GET ``path`` answers 404 (the deletion ran); false after ``seconds``. */
async function gone(path, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try { await api("GET", path); } catch (error) { if (error.status === 404) return true; throw error; }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return false;
}

/** Run the action on `study` (the API's Study); `page.refresh()` reloads the study page. */
export async function run(study, page) {
  const name = personName(study.patient.name) || "(no name)";
  const sure = await confirmDialog(
    "Delete this study?",
    html`<p>This deletes <strong>${study.description || "the study"}</strong> of
      <strong>${name}</strong> (${study.patient.patient_id}), ${study.study_date || "no date"}:
      ${count(study.series_count, "series", "series")} and ${count(study.instance_count, "instance")},
      from the index and from storage. It cannot be undone.</p>`,
    "Delete study",
  );
  if (!sure) return;
  const path = `/api/v1/studies/${encodeURIComponent(study.study_uid)}`;
  const job = await api("DELETE", path);
  toast(`Deleting the study (job ${job.id})…`);
  if (await gone(path)) {
    toast("The study was deleted.");
    go("/");
  } else {
    toast(`The deletion is queued as job ${job.id}; it runs shortly.`);
    await page.refresh();
  }
}
