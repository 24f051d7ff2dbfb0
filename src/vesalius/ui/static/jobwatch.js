// A job's live progress (the send dialog, the Query/Retrieve page): a progress bar, its
// message and state, a Cancel button while it may still stop. Follows the `job` events of
// GET /api/v1/events (one stream per page, shared), and polls GET /api/v1/jobs/{id} besides:
// often while the stream is not open, seldom as a safety net while it is (owner: the
// transfers part of issue 15).
import { api, may } from "./api.js";
import { html, render } from "./dom.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 700;
const POLL_LIVE_MS = 5000;

let source = null;
let live = false;
const listeners = new Set();

/** Call `listener(job)` on each `job` event; returns the unsubscribe function. */
function follow(listener) {
  if (!source && typeof EventSource !== "undefined") {
    source = new EventSource("/api/v1/events");
    source.addEventListener("open", () => { live = true; });
    source.addEventListener("error", () => { live = false; });
    source.addEventListener("job", (event) => {
      let job = null;
      try { job = JSON.parse(event.data); } catch { return; }
      listeners.forEach((each) => each(job));
    });
  }
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
    if (!listeners.size && source) { source.close(); source = null; live = false; }
  };
}

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
        setTimeout(() => unfollow(), 0);
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
    if (!stopped) timer = setTimeout(poll, live ? POLL_LIVE_MS : POLL_MS);
  };
  const unfollow = follow((event) => { if (event.id === job.id && !stopped) update(event); });
  update(job);
  if (!stopped) timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); unfollow(); };
}
