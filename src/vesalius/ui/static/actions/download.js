// The study page's "Download" action (owner: the downloads part of issue 15): a dialog to
// choose ZIP (folders by patient, study and series) or DICOM media (a DICOMDIR file set,
// PS3.10), then a plain link to GET /api/v1/.../download, so the browser streams the ZIP to
// disk itself (nothing is held in the page).
import { html, render } from "../dom.js";

export const label = "Download";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "retrieve";

const FORMATS = [
  ["zip", "ZIP", "the stored files in folders by patient, study and series"],
  ["media", "DICOM media", "a DICOMDIR file set to copy onto a CD or a USB stick (PS3.10)"],
];

/** The download URL of a study, or of a selection ({studies: [...], series: [...]}). */
export function downloadUrl(what, format = "zip") {
  if (typeof what === "string") {
    return `/api/v1/studies/${encodeURIComponent(what)}/download?format=${format}`;
  }
  const search = new URLSearchParams();
  for (const uid of what.studies || []) search.append("study", uid);
  for (const uid of what.series || []) search.append("series", uid);
  search.set("format", format);
  return `/api/v1/download?${search}`;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

/** Run the action on `study` (the API's Study); `seriesUids`, if given, narrows it to
 * those series. `page.refresh()` reloads the study page (not needed here). */
export async function run(study, page, seriesUids = null) {
  const what = seriesUids?.length ? { series: seriesUids } : study.study_uid;
  const count = seriesUids?.length
    ? `${seriesUids.length} series`
    : [`${study.instance_count ?? "?"} instances`, size(study.size)].filter(Boolean).join(", ");
  const dialog = document.createElement("dialog");
  dialog.id = "download-dialog";
  dialog.setAttribute("aria-labelledby", "download-title");
  render(dialog, html`<article>
    <header>
      <button type="button" aria-label="Close" rel="prev" data-close></button>
      <h2 id="download-title">Download</h2>
    </header>
    <p>${study.description || "Study"} · ${(study.patient?.name || "").replaceAll("^", " ").trim()} <span class="muted">(${count})</span></p>
    <fieldset>
      <legend>Format</legend>
      ${FORMATS.map(([value, name, help], i) => html`<label>
        <input type="radio" name="download-format" value="${value}" ${i === 0 ? "checked" : ""}>
        <strong>${name}</strong>: ${help}</label>`)}
    </fieldset>
    <footer>
      <button type="button" class="secondary" data-close>Cancel</button>
      <a role="button" id="download-link" href="${downloadUrl(what)}" download>Download</a>
    </footer>
  </article>`);
  const link = dialog.querySelector("#download-link");
  for (const radio of dialog.querySelectorAll("input[name=download-format]")) {
    radio.addEventListener("change", () => { link.href = downloadUrl(what, radio.value); });
  }
  const close = () => { dialog.close(); dialog.remove(); };
  for (const button of dialog.querySelectorAll("[data-close]")) button.addEventListener("click", close);
  dialog.addEventListener("cancel", close);
  // the browser follows the link (a download: the page stays); the dialog goes
  link.addEventListener("click", () => setTimeout(close, 0));
  document.body.append(dialog);
  dialog.showModal();
}
