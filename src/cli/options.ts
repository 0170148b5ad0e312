// The command-line options of SPEC §2, defined once: citty's argument table, `--help`, the
// iodine single-dash spellings and the config-file reader are all derived from OPTIONS.
import type { ArgsDef, CommandDef } from "citty";
import { CliError } from "../errors.ts";
import { OPTIONS, type OptionDef } from "./option-table.ts";

export { OPTIONS, type OptionDef };

/** The parsed command line: canonical option names to values, and the positional APP. */
export interface RawOptions {
  values: Map<string, string | boolean>;
  app?: string;
}

const byLong = new Map<string, OptionDef>();
const bySingle = new Map<string, OptionDef>();
for (const o of OPTIONS) {
  byLong.set(o.name, o);
  for (const a of o.aliases ?? []) byLong.set(a, o);
  if (o.short) bySingle.set(o.short, o);
  for (const s of o.iodine) bySingle.set(s, o);
}

const BOOLEAN_VALUES: Record<string, boolean> = {
  true: true,
  "1": true,
  yes: true,
  false: false,
  "0": false,
  no: false,
};

/**
 * Reads argv in every spelling SPEC §2 allows: `--port 3000`, `--port=3000`, `-p 3000`,
 * iodine's `-port 3000` and `-port=3000`. A value-taking option always consumes the next
 * token, so `-w -2` is the number −2. Unknown options and missing values throw `CliError`.
 */
export function readArgv(argv: readonly string[]): RawOptions {
  const values = new Map<string, string | boolean>();
  let app: string | undefined;
  const positional = (token: string) => {
    if (app !== undefined)
      throw new CliError(`unexpected argument "${token}" (the app is already "${app}")`);
    app = token;
  };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === "--") {
      for (const rest of argv.slice(i + 1)) positional(rest);
      break;
    }
    if (token.length < 2 || token[0] !== "-") {
      positional(token);
      continue;
    }
    const isLong = token.startsWith("--");
    const body = token.slice(isLong ? 2 : 1);
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    const def = isLong ? byLong.get(name) : bySingle.get(name);
    if (!def) throw new CliError(`unknown option "${token}" (see --help)`);
    const spelled = eq === -1 ? token : token.slice(0, token.indexOf("="));
    if (def.kind === "boolean") {
      if (eq === -1) values.set(def.name, true);
      else {
        const v = BOOLEAN_VALUES[body.slice(eq + 1).toLowerCase()];
        if (v === undefined)
          throw new CliError(`option "${spelled}" takes no value, got "${body.slice(eq + 1)}"`);
        values.set(def.name, v);
      }
      continue;
    }
    let value: string;
    if (eq !== -1) value = body.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined)
        throw new CliError(`option "${spelled}" needs a value (${def.valueHint ?? "VALUE"})`);
      value = next;
      i++;
    }
    values.set(def.name, value);
  }
  return app === undefined ? { values } : { values, app };
}

/**
 * Reads a config file's text: one option per line (`--port 3000`, `-p=3000`, `port 3000`,
 * `verbose`); blank lines and `#` comments are skipped.
 */
export function readConfigText(text: string, file: string): RawOptions {
  const values = new Map<string, string | boolean>();
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(\S+)(?:\s+(.*))?$/.exec(line)!;
    const argv = [m[1]!.startsWith("-") ? m[1]! : "--" + m[1]!];
    if (m[2] !== undefined) argv.push(m[2].trim());
    try {
      const parsed = readArgv(argv);
      if (parsed.app !== undefined) throw new CliError(`"${line}" is not an option`);
      for (const [k, v] of parsed.values) values.set(k, v);
    } catch (err) {
      if (err instanceof CliError) throw new CliError(`${file}:${n + 1}: ${err.message}`);
      throw err;
    }
  }
  return { values };
}

/** The positional argument, for `--help` and the README. */
const APP_ARG = { description: "the application module", default: "`app.ts`, else `app.js`" };

/** Text for a terminal: the README's code marks left out. */
const plain = (text: string) => text.replace(/`/g, "");

/** One option's `--help` line: what it does, its default, its other spellings. */
export function helpLine(o: OptionDef): string {
  const iodine = o.iodine.filter((s) => s !== o.short).map((s) => `-${s}`);
  const also = [...(o.aliases ?? []).map((a) => `--${a}`), ...iodine];
  return plain(
    `${o.description}${o.default ? ` (default: ${o.default})` : ""}${also.length ? ` [also: ${also.join(", ")}]` : ""}`,
  );
}

/** citty's argument table, from OPTIONS (long names, short letters; iodine spellings are pre-normalised). */
function cittyArgs(): ArgsDef {
  const args: ArgsDef = {
    app: {
      type: "positional",
      required: false,
      description: plain(`${APP_ARG.description} (default: ${APP_ARG.default})`),
      valueHint: "APP",
    },
  };
  for (const o of OPTIONS) {
    const description = helpLine(o);
    args[o.name] =
      o.kind === "boolean"
        ? { type: "boolean", description, ...(o.short ? { alias: o.short } : {}) }
        : {
            type: "string",
            description,
            valueHint: o.valueHint,
            ...(o.short ? { alias: o.short } : {}),
          };
  }
  return args;
}

/**
 * `--help`: citty's usage text from the same table (citty is loaded only for it: loading it costs a
 * few ms of every start-up), in colour only for a terminal.
 */
export async function usage(version: string): Promise<string> {
  const { renderUsage } = await import("citty");
  const command: CommandDef = {
    meta: {
      name: "iodine",
      version,
      description: "serve a Bun app: HTTP, WebSocket, SSE, pub/sub, static files",
    },
    args: cittyArgs(),
  };
  const text =
    (await renderUsage(command)) + "\n\nEvery option also takes the -option=value form.\n";
  // citty colours unless NO_COLOR is exactly "1", even into a pipe or a file.
  return colours() ? text : Bun.stripANSI(text).replace(/[ \t]+$/gm, "");
}

/** Colour codes only for a terminal, and not when $NO_COLOR is set to anything (no-color.org) or TERM=dumb. */
function colours(): boolean {
  return process.stdout.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== "dumb";
}

/**
 * The README's option table (`| option | iodine spelling | default | meaning |`), from the same
 * OPTIONS as `--help`; test/readme.test.ts keeps the README's copy equal to it.
 */
export function markdownOptionTable(): string {
  const cell = (text: string) => text.replace(/\|/g, "\\|");
  const rows = ["| option | iodine spelling | default | meaning |", "|---|---|---|---|"];
  rows.push(`| \`APP\` | (config.ru) | ${cell(APP_ARG.default)} | ${APP_ARG.description} |`);
  for (const o of OPTIONS) {
    const value = o.valueHint ? ` ${o.valueHint}` : "";
    const flags = [
      ...(o.short ? [`-${o.short}`] : []),
      `--${o.name}${value}`,
      ...(o.aliases ?? []).map((a) => `--${a}`),
    ];
    const single = [...(o.short ? [o.short] : []), ...o.iodine].map((s) => `\`-${s}\``).join(", ");
    rows.push(
      `| \`${flags.join(", ")}\` | ${single} | ${cell(o.default ?? "")} | ${cell(o.description)} |`,
    );
  }
  return rows.join("\n");
}
