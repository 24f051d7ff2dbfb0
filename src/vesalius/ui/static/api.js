// The REST API from the browser: JSON in and out, the session's CSRF token on every
// state-changing request, and RFC 9457 problems turned into errors with their detail.

let csrf = null;
let me = null;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Who is using the UI and what they may do (GET /api/v1/me). */
export async function whoami() {
  if (!me) me = await api("GET", "/api/v1/me");
  return me;
}

/** Whether the user may do ``action`` (echo, store, query, retrieve, read, delete, send,
 * export, audit, admin). */
export function may(action) { return Boolean(me?.actions?.includes(action)); }

async function token() {
  if (csrf === null) {
    try {
      const session = await (await fetch("/session", { credentials: "same-origin" })).json();
      csrf = session.csrf_token || "";
    } catch { csrf = ""; }
  }
  return csrf;
}

/** Call the API; the parsed JSON answer, or an ApiError. */
export async function api(method, path, body, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (method !== "GET" && method !== "HEAD") {
    const value = await token();
    if (value) headers["X-CSRF-Token"] = value;
  }
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const answer = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (answer.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
    throw new ApiError(401, { detail: "not signed in" });
  }
  if (!answer.ok) {
    let problem = null;
    try { problem = await answer.json(); } catch { /* not JSON */ }
    throw new ApiError(answer.status, problem);
  }
  if (answer.status === 204) return null;
  const type = answer.headers.get("Content-Type") || "";
  return type.includes("json") ? answer.json() : answer;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
