// The Peers page (administrators): the known remote AEs, a form to add or edit one (checked
// here and by the server, whose field-by-field problems show beside each field), delete with
// confirmation, and Echo (a C-ECHO from the server) with its result and time. A peer's DICOMweb
// service may need a login (Basic or a bearer token): its password or token is write-only, never
// shown; left empty when editing, the stored one is kept.
import { api, may, whoami } from "../api.js";
import { html, render, toast } from "../dom.js";

export const title = "Peers";

const PERMISSIONS = ["echo", "store", "find", "move", "get", "commitment", "worklist"];
const DEFAULTS = ["echo", "store", "find", "move", "get"];
const FIELDS = ["name", "ae_title", "host", "port", "permissions", "dicomweb_url", "dicomweb_auth",
  "dicomweb_user", "dicomweb_secret"];
const LOGINS = [["none", "None"], ["basic", "Basic (user and password)"], ["bearer", "Bearer token"]];

/** What is wrong with the form's values, field by field (the server checks the same); `peer`
 * the peer as stored, when editing (its secret is kept when none is typed). */
function check(values, peer) {
  const problems = {};
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(values.name)) {
    problems.name = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.";
  }
  const ae = values.ae_title;
  if (!ae.trim()) problems.ae_title = "An AE title is required.";
  else if (ae.length > 16) problems.ae_title = "At most 16 characters (PS3.5 6.2).";
  else if (/[^\x20-\x7e]|\\/.test(ae)) problems.ae_title = "ASCII letters, digits and punctuation only, no backslash.";
  if (!/^[A-Za-z0-9._:\-[\]%]{1,253}$/.test(values.host.trim())) problems.host = "A host name or IP address.";
  if (!Number.isInteger(values.port) || values.port < 1 || values.port > 65535) {
    problems.port = "A TCP port, 1 to 65535.";
  }
  if (values.dicomweb_url && !/^https?:\/\/[^\s?#]+$/.test(values.dicomweb_url)) {
    problems.dicomweb_url = "An http:// or https:// URL, without query or fragment.";
  }
  if (values.dicomweb_auth !== "none") {
    if (!values.dicomweb_url) problems.dicomweb_auth = "A login needs a DICOMweb URL.";
    if (values.dicomweb_auth === "basic" && (!values.dicomweb_user || values.dicomweb_user.includes(":"))) {
      problems.dicomweb_user = "The user, without ':'.";
    }
    const kept = peer && peer.dicomweb_auth === values.dicomweb_auth && peer.dicomweb_secret_set;
    if (!values.dicomweb_secret && !kept) {
      problems.dicomweb_secret = values.dicomweb_auth === "basic" ? "The password is needed." : "The token is needed.";
    }
  }
  return problems;
}

function form(peer) {
  const editing = Boolean(peer);
  const p = peer || { name: "", ae_title: "", host: "", port: 104, permissions: DEFAULTS, tls: false, dicomweb_url: "",
    dicomweb_auth: "none", dicomweb_user: "", dicomweb_secret_set: false };
  const stored = p.dicomweb_secret_set ? "Stored: leave empty to keep it" : "";
  const field = (name, label, input) => html`<label for="peer-${name}">${label}
      ${input}<small id="peer-${name}-problem" class="problem" role="alert"></small></label>`;
  return html`<form id="peer-form" novalidate aria-labelledby="peer-form-title">
    <h2 id="peer-form-title">${editing ? `Edit peer ${p.name}` : "Add a peer"}</h2>
    <div class="grid">
      ${field("name", "Name", html`<input id="peer-name" name="name" value="${p.name}" required
          ${editing ? html`readonly` : ""} aria-describedby="peer-name-problem" autocomplete="off">`)}
      ${field("ae_title", "AE title", html`<input id="peer-ae_title" name="ae_title" value="${p.ae_title}"
          required maxlength="16" aria-describedby="peer-ae_title-problem" autocomplete="off">`)}
    </div>
    <div class="grid">
      ${field("host", "Host", html`<input id="peer-host" name="host" value="${p.host}" required
          aria-describedby="peer-host-problem" autocomplete="off">`)}
      ${field("port", "Port", html`<input id="peer-port" name="port" type="number" min="1" max="65535"
          value="${p.port}" required aria-describedby="peer-port-problem">`)}
    </div>
    <fieldset aria-describedby="peer-permissions-problem">
      <legend>May, when it calls us</legend>
      ${PERMISSIONS.map((name) => html`<label><input type="checkbox" name="permissions" value="${name}"
          ${p.permissions.includes(name) ? html`checked` : ""}> ${name}</label>`)}
      <small id="peer-permissions-problem" class="problem" role="alert"></small>
    </fieldset>
    <label><input type="checkbox" name="tls" role="switch" ${p.tls ? html`checked` : ""}> Call it over TLS</label>
    ${field("dicomweb_url", "DICOMweb URL (optional)", html`<input id="peer-dicomweb_url" name="dicomweb_url"
        type="url" value="${p.dicomweb_url || ""}" placeholder="https://pacs.example/dicom-web"
        aria-describedby="peer-dicomweb_url-problem">`)}
    <fieldset id="peer-login">
      <legend>DICOMweb login (for sends by STOW-RS)</legend>
      <div class="grid">
        ${field("dicomweb_auth", "DICOMweb login", html`<select id="peer-dicomweb_auth" name="dicomweb_auth"
            aria-describedby="peer-dicomweb_auth-problem">
            ${LOGINS.map(([value, text]) => html`<option value="${value}" ${p.dicomweb_auth === value ? html`selected` : ""}>${text}</option>`)}
          </select>`)}
        ${field("dicomweb_user", "DICOMweb user", html`<input id="peer-dicomweb_user" name="dicomweb_user"
            value="${p.dicomweb_user || ""}" autocomplete="off" aria-describedby="peer-dicomweb_user-problem">`)}
        ${field("dicomweb_secret", "Password or token", html`<input id="peer-dicomweb_secret" name="dicomweb_secret"
            type="password" autocomplete="new-password" placeholder="${stored}"
            aria-describedby="peer-dicomweb_secret-problem">`)}
      </div>
    </fieldset>
    <div class="grid">
      <button type="submit">${editing ? "Save" : "Add peer"}</button>
      <button type="button" class="secondary" id="peer-cancel">Cancel</button>
    </div>
  </form>`;
}

function row(peer) {
  const settings = peer.source === "settings";
  return html`<tr data-peer="${peer.name}">
    <th scope="row">${peer.name}</th><td>${peer.ae_title}</td><td>${peer.host}</td><td>${peer.port}</td>
    <td>${peer.permissions.join(", ") || "none"}</td><td>${peer.tls ? "yes" : "no"}</td>
    <td>${peer.dicomweb_url || ""}${peer.dicomweb_auth === "basic" ? ` (login: ${peer.dicomweb_user})`
      : peer.dicomweb_auth === "bearer" ? " (bearer token)" : ""}</td>
    <td>${settings ? "settings file" : "here"}</td>
    <td><output id="echo-${peer.name}" aria-live="polite"></output></td>
    <td><div role="group">
      <button type="button" class="outline" data-echo="${peer.name}" aria-label="Echo ${peer.name}">Echo</button>
      ${settings ? "" : html`<button type="button" class="secondary outline" data-edit="${peer.name}"
          aria-label="Edit ${peer.name}">Edit</button>
        <button type="button" class="contrast outline" data-delete="${peer.name}"
          aria-label="Delete ${peer.name}">Delete</button>`}
    </div></td></tr>`;
}

export async function render_(main) {
  await whoami();
  if (!may("admin")) {
    render(main, html`<h1>${title}</h1><p>Only administrators manage peers.</p>`);
    return null;
  }
  render(main, html`<h1>${title}</h1>
    <p>Remote AEs this archive knows: where they are, and what they may do when they call.</p>
    <p><button type="button" id="peer-add">Add a peer</button></p>
    <section id="peer-editor" hidden></section>
    <figure><table class="striped">
      <caption class="muted" id="peers-caption">Known peers</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">AE title</th><th scope="col">Host</th>
        <th scope="col">Port</th><th scope="col">Permissions</th><th scope="col">TLS</th>
        <th scope="col">DICOMweb URL</th><th scope="col">Configured in</th>
        <th scope="col">Echo</th><th scope="col"><span class="muted">Actions</span></th></tr></thead>
      <tbody id="peers"></tbody>
    </table></figure>
    <dialog id="peer-delete" aria-labelledby="peer-delete-title">
      <article>
        <h2 id="peer-delete-title">Delete peer?</h2>
        <p id="peer-delete-text"></p>
        <footer>
          <button type="button" class="secondary" id="peer-delete-no">Keep it</button>
          <button type="button" id="peer-delete-yes">Delete</button>
        </footer>
      </article>
    </dialog>`);
  const body = main.querySelector("#peers");
  const editor = main.querySelector("#peer-editor");
  const dialog = main.querySelector("#peer-delete");
  let peers = [];
  let doomed = null;

  async function load() {
    peers = await api("GET", "/api/v1/peers");
    render(body, html`${peers.map(row)}`);
    main.querySelector("#peers-caption").textContent =
      peers.length ? `${peers.length} known peer${peers.length === 1 ? "" : "s"}` : "No peers yet.";
  }

  function problems(formElement, found) {
    for (const name of FIELDS) {
      const message = found[name] || "";
      formElement.querySelector(`#peer-${name}-problem`).textContent = message;
      const input = formElement.querySelector(`#peer-${name}`);
      if (input) {
        if (message) input.setAttribute("aria-invalid", "true");
        else input.removeAttribute("aria-invalid");
      }
    }
    const first = FIELDS.find((name) => found[name]);
    if (first) (formElement.querySelector(`#peer-${first}`) || formElement.querySelector("input[name=permissions]")).focus();
    return Boolean(first);
  }

  function edit(peer) {
    editor.hidden = false;
    render(editor, form(peer));
    const element = editor.querySelector("form");
    element.querySelector(peer ? "#peer-ae_title" : "#peer-name").focus();
    const login = element.querySelector("#peer-dicomweb_auth");
    const shown = () => {
      element.querySelector("[for=peer-dicomweb_user]").hidden = login.value !== "basic";
      element.querySelector("[for=peer-dicomweb_secret]").hidden = login.value === "none";
    };
    login.addEventListener("change", shown);
    shown();
    element.querySelector("#peer-cancel").addEventListener("click", () => {
      editor.hidden = true;
      render(editor, html``);
      main.querySelector("#peer-add").focus();
    });
    element.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(element);
      const values = {
        name: String(data.get("name") || "").trim(),
        ae_title: String(data.get("ae_title") || ""),
        host: String(data.get("host") || ""),
        port: Number(data.get("port")),
        permissions: data.getAll("permissions").map(String),
        tls: data.get("tls") !== null,
        dicomweb_url: String(data.get("dicomweb_url") || "").trim() || null,
        dicomweb_auth: String(data.get("dicomweb_auth") || "none"),
        dicomweb_user: String(data.get("dicomweb_user") || "").trim() || null,
        dicomweb_secret: String(data.get("dicomweb_secret") || "") || null,
      };
      if (problems(element, check(values, peer))) return;
      const { name, ...bodyValues } = values;
      try {
        await api("PUT", `/api/v1/peers/${encodeURIComponent(name)}`, bodyValues);
      } catch (error) {
        const found = {};
        for (const item of error.problem?.errors || []) {
          const key = String(item.location || "").split(".").pop();
          found[FIELDS.includes(key) ? key : "name"] = item.message;
        }
        if (!problems(element, found)) toast(error.message, "error");
        return;
      }
      toast(peer ? `Peer ${name} saved.` : `Peer ${name} added.`);
      editor.hidden = true;
      render(editor, html``);
      await load();
    });
  }

  main.querySelector("#peer-add").addEventListener("click", () => edit(null));
  body.addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.edit) edit(peers.find((p) => p.name === button.dataset.edit));
    if (button.dataset.delete) {
      doomed = button.dataset.delete;
      main.querySelector("#peer-delete-text").textContent =
        `The archive will forget ${doomed}: it can no longer be sent to, and calls from it are treated as from an unknown AE.`;
      dialog.showModal();
      main.querySelector("#peer-delete-no").focus();
    }
    if (button.dataset.echo) {
      const name = button.dataset.echo;
      const out = main.querySelector(`#echo-${CSS.escape(name)}`);
      out.textContent = "Calling…";
      button.disabled = true;
      try {
        const answer = await api("POST", `/api/v1/peers/${encodeURIComponent(name)}/echo`);
        const ms = `${answer.milliseconds.toFixed(0)} ms`;
        out.textContent = answer.ok ? `OK in ${ms}` : `Failed (${answer.message}) after ${ms}`;
        out.className = answer.ok ? "echo-ok" : "echo-failed";
      } catch (error) {
        out.textContent = `Failed: ${error.message}`;
        out.className = "echo-failed";
      } finally {
        button.disabled = false;
      }
    }
  });
  main.querySelector("#peer-delete-no").addEventListener("click", () => dialog.close());
  main.querySelector("#peer-delete-yes").addEventListener("click", async () => {
    dialog.close();
    try {
      await api("DELETE", `/api/v1/peers/${encodeURIComponent(doomed)}`);
      toast(`Peer ${doomed} deleted.`);
      await load();
    } catch (error) {
      toast(error.message, "error");
    }
  });

  await load();
  return null;
}
export { render_ as render };
