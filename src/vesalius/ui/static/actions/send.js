// The study page's "Send" action (owner: the transfers part of issue 15): pick a peer, the
// whole study or some series, DIMSE (C-STORE) or DICOMweb (STOW-RS); the send runs as a job
// whose progress shows in the dialog.
import { api } from "../api.js";
import { html, render, toast } from "../dom.js";
import { watchJob } from "../jobwatch.js";

export const label = "Send";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "send";

function seriesName(series) {
  const parts = [series.number != null ? `#${series.number}` : "", series.modality,
    series.description].filter(Boolean);
  return `${parts.join(" ") || series.series_uid} (${series.instance_count} instances)`;
}

/** Run the action on `study` (the API's Study); `page.refresh()` reloads the study page. */
export async function run(study, page) {
  let peers;
  try {
    peers = await api("GET", "/api/v1/transfers/peers");
  } catch (error) {
    toast(error.message, "error");
    return;
  }
  if (!peers.length) {
    toast("No peers are configured: add one on the Peers page first.", "error");
    return;
  }
  let series = [];
  try {
    series = await api("GET", `/api/v1/studies/${encodeURIComponent(study.study_uid)}/series`);
    if (series && Array.isArray(series.items)) series = series.items;
  } catch { series = []; /* the whole study can still be sent */ }

  const dialog = document.createElement("dialog");
  dialog.setAttribute("aria-labelledby", "send-title");
  document.body.append(dialog);
  let stop = null;
  const close = () => { if (stop) stop(); dialog.close(); dialog.remove(); };
  render(dialog, html`
    <article>
      <header><h2 id="send-title">Send study</h2></header>
      <form id="send-form">
        <label for="send-peer">Peer</label>
        <select id="send-peer" name="peer" required>
          ${peers.map((p) => html`<option value="${p.name}" data-web="${p.dicomweb ? "1" : ""}">
            ${p.name} (${p.ae_title})</option>`)}
        </select>
        <fieldset>
          <legend>What</legend>
          <label><input type="radio" name="what" value="study" checked> The whole study</label>
          <label><input type="radio" name="what" value="series" ${series.length ? "" : "disabled"}>
            Some series</label>
          <div id="send-series" hidden>
            ${series.map((s) => html`<label><input type="checkbox" name="series"
              value="${s.series_uid}"> ${seriesName(s)}</label>`)}
          </div>
        </fieldset>
        <fieldset>
          <legend>How</legend>
          <label><input type="radio" name="via" value="dimse" checked> DIMSE (C-STORE)</label>
          <label><input type="radio" name="via" value="dicomweb" id="send-web">
            DICOMweb (STOW-RS)</label>
        </fieldset>
        <div id="send-job"></div>
        <div class="grid">
          <button type="button" class="secondary" id="send-close">Close</button>
          <button type="submit" id="send-go">Send</button>
        </div>
      </form>
    </article>`);
  const form = dialog.querySelector("#send-form");
  const peer = form.querySelector("#send-peer");
  const web = form.querySelector("#send-web");
  const pick = form.querySelector("#send-series");
  const syncPeer = () => {
    const hasWeb = Boolean(peer.selectedOptions[0]?.dataset.web);
    web.disabled = !hasWeb;
    if (!hasWeb && web.checked) form.querySelector('input[value="dimse"]').checked = true;
  };
  peer.addEventListener("change", syncPeer);
  syncPeer();
  form.addEventListener("change", (event) => {
    if (event.target.name === "what") pick.hidden = event.target.value !== "series";
  });
  dialog.querySelector("#send-close").addEventListener("click", close);
  dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { peer: data.get("peer"), via: data.get("via") };
    if (data.get("what") === "series") {
      body.series_uids = data.getAll("series");
      if (!body.series_uids.length) { toast("Choose at least one series.", "error"); return; }
    }
    const go = form.querySelector("#send-go");
    go.disabled = true;
    try {
      const job = await api("POST",
        `/api/v1/studies/${encodeURIComponent(study.study_uid)}/send`, body);
      if (stop) stop();
      stop = watchJob(job, form.querySelector("#send-job"), {
        label: `Send to ${body.peer}`,
        onEnd: (ended) => {
          go.disabled = false;
          toast(`Send to ${body.peer}: ${ended.state}`, ended.state === "succeeded" ? "info" : "error");
        },
      });
    } catch (error) {
      go.disabled = false;
      toast(error.message, "error");
    }
  });
  dialog.showModal();
}
