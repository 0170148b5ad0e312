// The shape of src/ (issue 18's bounds): files over 400 lines, functions over 80, import circles.
//
// Run:   bun scripts/shape.ts            a report; exit 1 when a bound is crossed
//        bun scripts/shape.ts --list     also every function's length, longest first
//
// Functions are found by a small lexer (strings, template literals, comments and regular
// expressions skipped) that pairs each `{` opened right after a function head — `function f(…) {`,
// a method `name(…) {`, an arrow `=> {` — with its `}`. Imports come from Bun's own scanner.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const SRC = join(ROOT, "src");
const MAX_FILE = 400;
const MAX_FUNCTION = 80;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith(".ts") && !name.endsWith(".d.ts") ? [path] : [];
  });
}

/** Each block of the file with the line it opens on, the line it closes on, and the text before its `{`. */
function blocks(text: string): { head: string; from: number; to: number }[] {
  const out: { head: string; from: number; to: number }[] = [];
  const open: { head: string; from: number }[] = [];
  let line = 1;
  let last = ""; // the last significant character, to tell a regular expression from a division
  let stmtStart = 0; // where the current statement (or member) began: after the last ; { or }
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "\n") {
      line++;
      continue;
    }
    if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
      i--;
      continue;
    }
    if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      line += text.slice(i, end).split("\n").length - 1;
      i = end + 1;
      continue;
    }
    if (
      c === '"' ||
      c === "'" ||
      c === "`" ||
      (c === "/" && /[(,=:[!&|?{};+\-*%<>~^]|^$|return$/.test(last))
    ) {
      // A string, a template literal (its ${…} parts are skipped whole: good enough here) or a regex.
      for (i++; i < text.length && text[i] !== c; i++) {
        if (text[i] === "\\") i++;
        else if (text[i] === "\n") line++;
        else if (c === "/" && text[i] === "[")
          while (i < text.length && text[i] !== "]") i += text[i] === "\\" ? 2 : 1;
      }
      last = "a";
      continue;
    }
    if (/\s/.test(c)) continue;
    if (c === "{") open.push({ head: headOf(text.slice(stmtStart, i)), from: line });
    else if (c === "}") {
      const b = open.pop();
      if (b) out.push({ ...b, to: line });
    }
    if (c === "{" || c === "}" || c === ";") stmtStart = i + 1;
    last = /\w/.test(c)
      ? text.slice(Math.max(0, i - 5), i + 1).endsWith("return")
        ? "return"
        : "a"
      : c;
  }
  return out;
}

/** The text before a `{` as one line: comments out, whitespace folded, a leading `,` (object members) dropped. */
function headOf(raw: string): string {
  return raw
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/[^\n]*/g, "")
    .replace(/\s+/g, " ")
    .trim()
    .replace(/^[,)]\s*/, "");
}

const FUNCTION_HEAD =
  /(\bfunction\b[^(]*\(.*\)|=>|^(async\s+|static\s+|get\s+|set\s+|private\s+|protected\s+|public\s+|override\s+|#)*[\w$#]+\s*(<.*>)?\(.*\))(\s*:\s*[^=]+?)?\s*$/;
const NOT_A_FUNCTION =
  /^(if|for|while|switch|catch|else|do|try|return)\b|^\}?\s*(else|catch|finally)\b/;

const files = sources(SRC);
const long: string[] = [];
const functions: { where: string; lines: number }[] = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const rel = relative(ROOT, file);
  const lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
  if (lines > MAX_FILE) long.push(`${rel}: ${lines} lines`);
  for (const b of blocks(text)) {
    if (!FUNCTION_HEAD.test(b.head) || NOT_A_FUNCTION.test(b.head)) continue;
    functions.push({ where: `${rel}:${b.from} ${b.head.slice(0, 60)}`, lines: b.to - b.from + 1 });
  }
}

// Import circles: a depth-first walk over the relative imports (type-only ones included).
const transpiler = new Bun.Transpiler({ loader: "ts" });
const graph = new Map<string, string[]>();
for (const file of files) {
  const imports = transpiler.scanImports(
    readFileSync(file, "utf8").replace(/^import type /gm, "import "),
  );
  graph.set(
    file,
    imports
      .filter((i) => i.path.startsWith("."))
      .map((i) => resolve(dirname(file), i.path))
      .filter((p) => graph.has(p) || files.includes(p)),
  );
}
const circles: string[] = [];
const state = new Map<string, "open" | "done">();
const stack: string[] = [];
function walk(file: string): void {
  state.set(file, "open");
  stack.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === "open") {
      circles.push(
        [...stack.slice(stack.indexOf(next)), next].map((f) => relative(SRC, f)).join(" → "),
      );
    } else if (!state.has(next)) walk(next);
  }
  stack.pop();
  state.set(file, "done");
}
for (const file of files) if (!state.has(file)) walk(file);

const longFunctions = functions
  .filter((f) => f.lines > MAX_FUNCTION)
  .sort((a, b) => b.lines - a.lines);
console.log(`${files.length} files in src/`);
console.log(`files over ${MAX_FILE} lines: ${long.length ? `\n  ${long.join("\n  ")}` : "none"}`);
console.log(
  `functions over ${MAX_FUNCTION} lines: ${longFunctions.length ? `\n  ${longFunctions.map((f) => `${f.lines} ${f.where}`).join("\n  ")}` : "none"}`,
);
console.log(`import circles: ${circles.length ? `\n  ${circles.join("\n  ")}` : "none"}`);
if (process.argv.includes("--list")) {
  for (const f of functions.sort((a, b) => b.lines - a.lines))
    console.log(`${String(f.lines).padStart(5)} ${f.where}`);
}
process.exit(long.length + longFunctions.length + circles.length > 0 ? 1 : 0);
