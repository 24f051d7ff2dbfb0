// The Statistics page: what the archive holds, what arrives (per hour or day), how the disk
// fills and when it will be full, the modality mix and the top senders. Charts are drawn with
// uPlot (from npm, `vesalius ui install`); every chart's numbers are also in a table.
import { api, query } from "../api.js";
import { go } from "../app.js";
import { html, render } from "../dom.js";

export const title = "Statistics";

const BLUE = "#0172ad";
const RED = "#c52f21";
const DAY = 86400;
let loading = null;

/** uPlot, loaded once (null when it is not installed: the tables still show). */
function uplot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve) => {
      const css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = "/ui/vendor/uplot/uPlot.min.css";
      document.head.append(css);
      const script = document.createElement("script");
      script.src = "/ui/vendor/uplot/uPlot.iife.min.js";
      script.onload = () => resolve(window.uPlot);
      script.onerror = () => resolve(null);
      document.head.append(script);
    });
  }
  return loading;
}

/** Bytes for people: 1.5 GB. */
export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let n = Number(value);
  let unit = 0;
  while (Math.abs(n) >= 1000 && unit < units.length - 1) { n /= 1000; unit += 1; }
  return `${n.toLocaleString(undefined, { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
}

const number = (value) => Number(value).toLocaleString();
const when = (iso, bucket) => (bucket === "hour"
  ? new Date(iso).toISOString().slice(0, 13).replace("T", " ") + ":00"
  : iso.slice(0, 10));

function width(element) { return Math.max(280, element.clientWidth || 600); }

function chart(U, element, options, data) {
  element.replaceChildren();
  if (!U) return null;
  return new U({ width: width(element), height: 260, ...options }, data, element);
}

function summary(stats) {
  const disk = stats.disk;
  const cards = [
    ["Patients", number(stats.patients)],
    ["Studies", number(stats.studies)],
    ["Series", number(stats.series)],
    ["Instances", number(stats.instances)],
    ["Stored", bytes(stats.bytes)],
    ["Disk used", disk ? `${bytes(disk.used)} of ${bytes(disk.total)}` : "unknown"],
    ["Disk free", disk ? bytes(disk.free) : "unknown"],
  ];
  return html`<section aria-labelledby="held"><h2 id="held">What the archive holds</h2>
    <div class="grid" id="figures">${cards.map(([label, value]) =>
      html`<article><small>${label}</small><br><strong>${value}</strong></article>`)}</div>
    </section>`;
}

function ingestTable(ingest) {
  const rows = ingest.points.filter((p) => p.instances > 0);
  return html`<details><summary>Numbers</summary>
    <table class="striped"><caption>Arrivals per ${ingest.bucket} (UTC), non-empty only</caption>
    <thead><tr><th scope="col">${ingest.bucket === "hour" ? "Hour" : "Day"}</th>
      <th scope="col">Instances</th><th scope="col">Bytes</th></tr></thead>
    <tbody>${rows.length ? rows.map((p) => html`<tr><td>${when(p.time, ingest.bucket)}</td>
      <td>${number(p.instances)}</td><td>${bytes(p.bytes)}</td></tr>`)
      : html`<tr><td colspan="3">Nothing arrived.</td></tr>`}</tbody></table></details>`;
}

function forecastText(forecast) {
  const span = forecast.days === 1 ? "1 day" : `${forecast.days} days`;
  const basis = `least squares over the bytes stored each day of the ${span} `
    + `since ${forecast.since}: ${number(forecast.instances)} instances, ${bytes(forecast.bytes)}`;
  if (!forecast.days_until_full) {
    return `The archive is not growing (${basis}); the disk does not fill at this pace.`;
  }
  const pace = `At ${bytes(forecast.bytes_per_day)} a day (${basis})`;
  if (!forecast.full_on) return `${pace}, the disk does not fill within a century.`;
  return `${pace}, the disk fills in ${number(Math.round(forecast.days_until_full))} days, `
    + `on ${forecast.full_on}.`;
}

/** Disk used at the end of each day (now minus what arrived after it), and the forecast
 * line from today to the day the disk is full (at most a year ahead). */
function growth(stats, daily, forecast) {
  const used = stats.disk ? stats.disk.used : stats.bytes;
  const total = stats.disk ? stats.disk.total : null;
  const times = [];
  const history = [];
  let after = 0;
  for (let i = daily.points.length - 1; i >= 0; i -= 1) {
    const point = daily.points[i];
    times.unshift(Date.parse(point.time) / 1000 + DAY);
    history.unshift(used - after);
    after += point.bytes;
  }
  const ahead = [];
  const now = times.length ? times[times.length - 1] : Date.now() / 1000;
  if (forecast.bytes_per_day > 0 && total) {
    const days = Math.min(forecast.days_until_full, 365);
    const step = Math.max(1, Math.ceil(days / 60));
    for (let d = step; d < days; d += step) ahead.push([now + d * DAY, used + d * forecast.bytes_per_day]);
    ahead.push([now + days * DAY, used + days * forecast.bytes_per_day]);
  }
  const x = [...times, ...ahead.map(([t]) => t)];
  const past = [...history, ...ahead.map(() => null)];
  const future = [...times.map((_, i) => (i === times.length - 1 ? used : null)),
    ...ahead.map(([, v]) => v)];
  return { data: [x, past, future], total, used };
}

function modalityTable(stats) {
  return html`<table class="striped"><caption>Modality mix (of series)</caption>
    <thead><tr><th scope="col">Modality</th><th scope="col">Studies</th>
      <th scope="col">Instances</th></tr></thead>
    <tbody>${stats.modalities.length ? stats.modalities.map((m) => html`<tr>
      <td>${m.modality || "(none)"}</td><td>${number(m.studies)}</td>
      <td>${number(m.instances)}</td></tr>`)
      : html`<tr><td colspan="3">Nothing stored.</td></tr>`}</tbody></table>`;
}

function senderTable(stats) {
  return html`<table class="striped"><caption>Top senders: calling AE titles (C-STORE) and
    users (uploads, STOW-RS, imports)</caption>
    <thead><tr><th scope="col">Sender</th><th scope="col">Instances</th>
      <th scope="col">Bytes</th></tr></thead>
    <tbody>${stats.senders.length ? stats.senders.map((s) => html`<tr>
      <td>${s.ae_title || "(not recorded)"}</td><td>${number(s.instances)}</td>
      <td>${bytes(s.bytes)}</td></tr>`)
      : html`<tr><td colspan="3">Nothing stored.</td></tr>`}</tbody></table>`;
}

const fromZero = { range: (_u, _min, max) => [0, Math.max(1, max)] };
const byteAxis = { values: (_u, ticks) => ticks.map((t) => bytes(t)), size: 80 };

export async function render_(main, _params, searchParams) {
  const bucket = searchParams.get("bucket") === "hour" ? "hour" : "day";
  const days = bucket === "hour" ? 2 : 30;
  render(main, html`<h1>${title}</h1><p aria-busy="true">Loading…</p>`);
  const [stats, ingest, daily, forecast, U] = await Promise.all([
    api("GET", "/api/v1/statistics"),
    api("GET", `/api/v1/statistics/ingest${query({ bucket, days })}`),
    bucket === "day" ? null : api("GET", "/api/v1/statistics/ingest?bucket=day&days=30"),
    api("GET", "/api/v1/statistics/forecast"),
    uplot(),
  ]);
  const perDay = daily || ingest;
  render(main, html`<h1>${title}</h1>
    ${summary(stats)}
    <section aria-labelledby="rate"><h2 id="rate">Ingest rate</h2>
      <form id="bucket"><fieldset>
        <legend>Show arrivals</legend>
        <label><input type="radio" name="bucket" value="day" ${bucket === "day" ? "checked" : ""}>
          per day, last 30 days</label>
        <label><input type="radio" name="bucket" value="hour" ${bucket === "hour" ? "checked" : ""}>
          per hour, last 2 days</label></fieldset></form>
      <figure><div id="rate-chart" role="img"
        aria-label="Instances received per ${bucket}; the numbers are in the table below"></div>
      </figure>${ingestTable(ingest)}</section>
    <section aria-labelledby="growth"><h2 id="growth">Storage growth</h2>
      <p id="forecast">${forecastText(forecast)}</p>
      <figure><div id="growth-chart" role="img"
        aria-label="Disk used over the last 30 days and the forecast until it is full"></div>
      </figure></section>
    <section aria-labelledby="mix"><h2 id="mix">Modality mix</h2>
      <figure><div id="mix-chart" role="img"
        aria-label="Instances per modality; the numbers are in the table below"></div></figure>
      ${modalityTable(stats)}</section>
    <section aria-labelledby="senders"><h2 id="senders">Senders</h2>${senderTable(stats)}</section>
    ${U ? "" : html`<p class="muted">Charts need uPlot: run <code>vesalius ui install</code>.</p>`}`);
  main.querySelectorAll("#bucket input").forEach((input) => input.addEventListener("change", () => {
    go(`/ui/statistics${input.value === "hour" ? "?bucket=hour" : ""}`);
  }));

  const charts = [];
  const draw = () => {
    charts.splice(0).forEach((c) => c && c.destroy());
    const rate = main.querySelector("#rate-chart");
    if (!rate) return;
    charts.push(chart(U, rate, {
      series: [{}, { label: "Instances", stroke: BLUE, fill: "rgba(1,114,173,.25)",
        paths: U && U.paths.bars({ size: [0.8, 40] }) }],
      axes: [{}, { label: "Instances" }],
      scales: { x: { time: true }, y: fromZero },
    }, [ingest.points.map((p) => Date.parse(p.time) / 1000), ingest.points.map((p) => p.instances)]));
    const grown = growth(stats, perDay, forecast);
    charts.push(chart(U, main.querySelector("#growth-chart"), {
      series: [{}, { label: "Disk used", stroke: BLUE, width: 2 },
        { label: "Forecast", stroke: RED, width: 2, dash: [8, 6] }],
      axes: [{}, byteAxis],
      scales: { y: { range: (_u, min, max) => [0, Math.max(max, grown.total || 0)] } },
    }, grown.data));
    const mix = stats.modalities;
    charts.push(chart(U, main.querySelector("#mix-chart"), {
      series: [{ label: "Modality", value: (_u, v) => (mix[v] ? mix[v].modality || "(none)" : "–") },
        { label: "Instances", stroke: BLUE, fill: "rgba(1,114,173,.5)",
        paths: U && U.paths.bars({ size: [0.6, 80] }) }],
      scales: { x: { time: false, range: () => [-0.5, Math.max(mix.length - 0.5, 0.5)] },
        y: fromZero },
      axes: [{ values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) && mix[t]
        ? mix[t].modality || "(none)" : "")) }, { label: "Instances" }],
    }, [mix.map((_, i) => i), mix.map((m) => m.instances)]));
  };
  draw();
  let timer = null;
  const resized = () => { clearTimeout(timer); timer = setTimeout(draw, 200); };
  window.addEventListener("resize", resized);
  return () => {
    window.removeEventListener("resize", resized);
    charts.forEach((c) => c && c.destroy());
  };
}
export { render_ as render };
