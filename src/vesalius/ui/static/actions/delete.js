// The study page's "Delete" action (owner: the resources part of issue 15).
import { toast } from "../dom.js";

export const label = "Delete";
/** What the user must be allowed to do to see the button (api.js may()). */
export const needs = "delete";

/** Run the action on `study` (the API's Study); `page.refresh()` reloads the study page. */
export async function run(study, page) { toast(`${label}: not available yet`); }
