// Iodine.Mustache (SPEC §9) over the `mustache` package: a template read and parsed once, partials
// found next to the template file and read once, and the parsed tokens rendered straight through a
// Writer of our own (`mustache.render` would build and hash a cache key from the whole template
// text on every call).
//
// Partial lookup, as Ruby iodine's mustache loader walks its stack: `{{> name}}` is a path
// relative to the directory of the template that contains the tag; when nothing is there, the
// directories of the templates that included that one are tried, out to the root template's.
// In each directory: `<dir>/<name>`, `<dir>/<name>.mustache`, `<dir>/<name>.html` (`..` climbs as
// in any path; a leading `/` stays inside the directory, as iodine's concatenation did). The
// `partials` map, when given, is consulted before any file. A `template` without a `file` has only
// the map: the working directory is never searched. A missing partial renders empty (Mustache spec).
//
// Rendering is mustache.js's (its HTML escape, which also escapes / ` and =; its lambdas), with one
// fix the spec's required modules need: see SpecContext.
import { statSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import mustache, {
  type OpeningAndClosingTags,
  type PartialLookupFn,
  type PartialsOrLookupFn,
  type RenderOptions,
  type TemplateCache,
  type TemplateSpans,
} from "mustache";
import { IodineError } from "./errors.ts";

/** Where a template comes from: a `file`, a `template` text, or both (the text, anchored at the file). */
export interface MustacheOptions {
  /**
   * Path of the template file, read once at construction (`name`, then `name.mustache`, then
   * `name.html` are tried). Partials resolve relative to its directory.
   */
  file?: string;
  /** The template text. With `file` as well, this text is used and the file only anchors partials. */
  template?: string;
  /**
   * Partial templates by name, consulted before any file. Without `file` they are the only partials.
   * @default {}
   */
  partials?: Record<string, string>;
}

/** A one-off render: a template as for `new Mustache(...)`, and the data. */
export interface MustacheRenderOptions extends MustacheOptions {
  /**
   * The view: values looked up by name, functions called as the `mustache` package does.
   * @default {}
   */
  data?: object;
}

/**
 * A Mustache template, parsed once and rendered many times.
 * @example
 * const page = new Iodine.Mustache({ file: "views/index.mustache" });
 * Iodine.listen({ service: "http", port: 3000, handler: () => new Response(page.render({ title: "Home" }), {
 *   headers: { "content-type": "text/html; charset=utf-8" },
 * }) });
 */
export class Mustache {
  readonly #text: string;
  readonly #tokens: Tokens;
  readonly #writer = new PartialWriter();
  readonly #root: Scope;
  /** file path → "mtime:size:ino" ("" when absent) of every file this template looked at */
  readonly #probes = new Map<string, string>();
  /** file path → its text and parsed forms, or null when it is absent */
  readonly #files = new Map<string, Source | null>();
  readonly #scopes = new Map<string, Scope>();
  readonly #map: Record<string, string> | undefined;
  readonly #mapSources = new Map<string, Source>();

  /** Reads (if `file`) and parses the template; a missing file or a syntax error throws `IodineError`. */
  constructor(options: MustacheOptions) {
    const { file, template, partials } = checkOptions(options, "new Iodine.Mustache");
    this.#map = partials && { ...partials };
    let text = template;
    let dirs: string[] = [];
    if (file !== undefined) {
      const path = resolve(file);
      dirs = [dirname(path)];
      if (text === undefined) {
        const found = this.#findFile(path);
        if (!found) {
          throw new IodineError(
            "EMUSTACHE_FILE",
            `Iodine.Mustache: template file "${file}" not found (tried ${candidates(path).join(", ")})`,
          );
        }
        text = found.text;
        dirs = [dirname(found.path)];
      }
    }
    this.#text = text!;
    this.#tokens = parse(this.#writer, this.#text, file ?? "template");
    this.#root = this.#scope(dirs);
  }

  /** Renders the template with `data`; `{{x}}` is HTML-escaped, `{{{x}}}` and `{{&x}}` are not. */
  render(data: object = {}): string {
    return this.#writer.renderTokens(
      this.#tokens as string[][],
      new SpecContext(data) as unknown as Context,
      this.#root,
      this.#text,
    );
  }

  /**
   * Renders a template once. A `file` template is kept, keyed by its path, and read again only when
   * it or a file it looked at (its partials, and the places a partial was missing) changed on disk.
   * @example
   * Iodine.Mustache.render({ template: "Hello {{name}}!", data: { name: "World" } });
   */
  static render(options: MustacheRenderOptions): string {
    const { file, template, partials } = checkOptions(options, "Iodine.Mustache.render");
    const data = options.data ?? {};
    if (partials !== undefined || (file !== undefined) === (template !== undefined)) {
      return new Mustache(options).render(data);
    }
    const key = file !== undefined ? "f" + resolve(file) : "t" + template;
    let m = oneOffs.get(key);
    if (m === undefined || (file !== undefined && !m.#isFresh())) {
      m = new Mustache(file !== undefined ? { file } : { template });
      oneOffs.set(key, m);
    }
    return m.render(data);
  }

  // --- internal ---

  #isFresh(): boolean {
    for (const [path, sig] of this.#probes) if (signature(path) !== sig) return false;
    return true;
  }

  /** The first of `path`, `path.mustache`, `path.html` that is a file, read once. */
  #findFile(path: string): Source | undefined {
    for (const p of candidates(path)) {
      let source = this.#files.get(p);
      if (source === undefined) {
        const sig = signature(p);
        this.#probes.set(p, sig);
        source = sig === "" ? null : { path: p, text: read(p), parsed: new Map() };
        this.#files.set(p, source);
      }
      if (source) return source;
    }
    return undefined;
  }

  /** The partial lookup for a template in `dirs[0]`, included from `dirs[1]`, … (one object per chain). */
  #scope(dirs: string[]): Scope {
    const key = dirs.join("\0");
    let scope = this.#scopes.get(key);
    if (scope) return scope;
    const found = new Map<string, Partial | null>();
    const enter = (name: string): Partial | undefined => {
      let partial = found.get(name);
      if (partial === undefined) {
        partial = this.#resolve(name, dirs, scope!) ?? null;
        found.set(name, partial);
      }
      return partial ?? undefined;
    };
    scope = Object.assign((name: string) => enter(name)?.source.text, { enter });
    this.#scopes.set(key, scope);
    return scope;
  }

  #resolve(name: string, dirs: string[], here: Scope): Partial | undefined {
    if (this.#map && Object.hasOwn(this.#map, name)) {
      let source = this.#mapSources.get(name);
      if (!source)
        this.#mapSources.set(
          name,
          (source = { path: name, text: this.#map[name]!, parsed: new Map() }),
        );
      return { source, scope: here };
    }
    if (name === "") return undefined;
    for (const dir of dirs) {
      const source = this.#findFile(join(dir, name));
      if (!source) continue;
      const at = dirname(source.path);
      return {
        source,
        scope: at === dirs[0] ? here : this.#scope([at, ...dirs.filter((d) => d !== at)]),
      };
    }
    return undefined;
  }
}

// --- internal ---

type Tokens = TemplateSpans;
type Context = InstanceType<typeof mustache.Context>;
type Writer = InstanceType<typeof mustache.Writer>;

/** A template's text and its parsed tokens, one per indentation it was included with. */
interface Source {
  path: string;
  text: string;
  parsed: Map<string, { text: string; tokens: Tokens }>;
}

interface Partial {
  source: Source;
  /** where the partial's own partials are looked up */
  scope: Scope;
}

/** A partial lookup: callable as the `mustache` package expects, and `enter` for our writer. */
type Scope = PartialLookupFn & { enter(name: string): Partial | undefined };

/** The tuple the `mustache` parser emits for `{{> name}}` (mustache.js 4.x, `parseTemplate`). */
type PartialToken = [">", string, number, number, string, number, boolean];

/**
 * A Writer whose partials carry their own lookup, so that a partial's partials resolve next to it,
 * and whose parsed partials are kept by us rather than found again by their text on every render.
 */
class PartialWriter extends mustache.Writer {
  constructor() {
    super();
    // The package's own cache (keyed by text) now only sees what section lambdas render: bound it.
    const cache = new Map<string, string>();
    (this as { templateCache?: TemplateCache }).templateCache = {
      get: (key) => cache.get(key),
      set: (key, value) => {
        if (cache.size >= 256) cache.clear();
        cache.set(key, value);
      },
      clear: () => cache.clear(),
    };
  }

  override renderPartial(
    token: string[],
    context: Context,
    partials?: PartialsOrLookupFn,
    config?: OpeningAndClosingTags | RenderOptions,
  ): string {
    if (typeof partials !== "function" || !("enter" in partials))
      return super.renderPartial(token, context, partials, config);
    const partial = (partials as Scope).enter(token[1]!);
    if (!partial) return "";
    const [, , , , indentation, tagIndex, lineHasNonSpace] = token as unknown as PartialToken;
    // A standalone partial tag's indentation is applied to every line of the partial (spec: partials).
    const key = tagIndex === 0 && indentation ? (lineHasNonSpace ? "+" : "-") + indentation : "";
    const { source } = partial;
    let parsed = source.parsed.get(key);
    if (!parsed) {
      const text =
        key === "" ? source.text : this.indentPartial(source.text, indentation, lineHasNonSpace);
      parsed = { text, tokens: parse(this, text, source.path) };
      source.parsed.set(key, parsed);
    }
    return this.renderTokens(
      parsed.tokens as string[][],
      context,
      partial.scope,
      parsed.text,
      config as RenderOptions,
    );
  }
}

/**
 * mustache.js's Context, except for dotted names: `{{a.b}}` finds `a` through the context stack and
 * then `b` only inside it, as the spec requires ("Dotted Names - Context Precedence"); mustache.js
 * would go on to outer contexts for `a.b` when that `a` has no `b`. Not a subclass: a derived class
 * costs ~5% of a render here (JSC constructs and dispatches it more slowly), so the whole lookup is
 * ours and only the prototype is mustache.Context's (`render()` in a section lambda checks it).
 */
class SpecContext {
  readonly view: unknown;
  readonly parent: SpecContext | undefined;
  readonly #cache: Record<string, unknown>;

  constructor(view: unknown, parent?: SpecContext) {
    this.view = view;
    this.parent = parent;
    this.#cache = { ".": view };
  }

  push(view: unknown): SpecContext {
    return new SpecContext(view, this);
  }

  lookup(name: string): unknown {
    const cache = this.#cache;
    let value: unknown;
    if (Object.hasOwn(cache, name)) {
      value = cache[name];
    } else {
      const dot = name.indexOf(".");
      const first = dot > 0 ? name.slice(0, dot) : name;
      let context: SpecContext | undefined = this;
      while (context && !hasProperty(context.view, first)) context = context.parent;
      if (context) {
        value = (context.view as Record<string, unknown>)[first];
        if (dot > 0) {
          for (const part of name.slice(dot + 1).split(".")) {
            if (value == null) break;
            value = (value as Record<string, unknown>)[part];
          }
        }
      }
      cache[name] = value;
    }
    return typeof value === "function" ? value.call(this.view) : value;
  }
}
Object.setPrototypeOf(SpecContext.prototype, mustache.Context.prototype);

const hasProperty = (view: unknown, name: string) =>
  typeof view === "object" && view !== null && name in view;

/** Parses with the default delimiters; a syntax error names the template it is in. */
function parse(writer: Writer, text: string, name: string): Tokens {
  try {
    return writer.parse(text, ["{{", "}}"]) as Tokens;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new IodineError("EMUSTACHE_PARSE", `Iodine.Mustache: cannot parse "${name}": ${why}`, {
      cause: err,
    });
  }
}

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new IodineError("EMUSTACHE_FILE", `Iodine.Mustache: cannot read "${path}": ${why}`, {
      cause: err,
    });
  }
}

const candidates = (path: string) => [path, path + ".mustache", path + ".html"];

/** What tells one version of a file from the next; "" when there is no regular file at `path`. */
function signature(path: string): string {
  const st = statSync(path, { throwIfNoEntry: false });
  return st?.isFile() ? `${st.mtimeMs}:${st.size}:${st.ino}` : "";
}

/** One-off templates, by file path or template text; the oldest goes first past 256. */
const oneOffs = new (class extends Map<string, Mustache> {
  override set(key: string, value: Mustache): this {
    this.delete(key);
    if (this.size >= 256) this.delete(this.keys().next().value!);
    return super.set(key, value);
  }
})();

function checkOptions(options: MustacheOptions, where: string): MustacheOptions {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `${where}: expected an options object ({ file } or { template }), got ${describe(options)}`,
    );
  }
  const { file, template, partials } = options;
  if (file === undefined && template === undefined) {
    throw new TypeError(
      `${where}: pass "file" (a template path) or "template" (the template text); got neither`,
    );
  }
  if (file !== undefined && typeof file !== "string")
    throw new TypeError(`${where}: "file" must be a string, got ${describe(file)}`);
  if (template !== undefined && typeof template !== "string") {
    throw new TypeError(`${where}: "template" must be a string, got ${describe(template)}`);
  }
  if (partials !== undefined) {
    if (typeof partials !== "object" || partials === null) {
      throw new TypeError(
        `${where}: "partials" must be an object of name → template text, got ${describe(partials)}`,
      );
    }
    for (const [name, text] of Object.entries(partials)) {
      if (typeof text !== "string")
        throw new TypeError(
          `${where}: partials["${name}"] must be a string, got ${describe(text)}`,
        );
    }
  }
  return { file, template, partials };
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  return value === null ? "null" : typeof value === "object" ? "an object" : String(value);
}
