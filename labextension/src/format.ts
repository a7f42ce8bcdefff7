/** Pure formatting: durations, ages, progress and counters (no DOM here). */
import type { ICounters, IEnvironment, IExecution } from './api';

/** "850 ms", "12 s", "3 min 5 s", "2 h 4 min", "3 d 1 h". */
export function duration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const units: [number, string][] = [
    [86400, 'd'],
    [3600, 'h'],
    [60, 'min'],
    [1, 's']
  ];
  const parts: string[] = [];
  let rest = Math.round(seconds);
  for (const [size, name] of units) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)} ${name}`);
      rest %= size;
    }
    if (parts.length === 2) {
      break;
    }
  }
  return parts.join(' ');
}

/** "just now", "3 min ago". */
export function age(epochSeconds: number | undefined, now: number): string {
  if (epochSeconds === undefined || epochSeconds === null) {
    return '';
  }
  const seconds = now - epochSeconds;
  return seconds < 5 ? 'just now' : `${duration(seconds).split(' ').slice(0, 2).join(' ')} ago`;
}

/**
 * What the row shows of an execution's time: how long it has run, or how long it took.
 * `state` (fresher than the list's row) says whether it is over, even before `ended` is known.
 */
export function timing(execution: IExecution, now: number, state?: string): string {
  const { submitted, started, ended } = execution;
  const from = started ?? submitted;
  const over = (state ?? execution.state ?? 'running') !== 'running';
  if (ended !== undefined && ended !== null && from !== undefined && from !== null) {
    return `took ${duration(ended - from)}, ${age(ended, now)}`;
  }
  if (over) {
    return submitted !== undefined && submitted !== null ? `submitted ${age(submitted, now)}` : '';
  }
  if (from !== undefined && from !== null) {
    return `${started !== undefined && started !== null ? 'running' : 'waiting'} ${duration(now - from)}`;
  }
  return '';
}

/**
 * Newest first: by submission time, latest first. Rows without one (a backend that lists ids
 * only) keep the backend's order, after the others.
 */
export function newestFirst<T extends Pick<IExecution, 'submitted'>>(executions: T[]): T[] {
  const when = (e: T) => (typeof e.submitted === 'number' ? e.submitted : -Infinity);
  return [...executions].sort((a, b) => {
    const [x, y] = [when(a), when(b)];
    return x === y ? 0 : x < y ? 1 : -1;
  });
}

export interface IProgress {
  done: number;
  total: number;
  /** 0 to 1. */
  fraction: number;
}

/** Completed jobs over all jobs known so far; a finished run with no job is complete. */
export function progress(counters: Partial<ICounters>, state?: string): IProgress {
  const ready = counters.ready ?? 0;
  const running = counters.running ?? 0;
  const done = counters.completed ?? 0;
  const total = ready + running + done;
  if (total === 0) {
    return { done: 0, total: 0, fraction: state === 'finished' ? 1 : 0 };
  }
  return { done, total, fraction: done / total };
}

/** Environments' counters summed by name (a workflow may use one environment many times). */
export function environments(list: IEnvironment[]): IEnvironment[] {
  const byName = new Map<string, IEnvironment>();
  for (const env of list) {
    const name = env.name || 'environment';
    const sum = byName.get(name) ?? { name, submitted: 0, running: 0, done: 0, failed: 0 };
    sum.submitted += env.submitted;
    sum.running += env.running;
    sum.done += env.done;
    sum.failed += env.failed;
    byName.set(name, sum);
  }
  return [...byName.values()];
}

/** "12.3 kB". */
export function size(bytes: number | undefined): string {
  if (bytes === undefined || bytes === null) {
    return '';
  }
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The last part of a path. */
export function basename(path: string | undefined): string {
  if (!path) {
    return '';
  }
  const parts = path.split('/').filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}

/**
 * A path of the server's file system shown relative to Jupyter's root when it is inside it
 * (`root` as JupyterLab's page config gives it, maybe starting with `~`); else unchanged.
 */
export function relativeToRoot(path: string, root: string): string {
  if (!path.startsWith('/') || !root) {
    return path;
  }
  const tail = `${root.replace(/\/+$/, '').replace(/^~/, '')}/`;
  const at = root.startsWith('~') ? path.indexOf(tail) : path.startsWith(tail) ? 0 : -1;
  return at >= 0 ? path.slice(at + tail.length) : path;
}

/**
 * The notebook (or script) an execution came from, its `notebook` tag, named as the file browser
 * names files: relative to Jupyter's root. `%%mole` tags it so when Jupyter tells the kernel its
 * root; tags written otherwise (an absolute path) are shown relative here, the same in every view.
 */
export function notebookOf(execution: IExecution, root: string): string | undefined {
  const tag = execution.tags?.notebook;
  return tag ? relativeToRoot(tag, root) : undefined;
}

/** "98/100 jobs" (all three counters are in the element's title). */
export function jobsSummary(counters: Partial<ICounters>): string {
  const p = progress(counters);
  return p.total ? `${p.done}/${p.total} jobs` : 'no job yet';
}
