// A line diff for the config editor: longest common subsequence over lines, so the operator
// sees exactly which lines a publish or a rollback changes. Configs are small (the server caps
// them at 10 MB, and an editor shows far less); above LIMIT cells the diff is given as
// "everything removed, everything added" rather than stall the page.
const LIMIT = 4_000_000;

/** Returns [{op: ' ' | '-' | '+', line}] turning `before` into `after`. */
export function lineDiff(before, after) {
  const a = before === '' ? [] : before.split('\n');
  const b = after === '' ? [] : after.split('\n');
  if ((a.length + 1) * (b.length + 1) > LIMIT) {
    return [...a.map((line) => ({ op: '-', line })), ...b.map((line) => ({ op: '+', line }))];
  }
  // lcs[i][j]: length of the common subsequence of a[i..] and b[j..].
  const w = b.length + 1;
  const lcs = new Uint32Array((a.length + 1) * w);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i * w + j] = a[i] === b[j]
        ? lcs[(i + 1) * w + j + 1] + 1
        : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      out.push({ op: ' ', line: a[i] }); i++; j++;
    } else if (lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
      out.push({ op: '-', line: a[i] }); i++;
    } else {
      out.push({ op: '+', line: b[j] }); j++;
    }
  }
  while (i < a.length) out.push({ op: '-', line: a[i++] });
  while (j < b.length) out.push({ op: '+', line: b[j++] });
  return out;
}
