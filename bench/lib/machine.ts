// What a bench measures besides its own clients, from /proc: CPU time, memory, limits, children;
// and the facts about the machine a result depends on.
import { readFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, release, totalmem } from "node:os";

// --- CPU ---

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * CPU time (user + system, in clock ticks) of a process and all its descendants (nginx serves from
 * a forked worker). Steal time on a shared VM moves req/s a lot; the CPU a server spends per
 * request moves far less, so the report gives both.
 */
export function cpuTicks(pid: number): number {
  let total = 0;
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat) {
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
  }
  for (const child of (readProc(`/proc/${pid}/task/${pid}/children`) ?? "").split(" ")) {
    if (child.trim() !== "") total += cpuTicks(Number(child));
  }
  return total;
}

/** Microseconds of CPU per request from a tick delta. */
export const cpuMicros = (ticks: number, requests: number) =>
  (ticks * 1e6) / TICKS_PER_SECOND / requests;

/** Seconds of CPU from a tick delta. */
export const cpuSeconds = (ticks: number) => ticks / TICKS_PER_SECOND;

// --- memory and limits ---

/** Resident set size of a process (VmRSS in /proc/PID/status), bytes; NaN once it is gone. */
export function rssBytes(pid: number): number {
  const kb = readProc(`/proc/${pid}/status`)?.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return kb === undefined ? NaN : Number(kb) * 1024;
}

/** "soft/hard" open-file limit of a process, from /proc/PID/limits. */
export function openFilesLimit(pid: number): string {
  const m = readProc(`/proc/${pid}/limits`)?.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  return m ? `${m[1]}/${m[2]}` : "?";
}

/** Child pids of a process (an iodine that relaunched itself serves from its child). */
export function childPids(pid: number): number[] {
  return (readProc(`/proc/${pid}/task/${pid}/children`) ?? "")
    .split(" ")
    .filter((c) => c.trim() !== "")
    .map(Number);
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

// --- the machine ---

/** What a result depends on besides the code, taken before the run starts. */
export function machineFacts() {
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model.trim() ?? "unknown",
    kernel: release(),
    ramBytes: totalmem(),
    bun: Bun.version,
    date: new Date().toISOString(),
    loadAvg1m: loadavg()[0] ?? 0,
  };
}

/** The `machine:` line, then `lines` (tools, date), then a warning if something else is busy. */
export function printMachine(f: ReturnType<typeof machineFacts>, ...lines: string[]): void {
  console.log(`machine: ${f.cores} cores (${f.cpu}), Linux ${f.kernel}`);
  for (const line of lines) console.log(line);
  // the bench already fills every core; anything else running skews the ratios
  if (f.loadAvg1m > 0.5) {
    console.log(
      `!! load average ${f.loadAvg1m.toFixed(2)} before start: something else is busy, expect noise`,
    );
  }
}
