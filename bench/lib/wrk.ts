// wrk runs: one command line, its output read back into numbers.
import type { Subprocess } from "bun";
import { indent } from "./processes.ts";
import { notesText } from "./stats.ts";

export interface WrkResult {
  rps: number;
  requests: number;
  seconds: number;
  latencyAvg: string;
  transferPerSec: string;
  socketErrors: { connect: number; read: number; write: number; timeout: number } | null;
  non2xx: number;
}

/** Runs wrk once; `onSpawn` gets the process so an interrupt can kill it. */
export async function runWrk(
  url: string,
  o: { threads: number; connections: number; seconds: number },
  onSpawn?: (p: Subprocess) => void,
): Promise<WrkResult> {
  const cmd = ["wrk", `-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, url];
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  onSpawn?.(p);
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  if (code !== 0)
    throw new Error(`wrk exited with code ${code}\n  $ ${cmd.join(" ")}\n${indent(out + err)}`);
  return parseWrk(out);
}

export function parseWrk(out: string): WrkResult {
  const rps = out.match(/^Requests\/sec:\s+([\d.]+)/m);
  const total = out.match(/^\s*(\d+) requests in ([\d.]+)(m?s|m|h)/m);
  if (!rps || !total) throw new Error(`cannot read wrk output:\n${indent(out)}`);
  const sock = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const unit = total[3] === "ms" ? 0.001 : total[3] === "m" ? 60 : total[3] === "h" ? 3600 : 1;
  return {
    rps: Number(rps[1]),
    requests: Number(total[1]),
    seconds: Number(total[2]) * unit,
    latencyAvg: out.match(/^\s*Latency\s+(\S+)/m)?.[1] ?? "",
    transferPerSec: out.match(/^Transfer\/sec:\s+(\S+)/m)?.[1] ?? "",
    socketErrors: sock
      ? {
          connect: Number(sock[1]),
          read: Number(sock[2]),
          write: Number(sock[3]),
          timeout: Number(sock[4]),
        }
      : null,
    non2xx: Number(out.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
  };
}

/** Socket errors and non-2xx answers of a wrk run, to end its line; "" when there were none. */
export function wrkNote(r: WrkResult): string {
  const notes: string[] = [];
  const e = r.socketErrors;
  if (e)
    notes.push(
      `socket errors: connect ${e.connect}, read ${e.read}, write ${e.write}, timeout ${e.timeout}`,
    );
  if (r.non2xx) notes.push(`${r.non2xx} non-2xx`);
  return notesText(notes);
}
