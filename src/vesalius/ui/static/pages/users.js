// The Users page.
import { html, render } from "../dom.js";

export const title = "Users";

export async function render_(main) { render(main, html`<h1>${title}</h1>`); }
export { render_ as render };
