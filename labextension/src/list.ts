/** The list of executions, newest first: one row each, updated in place at every poll. */
import { PageConfig } from '@jupyterlab/coreutils';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import type { IExecution, IState } from './api';
import { h, replaceChildren } from './dom';
import { basename, jobsSummary, notebookOf, timing } from './format';
import { environmentCounters, progressBar, stateBadge } from './views';

/** An execution as the list shows it: its row of the list, with its state when known. */
export interface IRow {
  execution: IExecution;
  state?: IState;
}

export class ExecutionList extends Widget {
  constructor() {
    super({ node: h('ul', { class: 'jp-mole-list', role: 'listbox', 'aria-label': 'Executions' }) });
    this.addClass('jp-mole-ListWidget');
    this.node.addEventListener('click', this);
    this.node.addEventListener('keydown', this);
  }

  /** The selected execution's id changed (null: none). */
  get selectionChanged(): ISignal<this, string | null> {
    return this._selectionChanged;
  }

  get selected(): string | null {
    return this._selected;
  }

  set selected(id: string | null) {
    if (id === this._selected) {
      return;
    }
    this._selected = id;
    for (const [rowId, item] of this._items) {
      item.classList.toggle('jp-mod-selected', rowId === id);
      item.setAttribute('aria-selected', String(rowId === id));
    }
    this._selectionChanged.emit(id);
  }

  /** Show these rows (newest first), reusing the elements of the rows already shown. */
  setRows(rows: IRow[], now: number): void {
    const seen = new Set<string>();
    let previous: HTMLElement | null = null;
    for (const row of rows) {
      const id = row.execution.id;
      seen.add(id);
      let item = this._items.get(id);
      if (!item) {
        item = h('li', {
          class: 'jp-mole-row',
          role: 'option',
          tabindex: 0,
          'data-id': id
        });
        this._items.set(id, item);
      }
      render(item, row, now, id === this._selected);
      const next: ChildNode | null = previous ? previous.nextSibling : this.node.firstChild;
      if (next !== item) {
        this.node.insertBefore(item, next);
      }
      previous = item;
    }
    for (const [id, item] of this._items) {
      if (!seen.has(id)) {
        item.remove();
        this._items.delete(id);
      }
    }
    if (rows.length === 0) {
      this.node.appendChild(this._empty);
    } else {
      this._empty.remove();
    }
    if (this._selected !== null && !seen.has(this._selected)) {
      this.selected = null;
    }
  }

  handleEvent(event: Event): void {
    const item = (event.target as HTMLElement).closest<HTMLElement>('.jp-mole-row');
    if (!item || !this.node.contains(item)) {
      return;
    }
    if (event.type === 'click') {
      this.selected = item.dataset.id ?? null;
    } else if (event.type === 'keydown') {
      const key = (event as KeyboardEvent).key;
      if (key === 'Enter' || key === ' ') {
        event.preventDefault();
        this.selected = item.dataset.id ?? null;
      } else if (key === 'ArrowDown' || key === 'ArrowUp') {
        event.preventDefault();
        const sibling = key === 'ArrowDown' ? item.nextElementSibling : item.previousElementSibling;
        (sibling as HTMLElement | null)?.focus();
      }
    }
  }

  dispose(): void {
    this.node.removeEventListener('click', this);
    this.node.removeEventListener('keydown', this);
    super.dispose();
  }

  private _items = new Map<string, HTMLElement>();
  private _selected: string | null = null;
  private _selectionChanged = new Signal<this, string | null>(this);
  private _empty = h(
    'li',
    { class: 'jp-mole-empty' },
    'No execution yet. Run a script with %%mole in a notebook, or right-click a .oms file: Run on OpenMOLE.'
  );
}

function render(item: HTMLElement, row: IRow, now: number, selected: boolean): void {
  const { execution, state } = row;
  const stateName = state?.state ?? execution.state;
  const counters = state ?? execution;
  const notebook = notebookOf(execution, PageConfig.getOption('serverRoot'));
  item.dataset.state = stateName ?? 'unknown';
  item.classList.toggle('jp-mod-selected', selected);
  item.setAttribute('aria-selected', String(selected));
  item.title = `${execution.script ?? execution.id}\nid ${execution.id}${notebook ? `\nfrom ${notebook}` : ''}`;
  const error = stateName === 'failed' ? (state?.error?.message ?? execution.error) : undefined;
  replaceChildren(
    item,
    h(
      'div',
      { class: 'jp-mole-row-head' },
      h('span', { class: 'jp-mole-script' }, basename(execution.script) || execution.id.slice(0, 8)),
      stateBadge(stateName)
    ),
    notebook ? h('div', { class: 'jp-mole-tag', title: notebook }, notebook) : null,
    progressBar(counters, stateName),
    h(
      'div',
      { class: 'jp-mole-row-foot' },
      h(
        'span',
        {
          class: 'jp-mole-jobs',
          title: `${counters.ready ?? 0} ready, ${counters.running ?? 0} running, ${counters.completed ?? 0} completed`
        },
        jobsSummary(counters)
      ),
      h('span', { class: 'jp-mole-time' }, timing(execution, now, stateName))
    ),
    state && state.environments.length ? environmentCounters(state.environments) : null,
    error ? h('div', { class: 'jp-mole-row-error' }, error) : null
  );
}
