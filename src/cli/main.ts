// `iodine [options] [APP]` (SPEC §2), started by cli.ts: read the command line, load the app, then
// serve it here or hand it to a cluster supervisor. Every problem with the command line, the
// environment or the app module is one stderr line `iodine: <problem>` and exit code 2: no stack,
// no usage dump.
import { loadApp, defaultAppPath } from "./load-app.ts";
import { readArgv, usage } from "./options.ts";
import { leaveWhenOrphaned, relaunchForHeaderLimit } from "./relaunch.ts";
import { countIfAsked, serveClusterMetrics, serveSingleMetrics } from "./metrics.ts";
import { readConfig, resolveSettings, type Settings } from "./settings.ts";
import { checkPublicFolder, redisEngine, tlsFor, tlsForWorkers, writePid } from "./setup.ts";
import { isWorkerProcess } from "../cluster/role.ts";
import { CliError, ListenError, StartError } from "../errors.ts";
import { driveFromCli, listenerCount, startAll } from "../lifecycle.ts";
import { trackResponseBodies } from "../http/body-size.ts";
import { log, setLogFormat, setVerbosity, withCauseStack } from "../log.ts";
import { CLUSTER_MASTER, SINGLE_PROCESS, type Placement } from "../placement.ts";
import { setDefaultEngine } from "../pubsub/engine-api.ts";
import pkg from "../../package.json" with { type: "json" };

async function main(argv: string[]): Promise<void> {
  const cli = readArgv(argv);
  if (cli.values.get("help") === true) return void process.stdout.write(await usage(pkg.version));
  if (cli.values.get("version") === true)
    return void process.stdout.write(`iodine ${pkg.version} (bun ${Bun.version})\n`);

  const settings = resolveSettings(cli, readConfig(cli), process.env);
  if (relaunchForHeaderLimit(settings.maxHeader)) return;
  setVerbosity(settings.verbosity);
  setLogFormat(settings.logFormat);
  countIfAsked(settings);

  const worker = isWorkerProcess();
  const cluster = !worker && (settings.workers > 1 || settings.threads > 1);
  if (cluster && settings.unix !== undefined) {
    throw new CliError(
      `a Unix socket cannot be shared by several workers (Bun.serve cannot adopt an inherited socket); ` +
        `use -w 1 -t 1 with -b ${settings.unix}, or a TCP port`,
    );
  }
  const tls = await tlsFor(settings, worker);
  checkPublicFolder(settings.www);
  const appFile = settings.app || defaultAppPath();
  // Where this process runs is settled before the app module loads, so `Iodine.isMaster` is right in it.
  // The cluster's code loads only in a cluster: a single process does not pay for it at start.
  const workerSide = worker ? await import("../cluster/worker.ts") : undefined;
  const placement = workerSide?.enterWorker() ?? (cluster ? CLUSTER_MASTER : SINGLE_PROCESS);
  driveFromCli(settings, tls, placement);
  // Every process makes the engine (the app may replace it); only the master, or a single process, connects it.
  if (settings.redis !== undefined)
    setDefaultEngine(await redisEngine(settings.redis, settings.redisPing));
  // The access log's byte counts: the global Response is swapped before the app can capture it.
  if (settings.verbose) trackResponseBodies();
  await loadApp(appFile);
  if (workerSide) return workerSide.startWorker(placement, settings.threads);
  writePid(settings.pid);
  if (!cluster) return startSingle(settings);
  if (listenerCount() === 0) {
    // A client script (timers, clients, pub/sub, no listener): N copies would each connect and act
    // on their own, so it runs once, as the single process it would be with -w 1.
    log.warn(
      `${appFile} opens no listener: it runs as one process (--workers and --threads apply to listeners)`,
    );
    return startSingle(settings, SINGLE_PROCESS);
  }
  const { Supervisor } = await import("../cluster/supervisor.ts");
  const supervisor = new Supervisor(settings, tlsForWorkers(settings, tls));
  await serveClusterMetrics(settings, supervisor);
  await supervisor.start();
}

async function startSingle(settings: Settings, runAs?: Placement): Promise<void> {
  let started = false;
  await serveSingleMetrics(settings, () => started);
  await startAll(runAs);
  started = true;
}

leaveWhenOrphaned();

main(process.argv.slice(2)).catch(async (err: unknown) => {
  // What the user can fix is one line and exit code 2; anything else is a bug, shown with its stack.
  const fixable =
    err instanceof CliError || err instanceof StartError || err instanceof ListenError;
  const text = fixable
    ? withCauseStack(err.message, err.cause)
    : `failed to start: ${(err as Error)?.stack ?? String(err)}`;
  const code = fixable ? 2 : 1;
  // A cluster worker tells its master, which says it once for every worker.
  if (isWorkerProcess() && (await import("../cluster/worker.ts")).reportStartFailure(text, code))
    return;
  log.error(text);
  process.exit(code);
});
