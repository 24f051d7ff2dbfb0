// The UI's shell: navigation, routing in the browser (History API), and the page modules
// (pages/*.js, each exporting `title` and `render(main, params)`).
import { whoami, may } from "./api.js";
import { html, render, toast } from "./dom.js";

/** Path patterns and their page module; the first that matches wins. */
const ROUTES = [
  [/^\/$/, "studies"],
  [/^\/ui\/?$/, "studies"],
  [/^\/ui\/studies\/([^/]+)$/, "study"],
  [/^\/ui\/studies\/([^/]+)\/series\/([^/]+)$/, "series"],
  [/^\/ui\/upload$/, "upload"],
  [/^\/ui\/remote$/, "remote"],
  [/^\/ui\/jobs$/, "jobs"],
  [/^\/ui\/peers$/, "peers"],
  [/^\/ui\/statistics$/, "statistics"],
  [/^\/ui\/audit$/, "audit"],
  [/^\/ui\/users$/, "users"],
];
/** The navigation: label, path, and the action a user needs to see it. */
const NAV = [
  ["Studies", "/", "query"],
  ["Upload", "/ui/upload", "store"],
  ["Query/Retrieve", "/ui/remote", "query"],
  ["Jobs", "/ui/jobs", "query"],
  ["Peers", "/ui/peers", "admin"],
  ["Statistics", "/ui/statistics", "query"],
  ["Audit", "/ui/audit", "audit"],
  ["Users", "/ui/users", "admin"],
];

let leave = null;
let shown = 0;

/** The navigation entry a path belongs to: its own, or Studies for a study or series. */
function section(path) {
  if (path === "/" || path === "/ui" || path === "/ui/" || path.startsWith("/ui/studies/")) return "/";
  return path;
}

async function show(path) {
  const main = document.getElementById("main");
  const [pattern, name] = ROUTES.find(([p]) => p.test(path)) || [null, null];
  if (leave) { try { leave(); } catch { /* page already gone */ } leave = null; }
  const current = section(path);
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!name) { render(main, html`<h1>Not found</h1><p>No page at ${path}.</p>`); return; }
  const params = path.match(pattern).slice(1).map(decodeURIComponent);
  const module = await import(`./pages/${name}.js`);
  document.title = `${module.title} · Vesalius`;
  const turn = ++shown;
  main.setAttribute("aria-busy", "true");
  try {
    leave = (await module.render(main, params, new URLSearchParams(location.search))) || null;
  } catch (error) {
    render(main, html`<h1>${module.title}</h1><p role="alert">${error.message}</p>`);
  } finally {
    main.removeAttribute("aria-busy");
  }
  // After a move inside the UI (not the first page), start reading at the new page's heading.
  if (turn > 1 && !main.contains(document.activeElement)) {
    const heading = main.querySelector("h1");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
  }
}

/** Go to ``path`` inside the UI without reloading. */
export function go(path) {
  history.pushState(null, "", path);
  show(new URL(path, location.origin).pathname);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || link.target || event.ctrlKey || event.metaKey || event.shiftKey) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || !ROUTES.some(([p]) => p.test(url.pathname))) return;
  event.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => show(location.pathname));
// Keys a page has not taken: "g s" goes to the study list from anywhere.
let pending = "";
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest("input, textarea, select, [contenteditable]")) return;
  if (pending === "g" && event.key === "s") { go("/"); pending = ""; return; }
  pending = event.key === "g" ? "g" : "";
});

async function start() {
  try {
    const me = await whoami();
    const nav = NAV.filter(([, , action]) => may(action));
    render(document.getElementById("nav"), html`${nav.map(([label, path]) =>
      html`<li><a href="${path}">${label}</a></li>`)}<li><a href="/api/docs">API</a></li>`);
    render(document.getElementById("who"), me.authenticated
      ? html`<span title="${me.roles.join(", ")}">${me.name}</span> <a href="/logout">Sign out</a>`
      : html`<a href="/login">Sign in</a>`);
  } catch (error) {
    toast(error.message, "error");
  }
  await show(location.pathname);
}
start();
