// The Jobs page: the job queue with live progress (server-sent events from /api/v1/events),
// a state filter, and cancel and retry for the jobs the user may act on.
import { api, may, query, whoami } from "../api.js";
import { html, raw, render, toast } from "../dom.js";

export const title = "Jobs";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const ACTIVE = new Set(["queued", "running"]);

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function percent(job) {
  if (job.total > 0) return Math.round((100 * job.done) / job.total);
  return job.state === "succeeded" ? 100 : 0;
}

function row(job) {
  const action = job.needs || "admin";
  const cancel = ACTIVE.has(job.state) && may(action) && !job.cancel_requested
    ? html`<button type="button" class="secondary outline" data-cancel="${job.id}"
        aria-label="Cancel job ${job.id}">Cancel</button>` : "";
  const retry = (job.state === "failed" || job.state === "cancelled") && may(action)
    ? html`<button type="button" class="outline" data-retry="${job.id}"
        aria-label="Retry job ${job.id}">Retry</button>` : "";
  const progress = job.state === "queued" && job.total === 0
    ? html`<progress aria-label="Job ${job.id} waiting"></progress>`
    : html`<progress value="${percent(job)}" max="100"
        aria-label="Job ${job.id} progress"></progress>`;
  const steps = job.total > 0 ? `${job.done} / ${job.total}` : "";
  return html`<tr data-job="${job.id}">
    <td>${job.id}</td><td>${job.kind}</td>
    <td><span class="state-${job.state}">${job.state}</span>${job.cancel_requested && ACTIVE.has(job.state) ? " (cancelling)" : ""}</td>
    <td>${progress} <small>${steps}</small></td>
    <td>${job.message}</td><td>${job.submitted_by}</td><td>${when(job.updated_at)}</td>
    <td>${cancel}${retry}</td></tr>`;
}

export async function render_(main, _params, searchParams) {
  await whoami();
  const state = STATES.includes(searchParams.get("state")) ? searchParams.get("state") : "";
  render(main, html`<h1>${title}</h1>
    <form id="job-filter" role="search" class="grid">
      <label>State
        <select name="state">
          <option value="">All states</option>
          ${STATES.map((s) => html`<option value="${s}" ${raw(s === state ? "selected" : "")}>${s}</option>`)}
        </select>
      </label>
    </form>
    <p id="live" class="muted" aria-live="polite">Connecting to live updates…</p>
    <figure><table class="striped">
      <caption class="muted" id="jobs-caption">Jobs, newest first</caption>
      <thead><tr><th scope="col">Job</th><th scope="col">Kind</th><th scope="col">State</th>
        <th scope="col">Progress</th><th scope="col">Message</th><th scope="col">Submitted by</th>
        <th scope="col">Updated</th><th scope="col"><span class="muted">Actions</span></th></tr></thead>
      <tbody id="jobs"></tbody>
    </table></figure>
    <p><button type="button" id="more" class="secondary" hidden>More jobs</button></p>`);
  const body = main.querySelector("#jobs");
  const more = main.querySelector("#more");
  const caption = main.querySelector("#jobs-caption");
  const jobs = new Map();
  let next = null;

  function show(job) {
    jobs.set(job.id, job);
    const existing = body.querySelector(`tr[data-job="${job.id}"]`);
    const holder = document.createElement("tbody");
    holder.innerHTML = row(job).text;
    const fresh = holder.firstElementChild;
    if (existing) existing.replaceWith(fresh);
    else if (body.firstElementChild && job.id > Number(body.firstElementChild.dataset.job)) body.prepend(fresh);
    else body.append(fresh);
  }

  async function load(cursor) {
    const page = await api("GET", `/api/v1/jobs${query({ state, cursor, limit: 50 })}`);
    page.items.forEach(show);
    next = page.next;
    more.hidden = !next;
    caption.textContent = `${page.total} job${page.total === 1 ? "" : "s"}${state ? ` ${state}` : ""}, newest first`;
    if (!page.total) caption.textContent = state ? `No ${state} jobs.` : "No jobs yet.";
  }

  main.querySelector("select[name=state]").addEventListener("change", (event) => {
    const value = event.target.value;
    // Through the shell's router (app.js listens to popstate): this page's cleanup runs first.
    history.pushState(null, "", `/ui/jobs${value ? `?state=${encodeURIComponent(value)}` : ""}`);
    window.dispatchEvent(new PopStateEvent("popstate"));
  });
  more.addEventListener("click", () => load(next).catch((e) => toast(e.message, "error")));
  body.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-cancel], button[data-retry]");
    if (!button) return;
    const id = button.dataset.cancel || button.dataset.retry;
    const verb = button.dataset.cancel ? "cancel" : "retry";
    button.disabled = true;
    try {
      show(await api("POST", `/api/v1/jobs/${id}/${verb}`));
      toast(`Job ${id}: ${verb === "cancel" ? "cancel requested" : "queued again"}`);
    } catch (error) {
      toast(error.message, "error");
      button.disabled = false;
    }
  });

  await load(null);

  const live = main.querySelector("#live");
  const source = new EventSource("/api/v1/events");
  source.addEventListener("open", () => { live.textContent = "Live updates on."; });
  source.addEventListener("error", () => { live.textContent = "Live updates interrupted: reconnecting…"; });
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    if (jobs.has(job.id) || !state || job.state === state) show(job);
  });
  return () => source.close();
}
export { render_ as render };
