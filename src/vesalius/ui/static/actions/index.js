// The study page's actions, in the order of its toolbar. Each module exports `label`,
// `needs` (the action a user must be allowed) and `run(study, page)`.
import * as download from "./download.js";
import * as send from "./send.js";
import * as anonymize from "./anonymize.js";
import * as correct from "./correct.js";
import * as remove from "./delete.js";

export const ACTIONS = [download, send, anonymize, correct, remove];
