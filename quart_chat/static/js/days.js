// Times and calendar days as the page shows them: "14:02", "Today", "Mon 30 Nov 2026", and
// where a day separator goes. Pure: dates in, strings out (the reader's locale and zone).

const DATE_OPTS = { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' };

function pad2(n) { return n < 10 ? '0' + n : String(n); }

export function hhmm(ts) {
  const d = new Date(Number(ts));
  if (Number.isNaN(d.getTime())) return '';
  return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
}

// The title of every time element ("Mon 30 Nov 2026, 14:02" in en-GB); its datetime holds
// the exact ISO time.
export function fullTime(ts) {
  const d = new Date(Number(ts));
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleDateString(undefined, DATE_OPTS) + ', ' + hhmm(ts);
}

export function isoTime(ts) {
  const d = new Date(Number(ts));
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

// The local calendar day of a time, YYYY-MM-DD ('' when unknown).
export function dayKey(ts) {
  const d = new Date(Number(ts));
  if (!Number(ts) || Number.isNaN(d.getTime())) return '';
  return d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate());
}

// "Today", "Yesterday", else the date. Days are counted on the calendar, not in 24 h steps,
// and rounded so that a daylight-saving change (a 23 or 25 hour day) still counts as one.
export function dayLabel(key, now = new Date()) {
  const [y, m, d] = key.split('-').map(Number);
  const day = new Date(y, m - 1, d);
  const today = new Date(now.getTime());
  today.setHours(0, 0, 0, 0);
  const back = Math.round((today.getTime() - day.getTime()) / 86400000);
  if (back === 0) return 'Today';
  if (back === 1) return 'Yesterday';
  return day.toLocaleDateString(undefined, DATE_OPTS);
}

// For the day keys of a list of entries, oldest first: true where a separator goes before
// the entry (the first entry of each day). Entries with no known day ('') never start one
// and do not interrupt the day around them.
export function dayStarts(days) {
  let prev = '';
  return days.map((day) => {
    if (!day || day === prev) return false;
    prev = day;
    return true;
  });
}
