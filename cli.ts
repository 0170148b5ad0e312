#!/usr/bin/env -S bun --max-http-header-size=32768
// `iodine [options] [APP]` (SPEC §2). Every problem with the command line, the environment or the
// app module is one stderr line `iodine: <problem>` and exit code 2: no stack, no usage dump.
import type { CommandDef } from "citty";
import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { defaultAppPath, loadApp } from "./src/app.ts";
import { CliError, ListenError } from "./src/errors.ts";
import { getVerbosity, log, setVerbosity } from "./src/log.ts";
import { cittyArgs, readArgv, readConfigText, type RawOptions } from "./src/options.ts";
import { enterMaster, runMaster, selfCommand, StartError } from "./src/cluster/master.ts";
import { enterWorker, isWorkerProcess, reportStartFailure, startWorker } from "./src/cluster/worker.ts";
import { setDefaultEngine } from "./src/pubsub/engine-api.ts";
import { RedisEngine } from "./src/pubsub/redis.ts";
import { ShardedRedisEngine } from "./src/pubsub/redis-sharded.ts";
import { addListener, driveFromCli, isStarted, listenerCount, plannedAddress, ranAsScript, role, startAll, stopAll } from "./src/runtime.ts";
import { captureBunServe } from "./src/bun-serve.ts";
import { DEFAULTS, resolveSettings, type Settings } from "./src/settings.ts";
import { selfSigned, tlsFromFiles } from "./src/tls.ts";
import type { AppObject, TLSOptions } from "./src/types.ts";
import pkg from "./package.json" with { type: "json" };

async function main(argv: string[]): Promise<void> {
  const cli = readArgv(argv);
  if (cli.values.get("help") === true) {
    // citty only for the help text: loading it costs a few ms of every start-up.
    const { renderUsage } = await import("citty");
    const command: CommandDef = {
      meta: { name: "iodine", version: pkg.version, description: "serve a Bun app: HTTP, WebSocket, SSE, pub/sub, static files" },
      args: cittyArgs(),
    };
    const usage = (await renderUsage(command)) + "\n\nEvery option also takes the -option=value form.\n";
    // citty colours unless NO_COLOR is exactly "1", even into a pipe or a file.
    process.stdout.write(colours() ? usage : Bun.stripANSI(usage).replace(/[ \t]+$/gm, ""));
    return;
  }
  if (cli.values.get("version") === true) {
    process.stdout.write(`iodine ${pkg.version} (bun ${Bun.version})\n`);
    return;
  }

  const settings = resolveSettings(cli, readConfig(cli), process.env);
  if (relaunchForHeaderLimit(settings.maxHeader)) return;
  setVerbosity(settings.verbosity);

  const worker = isWorkerProcess();
  const cluster = !worker && (settings.workers > 1 || settings.threads > 1);
  if (cluster && settings.unix !== undefined) {
    throw new CliError(
      `a Unix socket cannot be shared by several workers (Bun.serve cannot adopt an inherited socket); ` +
        `use -w 1 -t 1 with -b ${settings.unix}, or a TCP port`,
    );
  }
  const tls = await tlsFor(settings);
  driveFromCli({
    port: settings.port,
    hostname: settings.hostname,
    unix: settings.unix,
    www: settings.www,
    tls,
    verbose: settings.verbose,
    keepAlive: settings.keepAlive,
    bodyTimeout: settings.bodyTimeout,
    maxBody: settings.maxBody,
    keepAliveGiven: settings.given.has("keep-alive"),
    maxBodyGiven: settings.given.has("max-body"),
    ping: settings.ping,
    maxMsg: settings.maxMsg,
    deflate: settings.deflate,
    warmup: settings.warmup,
    drainMs: DEFAULTS.drainMs,
  });
  if (settings.www !== undefined && !isDirectory(settings.www)) {
    throw new CliError(`public folder not found: ${settings.www}`);
  }

  const appFile = settings.app || defaultAppPath();
  if (worker) enterWorker();
  else if (cluster) enterMaster();
  // Every process makes the engine (the app may replace it); only the master, or a single process, connects it.
  if (settings.redis !== undefined) setDefaultEngine(redisEngine(settings.redis, settings.redisPing));
  // A script that calls Bun.serve itself is served as if it had exported those options (SPEC §3).
  captureBunServe({ register: (options) => addListener({ service: "http", handler: options as AppObject }), started: isStarted, planned: plannedAddress, stop: () => stopAll() });
  const app = await loadApp(appFile, ranAsScript);
  // The default export is an HTTP app by definition (SPEC §3), whatever its shape.
  if (app) addListener({ service: "http", handler: app });
  if (worker) return startWorker(settings.threads);
  writePid(settings.pid);
  if (!cluster) return startAll();
  if (listenerCount() === 0) {
    // A client script (timers, clients, pub/sub, no listener): N copies would each connect and act
    // on their own, so it runs once, as the single process it would be with -w 1.
    log.warn(`${appFile} opens no listener: it runs as one process (--workers and --threads apply to listeners)`);
    role.isWorker = true;
    return startAll();
  }
  await runMaster({
    workers: settings.workers,
    threads: settings.threads,
    drainMs: DEFAULTS.drainMs,
    // A self-signed certificate is made once, so every worker presents the same one.
    env: tls && settings.tlsCert === undefined ? { IODINE_TLS_CERT_PEM: String(tls.cert), IODINE_TLS_KEY_PEM: String(tls.key) } : {},
  });
}

/** `-r URL`: the Redis engine, or with `?sharded` in the URL the Redis Cluster (sharded pub/sub) engine. */
function redisEngine(url: string, ping: number): RedisEngine | ShardedRedisEngine {
  const sharded = /[?&]sharded(=(1|true|yes))?(?=&|$)/;
  if (!sharded.test(url)) return new RedisEngine(url, { ping });
  const plain = url.replace(sharded, (m) => (m.startsWith("?") ? "?" : "")).replace(/\?&/, "?").replace(/\?$/, "");
  return new ShardedRedisEngine(plain, { ping });
}

/** Colour codes only for a terminal, and not when $NO_COLOR is set to anything (no-color.org) or TERM=dumb. */
function colours(): boolean {
  return process.stdout.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== "dumb";
}

function readConfig(cli: RawOptions): RawOptions | undefined {
  const file = cli.values.get("config");
  if (typeof file !== "string") return undefined;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read the config file "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const config = readConfigText(text, file);
  if (config.values.has("config")) throw new CliError(`${file}: a config file cannot name another config file`);
  return config;
}

/**
 * Bun's largest header block is a runtime flag (`--max-http-header-size`, 16 KiB by default);
 * Bun.serve has no option for it. When this process runs with another value than --max-header,
 * run the same command again with the flag (through $BUN_OPTIONS, which the compiled executable
 * honours too), pass signals through, and exit with the child's code. Returns true when it did.
 */
function relaunchForHeaderLimit(bytes: number): boolean {
  const maxHeaderSize = bunHeaderLimit();
  if (maxHeaderSize === bytes) return false;
  if (process.env.IODINE_RELAUNCHED === "1") {
    throw new CliError(`cannot set Bun's maximum header size to ${bytes} bytes (it is ${maxHeaderSize})`);
  }
  // Without bun's own flags: the header size comes from $BUN_OPTIONS, not a flag given before.
  const cmd = selfCommand(false);
  const bunOptions = `${process.env.BUN_OPTIONS ?? ""} --max-http-header-size=${bytes}`.trim();
  const child = Bun.spawn(cmd, {
    env: { ...process.env, BUN_OPTIONS: bunOptions, IODINE_RELAUNCHED: "1" },
    stdio: ["inherit", "inherit", "inherit"],
  });
  for (const sig of ["SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP"] as const) {
    process.on(sig, () => child.kill(sig));
  }
  child.exited.then((code) => process.exit(code ?? 1));
  return true;
}

/**
 * The running Bun's largest header block. Given once in Bun's own flags (the command line,
 * $BUN_OPTIONS or an executable's embedded flags all show in `process.execArgv`), that is the value;
 * otherwise ask node:http, whose loading costs about a third of iodine's start-up.
 */
function bunHeaderLimit(): number {
  const given: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--max-http-header-size=")) given.push(a.slice(a.indexOf("=") + 1));
    else if (a === "--max-http-header-size" && i + 1 < argv.length) given.push(argv[++i]!);
  }
  if (given.length === 1 && /^\d+$/.test(given[0]!)) return Number(given[0]);
  return (require("node:http") as typeof import("node:http")).maxHeaderSize;
}

async function tlsFor(s: Settings): Promise<TLSOptions | undefined> {
  if (s.tlsCert !== undefined && s.tlsKey !== undefined) return tlsFromFiles(s.tlsCert, s.tlsKey, s.tlsPass);
  const cert = process.env.IODINE_TLS_CERT_PEM;
  const key = process.env.IODINE_TLS_KEY_PEM;
  if (s.tls && isWorkerProcess() && cert && key) return { cert, key };
  if (s.tls) return selfSigned();
  return undefined;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function writePid(file: string | undefined): void {
  if (file === undefined) return;
  try {
    writeFileSync(file, `${process.pid}\n`);
  } catch (err) {
    throw new CliError(`cannot write the pid file "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  process.on("exit", () => {
    if (existsSync(file)) unlinkSync(file);
  });
}

// When the relaunched child is orphaned (its parent was killed), it must not linger.
if (process.env.IODINE_RELAUNCHED === "1") {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 1000).unref();
}

main(process.argv.slice(2)).catch((err: unknown) => {
  // What the user can fix is one line and exit code 2; anything else is a bug, shown with its stack.
  const fixable = err instanceof CliError || err instanceof StartError || err instanceof ListenError;
  const text = fixable ? withStack(err.message, err.cause) : `failed to start: ${(err as Error)?.stack ?? String(err)}`;
  const code = fixable ? 2 : 1;
  // A cluster worker tells its master, which says it once for every worker.
  if (reportStartFailure(text, code)) return;
  log.error(text);
  process.exit(code);
});

/** At -V 5 (debug) the stack of what caused an error follows its line, in the same log entry. */
function withStack(message: string, cause: unknown): string {
  if (getVerbosity() < 5 || !(cause instanceof Error)) return message;
  const frames = (cause.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
  return frames.length === 0 ? message : `${message}\n${frames.join("\n")}`;
}
