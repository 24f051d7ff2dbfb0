// The study list, the landing page: search, sort, pages with a total, keyboard navigation
// (arrow keys move between rows, Enter opens the study, "/" jumps to the search box).
// Everything it shows comes from GET /api/v1/studies; the search is kept in the address, so
// a search can be bookmarked and Back returns to it.
import { api, query } from "../api.js";
import { go } from "../app.js";
import { html, render } from "../dom.js";
import { count, personName } from "../format.js";

export const title = "Studies";

/** The search form's fields, in the API's names. */
const FIELDS = [
  ["patient_name", "Patient name", "text", "Doe* (wild cards * ?)"],
  ["patient_id", "Patient ID", "text", ""],
  ["accession_number", "Accession", "text", ""],
  ["study_date_from", "From", "date", ""],
  ["study_date_to", "To", "date", ""],
  ["modality", "Modality", "text", "CT, MR…"],
  ["description", "Description", "text", "Thorax, or *horax* (wild cards)"],
];
const MODALITIES = ["CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "RF", "OT", "SR", "SEG"];
/** Sortable columns: header, API sort name, the direction a first click sorts in. */
const COLUMNS = [
  ["Patient", "patient_name", ""],
  ["Patient ID", "patient_id", ""],
  ["Study date", "study_date", "-"],
  ["Modalities", null, ""],
  ["Description", null, ""],
  ["Accession", "accession_number", ""],
  ["Series / instances", null, ""],
];
const SEARCH_KEYS = [...FIELDS.map(([name]) => name), "q"];

function studyPath(uid) { return `/ui/studies/${encodeURIComponent(uid)}`; }

export async function render_(main, _params, searchParams) {
  const search = Object.fromEntries(SEARCH_KEYS.map((key) => [key, searchParams.get(key) || ""]));
  const sort = searchParams.get("sort") || "-study_date";
  const state = { search, sort, cursors: [""], page: 0 };

  render(main, html`
    <h1>${title}</h1>
    <search><form id="study-search" aria-label="Search studies">
      <div class="search-main">
        <input type="search" name="q" value="${search.q}" aria-label="Search name, ID, accession or description"
          placeholder="Search name, ID, accession or description  ( / )" autocomplete="off">
        <button type="submit">Search</button>
        <button type="reset" class="secondary outline">Clear</button>
      </div>
      <details ${FIELDS.some(([name]) => search[name]) ? "open" : ""}>
        <summary>More filters</summary>
        <div class="search-grid">
          ${FIELDS.map(([name, label, type, hint]) => html`
            <label>${label}
              <input name="${name}" type="${type}" value="${search[name]}" placeholder="${hint}"
                ${name === "modality" ? html`list="modalities"` : ""} autocomplete="off">
            </label>`)}
        </div>
        <datalist id="modalities">${MODALITIES.map((m) => html`<option value="${m}">`)}</datalist>
      </details>
    </form></search>
    <p id="study-count" class="muted" aria-live="polite"></p>
    <div class="table-wrap">
      <table id="study-table" class="striped">
        <caption class="visually-hidden">Studies; arrow keys move between rows, Enter opens one</caption>
        <thead><tr id="study-head"></tr></thead>
        <tbody id="study-rows"></tbody>
      </table>
    </div>
    <nav aria-label="Pages" class="pager">
      <button id="previous-page" class="secondary" disabled>Previous</button>
      <span id="page-position" class="muted"></span>
      <button id="next-page" class="secondary" disabled>Next</button>
    </nav>`);

  const form = main.querySelector("#study-search");
  const rows = main.querySelector("#study-rows");
  let loading = 0;

  function address() {
    const params = { ...state.search };
    if (state.sort !== "-study_date") params.sort = state.sort;
    return `/${query(params)}`;
  }

  function header() {
    const [current, descending] = [state.sort.replace(/^-/, ""), state.sort.startsWith("-")];
    render(main.querySelector("#study-head"), html`${COLUMNS.map(([label, key]) => {
      if (!key) return html`<th scope="col">${label}</th>`;
      const sorted = key === current ? (descending ? "descending" : "ascending") : "none";
      const mark = sorted === "none" ? "" : sorted === "ascending" ? " ▲" : " ▼";
      return html`<th scope="col" aria-sort="${sorted}">
        <button type="button" class="sort" data-sort="${key}">${label}<span aria-hidden="true">${mark}</span></button></th>`;
    })}`);
  }

  async function load() {
    const mine = ++loading;
    const params = { ...state.search, sort: state.sort, cursor: state.cursors[state.page] };
    rows.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api("GET", `/api/v1/studies${query(params)}`);
    } finally {
      if (mine === loading) rows.removeAttribute("aria-busy");
    }
    if (mine !== loading) return;
    state.cursors[state.page + 1] = page.next || null;
    header();
    render(rows, page.items.length ? html`${page.items.map((study, i) => html`
      <tr tabindex="${i === 0 ? "0" : "-1"}" data-uid="${study.study_uid}">
        <td><a href="${studyPath(study.study_uid)}" tabindex="-1">${personName(study.patient.name) || "(no name)"}</a></td>
        <td>${study.patient.patient_id}</td>
        <td>${study.study_date || ""}</td>
        <td>${study.modalities.join(", ")}</td>
        <td>${study.description}</td>
        <td>${study.accession_number}</td>
        <td>${count(study.series_count, "series", "series")} / ${count(study.instance_count, "instance")}</td>
      </tr>`)}` : html`<tr><td colspan="${COLUMNS.length}">No studies match.</td></tr>`);
    main.querySelector("#study-count").textContent = `${count(page.total, "study", "studies")}`;
    main.querySelector("#page-position").textContent = page.total
      ? `Page ${state.page + 1} of ${Math.max(1, Math.ceil(page.total / pageSize(page)))}` : "";
    main.querySelector("#previous-page").disabled = state.page === 0;
    main.querySelector("#next-page").disabled = !page.next;
  }

  let size = 50;
  function pageSize(page) {
    if (page.next) size = page.items.length || size;
    return size;
  }

  async function restart() {
    state.cursors = [""];
    state.page = 0;
    history.replaceState(null, "", address());
    await load();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    for (const key of SEARCH_KEYS) state.search[key] = String(data.get(key) || "").trim();
    history.pushState(null, "", address());
    restart().catch(fail);
  });
  form.addEventListener("reset", () => {
    setTimeout(() => {
      for (const key of SEARCH_KEYS) state.search[key] = "";
      for (const input of form.querySelectorAll("input")) input.value = "";
      restart().catch(fail);
    });
  });
  main.querySelector("#study-head").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-sort]");
    if (!button) return;
    const key = button.dataset.sort;
    const column = COLUMNS.find(([, name]) => name === key);
    const current = state.sort.replace(/^-/, "");
    state.sort = current === key ? (state.sort.startsWith("-") ? key : `-${key}`) : `${column[2]}${key}`;
    restart().then(() => main.querySelector(`button[data-sort="${key}"]`)?.focus()).catch(fail);
  });
  main.querySelector("#next-page").addEventListener("click", () => {
    state.page += 1;
    load().then(focusFirst).catch(fail);
  });
  main.querySelector("#previous-page").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    load().then(focusFirst).catch(fail);
  });

  function focusFirst() { rows.querySelector("tr[data-uid]")?.focus(); }

  function move(row, target) {
    if (!target) return;
    row.setAttribute("tabindex", "-1");
    target.setAttribute("tabindex", "0");
    target.focus();
  }

  rows.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-uid]");
    if (!row) return;
    const all = [...rows.querySelectorAll("tr[data-uid]")];
    const here = all.indexOf(row);
    const targets = {
      ArrowDown: all[here + 1],
      ArrowUp: all[here - 1],
      Home: all[0],
      End: all[all.length - 1],
    };
    if (event.key in targets) {
      event.preventDefault();
      if (event.key === "ArrowDown" && !targets.ArrowDown && !main.querySelector("#next-page").disabled) {
        main.querySelector("#next-page").click();
        return;
      }
      move(row, targets[event.key]);
    } else if (event.key === "Enter") {
      event.preventDefault();
      go(studyPath(row.dataset.uid));
    }
  });
  rows.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-uid]");
    if (!row || event.target.closest("a")) return;
    go(studyPath(row.dataset.uid));
  });

  function slash(event) {
    if (event.key !== "/" || event.target.closest("input, textarea, select")) return;
    event.preventDefault();
    form.querySelector("input[name=q]").focus();
  }
  document.addEventListener("keydown", slash);

  function fail(error) {
    render(main.querySelector("#study-count"), html`<span role="alert">${error.message}</span>`);
  }

  // Live updates: a study stored, changed or deleted reloads the first page (at most once a
  // second, keeping the focused row); on a later page, the count says the list changed.
  let timer = null;
  const source = new EventSource("/api/v1/events");
  source.addEventListener("study", () => {
    if (timer) return;
    timer = setTimeout(async () => {
      timer = null;
      if (state.page !== 0) {
        main.querySelector("#study-count").textContent += " (the list has changed: search again to see it)";
        return;
      }
      const focused = rows.contains(document.activeElement) ? document.activeElement.closest("tr")?.dataset.uid : null;
      await load().catch(fail);
      if (focused) rows.querySelector(`tr[data-uid="${CSS.escape(focused)}"]`)?.focus();
    }, 1000);
  });

  await load().catch(fail);
  return () => {
    document.removeEventListener("keydown", slash);
    source.close();
    clearTimeout(timer);
  };
}
export { render_ as render };
