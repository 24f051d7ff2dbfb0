// Building the page from data: every value goes through textContent or escape(), never
// into innerHTML unescaped.

/** Escape text for use inside HTML. */
export function escape(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/** A tagged template whose interpolations are escaped: html`<td>${name}</td>`. Pass
 * raw(...) for markup built elsewhere. */
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((value, i) => {
    const text = Array.isArray(value)
      ? value.map((v) => (v instanceof Raw ? v.text : escape(v))).join("")
      : value instanceof Raw ? value.text : escape(value);
    out += text + strings[i + 1];
  });
  return new Raw(out);
}

class Raw { constructor(text) { this.text = text; } toString() { return this.text; } }
export function raw(text) { return new Raw(text); }

/** Put ``markup`` (from html``) into ``element``. */
export function render(element, markup) { element.innerHTML = markup.text; }

/** A short message in the corner (errors stay until closed). */
export function toast(message, kind = "info") {
  const box = document.createElement("div");
  box.className = `toast ${kind}`;
  box.textContent = message;
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 10000 : 4000);
}
