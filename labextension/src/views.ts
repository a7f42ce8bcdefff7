/** Small DOM pieces shared by the list and the details: state badge, progress bar, counters. */
import type { ICounters, IEnvironment } from './api';
import { h } from './dom';
import { environments, progress } from './format';

/** The state as a coloured label (`data-state` drives the colour). */
export function stateBadge(state: string | undefined): HTMLElement {
  const text = state || 'unknown';
  return h('span', { class: 'jp-mole-state', 'data-state': text }, text);
}

/** A progress bar: completed jobs over all the jobs known so far. */
export function progressBar(counters: Partial<ICounters>, state?: string): HTMLElement {
  const p = progress(counters, state);
  const percent = Math.round(p.fraction * 1000) / 10;
  const label = p.total ? `${p.done} of ${p.total} jobs completed` : state === 'finished' ? 'finished' : 'no job yet';
  const bar = h('div', {
    class: 'jp-mole-progress-bar',
    style: `width: ${percent}%`
  });
  return h(
    'div',
    {
      class: 'jp-mole-progress',
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': percent,
      'aria-label': label,
      title: `${label} (${percent}%)`,
      'data-state': state ?? 'unknown'
    },
    bar
  );
}

/** "3 ready · 2 running · 95 completed". */
export function jobCounters(counters: Partial<ICounters>): HTMLElement {
  return h(
    'span',
    { class: 'jp-mole-counters' },
    counter('ready', counters.ready, 'jobs waiting'),
    counter('running', counters.running, 'jobs running'),
    counter('completed', counters.completed, 'jobs completed')
  );
}

/** One line per environment: submitted, running, done, failed jobs. */
export function environmentCounters(list: IEnvironment[]): HTMLElement {
  return h(
    'div',
    { class: 'jp-mole-environments' },
    ...environments(list).map(env =>
      h(
        'div',
        { class: 'jp-mole-environment', 'data-environment': env.name },
        h('span', { class: 'jp-mole-environment-name' }, env.name ?? ''),
        counter('submitted', env.submitted, 'submitted to the environment'),
        counter('running', env.running, 'running on the environment'),
        counter('done', env.done, 'done'),
        counter('failed', env.failed, 'failed (and retried or reported)')
      )
    )
  );
}

function counter(name: string, value: number | undefined, help: string): HTMLElement {
  return h(
    'span',
    {
      class: 'jp-mole-counter',
      'data-counter': name,
      'data-nonzero': (value ?? 0) > 0,
      title: `${value ?? 0} ${help}`
    },
    h('span', { class: 'jp-mole-counter-value' }, String(value ?? 0)),
    ` ${name}`
  );
}
