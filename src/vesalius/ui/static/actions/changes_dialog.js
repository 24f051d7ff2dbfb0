// A modal dialog for the study page's Correct and Anonymize actions (owner: the changes part
// of issue 15): a native <dialog> (focus kept inside, Escape closes), removed when closed, and
// a way to follow a job's progress.
import { api } from "../api.js";
import { html, render } from "../dom.js";

let counter = 0;

/** Open a modal dialog titled ``title``; returns {dialog, body, close, closed}. */
export function openDialog(title) {
  const id = `changes-dialog-${++counter}`;
  const dialog = document.createElement("dialog");
  dialog.setAttribute("aria-labelledby", `${id}-title`);
  render(dialog, html`<article>
    <header><button type="button" aria-label="Close" rel="prev" data-close></button>
      <h2 id="${id}-title">${title}</h2></header>
    <div data-body></div></article>`);
  document.body.append(dialog);
  let done;
  const closed = new Promise((resolve) => { done = resolve; });
  dialog.addEventListener("close", () => { dialog.remove(); done(); });
  dialog.addEventListener("click", (event) => {
    if (event.target.closest("[data-close]")) dialog.close();
  });
  dialog.showModal();
  return { dialog, body: dialog.querySelector("[data-body]"), close: () => dialog.close(), closed };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll ``path`` until ``finished(answer)``; ``each(answer)`` sees every answer. */
export async function follow(path, finished, each, dialog) {
  for (;;) {
    const answer = await api("GET", path);
    each(answer);
    if (finished(answer) || !dialog.isConnected) return answer;
    await pause(400);
  }
}

/** A <progress> (and its text) for a job: done of total. */
export function progressOf(job) {
  if (!job || !job.total) return html`<progress aria-label="Progress"></progress>`;
  return html`<progress aria-label="Progress" value="${job.done}" max="${job.total}"></progress>
    <p class="muted">${job.done} of ${job.total}${job.message ? ` · ${job.message}` : ""}</p>`;
}
