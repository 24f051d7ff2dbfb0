// The Users page (administrators): the users of the web side, add one, change roles and
// groups, reset a password, disable or enable. Passwords go to the server and are never shown.
import { api, may } from "../api.js";
import { html, render, toast } from "../dom.js";

export const title = "Users";

const ROLES = ["admin", "radiologist", "technologist", "researcher", "auditor"];

const list = (text) => text.split(",").map((g) => g.trim()).filter(Boolean);

function roleBoxes(prefix, chosen = []) {
  return html`<fieldset><legend>Roles</legend>${ROLES.map((role) => html`<label>
    <input type="checkbox" name="roles" value="${role}" id="${prefix}-${role}"
      ${chosen.includes(role) ? "checked" : ""}> ${role}</label>`)}</fieldset>`;
}

function state(user) {
  if (user.disabled) return "disabled";
  if (user.locked_until && Date.parse(user.locked_until) > Date.now()) {
    return `locked until ${user.locked_until.slice(0, 16).replace("T", " ")}`;
  }
  return "active";
}

async function everyone() {
  const users = [];
  let cursor = null;
  do {
    const page = await api("GET", `/api/v1/users?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
    users.push(...page.items);
    cursor = page.next;
  } while (cursor);
  return users;
}

export async function render_(main) {
  if (!may("admin")) {
    render(main, html`<h1>${title}</h1><p role="alert">Only administrators manage users.</p>`);
    return;
  }
  const users = await everyone();
  render(main, html`<h1>${title}</h1>
    <div class="overflow-auto"><table class="striped" id="users">
      <caption class="muted">${users.length} user(s)</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Roles</th><th scope="col">Groups</th>
        <th scope="col">State</th><th scope="col">Actions</th></tr></thead>
      <tbody>${users.map((u) => html`<tr data-user="${u.name}">
        <th scope="row">${u.name}</th><td>${u.roles.join(", ")}</td>
        <td>${u.groups.join(", ")}</td><td>${state(u)}</td>
        <td><div role="group" aria-label="Actions for ${u.name}">
          <button class="outline" data-act="edit">Edit</button>
          <button class="outline" data-act="password">Reset password</button>
          <button class="outline ${u.disabled ? "" : "contrast"}"
            data-act="${u.disabled ? "enable" : "disable"}">${u.disabled ? "Enable" : "Disable"}</button>
        </div></td></tr>`)}</tbody></table></div>
    <details id="add-user"><summary role="button" class="secondary">Add a user</summary>
      <form id="new-user">
        <div class="grid">
          <label>Name <input name="name" required autocomplete="off"
            pattern="[A-Za-z0-9._@\\-]{1,128}"></label>
          <label>Password <input name="password" type="password" required minlength="8"
            autocomplete="new-password"></label>
          <label>Groups (comma-separated) <input name="groups" autocomplete="off"></label>
        </div>
        ${roleBoxes("new")}
        <button type="submit">Add</button>
      </form></details>
    <dialog id="user-dialog" aria-labelledby="dialog-title"></dialog>`);

  const reload = () => render_(main);
  main.querySelector("#new-user").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      await api("POST", "/api/v1/users", {
        name: form.get("name").trim(),
        password: form.get("password"),
        roles: form.getAll("roles"),
        groups: list(form.get("groups")),
      });
      toast(`User ${form.get("name")} added`);
      await reload();
    } catch (error) { toast(error.message, "error"); }
  });

  const dialog = main.querySelector("#user-dialog");
  const ask = (user, body, submit) => {
    render(dialog, html`<article><header><h2 id="dialog-title">${user.name}</h2></header>
      <form method="dialog" id="dialog-form">${body}
        <footer><button type="button" class="secondary" id="dialog-cancel">Cancel</button>
          <button type="submit">Save</button></footer></form></article>`);
    dialog.querySelector("#dialog-cancel").addEventListener("click", () => dialog.close());
    dialog.querySelector("#dialog-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await submit(new FormData(event.target));
        dialog.close();
        await reload();
      } catch (error) { toast(error.message, "error"); }
    });
    dialog.showModal();
    dialog.querySelector("input")?.focus();
  };
  const change = (user, body) => api("PATCH", `/api/v1/users/${encodeURIComponent(user.name)}`, body);

  main.querySelector("#users").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-act]");
    if (!button) return;
    const user = users.find((u) => u.name === button.closest("tr").dataset.user);
    const act = button.dataset.act;
    if (act === "edit") {
      ask(user, html`${roleBoxes("edit", user.roles)}
        <label>Groups (comma-separated)
          <input name="groups" value="${user.groups.join(", ")}" autocomplete="off"></label>`,
      async (form) => {
        await change(user, { roles: form.getAll("roles"), groups: list(form.get("groups")) });
        toast(`${user.name}: roles and groups saved`);
      });
    } else if (act === "password") {
      ask(user, html`<label>New password <input name="password" type="password" required
        minlength="8" autocomplete="new-password"></label>
        <p class="muted">The user's sessions end; tokens stay valid.</p>`,
      async (form) => {
        await change(user, { password: form.get("password") });
        toast(`${user.name}: password reset`);
      });
    } else {
      try {
        if (act === "disable") await api("DELETE", `/api/v1/users/${encodeURIComponent(user.name)}`);
        else await change(user, { disabled: false });
        toast(`${user.name} ${act}d`);
        await reload();
      } catch (error) { toast(error.message, "error"); }
    }
  });
}
export { render_ as render };
