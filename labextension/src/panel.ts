/**
 * The sidebar: the backend, the executions (newest first) and the selected one's details.
 *
 * One poll drives everything. It backs off when the server fails (and says why
 * in the panel), and stands by while the panel or the browser tab is hidden.
 */
import { Poll } from '@lumino/polling';
import { Panel, Widget } from '@lumino/widgets';

import { IExecution, IService, IState, MoleApi, MoleError } from './api';
import { ExecutionDetails, IDetailsOptions } from './details';
import { h, replaceChildren } from './dom';
import { newestFirst } from './format';
import { moleIcon } from './icon';
import { ExecutionList, IRow } from './list';

export interface IPanelSettings {
  /** Seconds between two refreshes. */
  pollInterval: number;
  /** Characters of output kept in the details. */
  maxOutput: number;
}

export interface IPanelOptions extends Omit<IDetailsOptions, 'changed' | 'maxOutput'> {
  settings: IPanelSettings;
}

/** States asked per refresh for executions whose state is not known yet (the list may be long). */
const NEW_STATES_PER_TICK = 20;
const MAX_BACKOFF_MS = 60_000;

export class MolePanel extends Panel {
  constructor(private readonly options: IPanelOptions) {
    super();
    this.id = 'jupyter-mole-sidebar';
    this.addClass('jp-mole-panel');
    this.title.icon = moleIcon;
    this.title.caption = 'OpenMOLE executions';
    this._settings = { ...options.settings };

    const refresh = h('button', { class: 'jp-mole-button jp-mole-refresh', title: 'Refresh now' }, '↻');
    refresh.addEventListener('click', () => void this.refresh());
    this._header.node.append(
      h('div', { class: 'jp-mole-title' }, h('h2', {}, 'OpenMOLE'), refresh),
      this._service
    );
    this._header.addClass('jp-mole-header');
    this._banner.addClass('jp-mole-banner');
    this._banner.node.setAttribute('role', 'alert');
    this._banner.hide();
    this._note.addClass('jp-mole-note');
    this._note.node.setAttribute('role', 'note');
    this._note.hide();

    this._details = new ExecutionDetails({
      ...options,
      maxOutput: () => this._settings.maxOutput,
      changed: what => {
        if (what === 'closed' || what === 'removed') {
          this._list.selected = null;
        }
        void this.refresh();
      }
    });
    this._list.selectionChanged.connect((_, id) => {
      this._details.showExecution(id);
      void this.refresh();
    });
    this.addWidget(this._header);
    this.addWidget(this._banner);
    this.addWidget(this._note);
    this.addWidget(this._list);
    this.addWidget(this._details);

    this._poll = new Poll({
      factory: () => this.tick(),
      frequency: this.frequency(),
      name: 'jupyter-mole:executions',
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  get api(): MoleApi {
    return this.options.api;
  }

  /** Apply new settings (the poll interval takes effect at once). */
  configure(settings: IPanelSettings): void {
    this._settings = { ...settings };
    this._poll.frequency = this.frequency();
  }

  /** Refresh now (and reschedule). */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  /** Select this execution as soon as the list shows it. */
  reveal(id: string): Promise<void> {
    this._reveal = id;
    return this.refresh();
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private frequency() {
    return {
      interval: Math.max(250, this._settings.pollInterval * 1000),
      backoff: true,
      max: MAX_BACKOFF_MS
    };
  }

  private async tick(): Promise<void> {
    try {
      if (!this._serviceInfo || this._serviceInfo.problem) {
        this._serviceInfo = await this.api.service();
        this.renderService(this._serviceInfo);
      }
      const executions = newestFirst(await this.api.executions());
      this.renderNote(executions);
      const rows = await this.withStates(executions);
      this._list.setRows(rows, Date.now() / 1000);
      if (this._reveal !== null && rows.some(r => r.execution.id === this._reveal)) {
        this._list.selected = this._reveal;
        this._reveal = null;
        this._list.node.querySelector('.jp-mod-selected')?.scrollIntoView({ block: 'nearest' });
      }
      // the details show their own failures: the list stays live
      const selected = this._list.selected;
      await this._details.refresh(rows.find(r => r.execution.id === selected));
      this.problem(this._serviceInfo?.problem ?? null);
    } catch (error) {
      this.problem(message(error));
      if (error instanceof MoleError && error.status === 502) {
        this._serviceInfo = null; // ask again what the backend is
      }
      throw error; // the poll backs off
    }
  }

  /** Each execution with its state: asked while it runs, once when it is over. */
  private async withStates(executions: IExecution[]): Promise<IRow[]> {
    const ids = new Set(executions.map(e => e.id));
    for (const id of this._states.keys()) {
      if (!ids.has(id)) {
        this._states.delete(id);
      }
    }
    let fresh = 0;
    const wanted = executions.filter(e => {
      const known = this._states.get(e.id);
      if (known) {
        return known.state === 'running' || e.state !== known.state || e.id === this._list.selected;
      }
      return fresh++ < NEW_STATES_PER_TICK || e.id === this._list.selected;
    });
    const answers = await Promise.allSettled(wanted.map(e => this.api.state(e.id)));
    answers.forEach((answer, i) => {
      if (answer.status === 'fulfilled') {
        this._states.set(wanted[i].id, answer.value);
      }
    });
    return executions.map(execution => ({ execution, state: this._states.get(execution.id) }));
  }

  private renderService(service: IService): void {
    const what = service.embedded
      ? 'embedded engine'
      : service.info?.engine === 'openmole'
        ? 'OpenMOLE'
        : (service.info?.name ?? service.kind ?? 'backend');
    const version = service.info?.version ? ` ${service.info.version}` : '';
    replaceChildren(
      this._service,
      h(
        'span',
        { class: 'jp-mole-service-kind', title: service.url ?? '' },
        `${what}${version}${service.url && !service.embedded ? ` at ${service.url}` : ''}`
      )
    );
  }

  /** What the backend cannot tell about its executions (an OpenMOLE backend lists ids only). */
  private renderNote(executions: IExecution[]): void {
    const lacking = executions.find(e => e.unsupported)?.unsupported;
    if (!lacking) {
      this._note.hide();
      return;
    }
    if (this._note.node.dataset.text !== lacking) {
      this._note.node.dataset.text = lacking;
      replaceChildren(this._note.node, h('strong', {}, 'Note: '), lacking);
    }
    this._note.show();
  }

  private problem(text: string | null): void {
    if (text === null) {
      this._banner.hide();
      return;
    }
    replaceChildren(this._banner.node, h('strong', {}, 'OpenMOLE: '), text);
    this._banner.show();
  }

  private _settings: IPanelSettings;
  private _serviceInfo: IService | null = null;
  private _states = new Map<string, IState>();
  private _reveal: string | null = null;
  private _header = new Widget();
  private _service = h('div', { class: 'jp-mole-service' });
  private _banner = new Widget();
  private _note = new Widget();
  private _list = new ExecutionList();
  private _details: ExecutionDetails;
  private _poll: Poll;
}

function message(error: unknown): string {
  if (error instanceof MoleError) {
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}
