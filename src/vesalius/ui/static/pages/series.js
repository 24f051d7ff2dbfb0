// The Series page.
import { html, render } from "../dom.js";

export const title = "Series";

export async function render_(main) { render(main, html`<h1>${title}</h1>`); }
export { render_ as render };
