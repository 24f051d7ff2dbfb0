// Showing DICOM values to people: names, dates, sizes (shared by the pages).

/** A DICOM person name (PN, ``Family^Given^Middle^Prefix^Suffix``) as "Family, Given Middle". */
export function personName(value) {
  if (!value) return "";
  const [family = "", given = "", middle = "", prefix = "", suffix = ""] =
    String(value).split("=")[0].split("^");
  const first = [prefix, given, middle].filter(Boolean).join(" ");
  const name = [family, first].filter(Boolean).join(", ");
  return suffix ? `${name} ${suffix}` : name;
}

/** A byte count as "1.2 MB". */
export function bytes(value) {
  if (value === null || value === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let size = Number(value);
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) { size /= 1000; unit += 1; }
  return `${size.toFixed(unit && size < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A count with its noun, "1 series", "3 instances". */
export function count(value, one, many = `${one}s`) {
  return `${Number(value).toLocaleString()} ${Number(value) === 1 ? one : many}`;
}

/** An ISO time "10:15:00.25" shortened to "10:15". */
export function clock(value) { return value ? value.slice(0, 5) : ""; }

/** An ISO date-time in the reader's time zone, to the minute. */
export function moment(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value
    : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
