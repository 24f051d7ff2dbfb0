// A job's live progress (the send dialog, the Query/Retrieve page): a progress bar, its
// message and state, a Cancel button while it may still stop. Polls GET /api/v1/jobs/{id}
// until the job ends (owner: the transfers part of issue 15).
import { api, may } from "./api.js";
import { html, render } from "./dom.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 700;

/** Show `job` (the API's Job) in `element` and follow it; `onEnd(job)` runs once when it
 * ends. Returns a function that stops following. */
export function watchJob(job, element, { label = "Job", onEnd = null, needs = "send" } = {}) {
  let stopped = false;
  let timer = null;
  render(element, html`
    <article class="job" data-job="${job.id}">
      <header><strong>${label}</strong> · job ${job.id} · <span class="job-state"></span></header>
      <progress aria-label="${label}"></progress>
      <p class="job-message" aria-live="polite"></p>
      ${may(needs) ? html`<button type="button" class="secondary outline job-cancel">Cancel</button>` : ""}
    </article>`);
  const box = element.querySelector(".job");
  const bar = box.querySelector("progress");
  const cancel = box.querySelector(".job-cancel");
  const update = (current) => {
    box.dataset.state = current.state;
    box.querySelector(".job-state").textContent = current.state;
    box.querySelector(".job-message").textContent = current.message || current.state;
    if (current.total > 0) {
      bar.max = current.total;
      bar.value = current.done;
      bar.setAttribute("aria-label", `${label}: ${current.done} of ${current.total}`);
    }
    if (FINISHED.has(current.state)) {
      bar.hidden = true;
      if (cancel) cancel.remove();
      if (!stopped) {
        stopped = true;
        clearTimeout(timer);
        if (onEnd) onEnd(current);
      }
    }
  };
  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { update(await api("POST", `/api/v1/jobs/${job.id}/cancel`)); }
      catch (error) { box.querySelector(".job-message").textContent = error.message; }
    });
  }
  const poll = async () => {
    if (stopped) return;
    try { update(await api("GET", `/api/v1/jobs/${job.id}`)); }
    catch (error) { box.querySelector(".job-message").textContent = error.message; }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  update(job);
  if (!stopped) timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}
