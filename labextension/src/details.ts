/** The details of the selected execution: progress, output tail, errors, files, Cancel and Remove. */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

import { IFileEntry, IMoleErrorInfo, IState, MoleApi, MoleError } from './api';
import { append, h, replaceChildren } from './dom';
import { basename, notebookOf, size, timing } from './format';
import type { IRow } from './list';
import { environmentCounters, jobCounters, progressBar, stateBadge } from './views';

export interface IDetailsOptions {
  api: MoleApi;
  /** The folder of the file browser, where downloads land ('' is Jupyter's root). */
  currentFolder: () => string;
  /** Called after a download, to refresh the file browser. */
  downloaded: (path: string) => void;
  /** Called after Cancel, Remove or Close: the list should refresh (or deselect). */
  changed: (what: 'cancelled' | 'removed' | 'closed') => void;
  /** Characters of output kept (the tail). */
  maxOutput: () => number;
}

export class ExecutionDetails extends Widget {
  constructor(private readonly options: IDetailsOptions) {
    super();
    this.addClass('jp-mole-details');
    this.hide();
    const { node } = this;
    append(
      node,
      this._head,
      this._summary,
      section('Output', this._output, 'output'),
      section('Errors', this._errors, 'errors'),
      section('Files', h('div', {}, this._crumbs, this._files), 'files')
    );
  }

  get executionId(): string | null {
    return this._id;
  }

  /** Show this execution (null: hide). */
  showExecution(id: string | null): void {
    if (id === this._id) {
      return;
    }
    this._id = id;
    this._offset = 0;
    this._text = '';
    this._path = '';
    this._lastState = undefined;
    this._filesFetched = false;
    this._errorsKey = '';
    this._output.textContent = '';
    this._problem.remove();
    replaceChildren(this._errors);
    replaceChildren(this._files);
    replaceChildren(this._summary);
    replaceChildren(this._head);
    this.node.dataset.id = id ?? '';
    this.setHidden(id === null);
  }

  /**
   * Refresh from the backend; the row is what the list knows (its state fetched this tick).
   * Never rejects: a failure shows in the details (the list goes on refreshing), and an
   * execution removed meanwhile (404) leaves with the next list.
   */
  async refresh(row: IRow | undefined): Promise<void> {
    const id = this._id;
    if (id === null || !row || row.execution.id !== id) {
      return;
    }
    try {
      await this.load(id, row);
      this.problem(id, null);
    } catch (error) {
      if (!(error instanceof MoleError && error.status === 404)) {
        this.problem(id, error instanceof Error ? error.message : String(error));
      }
    }
  }

  private async load(id: string, row: IRow): Promise<void> {
    const { api } = this.options;
    const state = row.state ?? (await api.state(id));
    if (this._id !== id) {
      return;
    }
    this.renderHead(row, state);
    this.renderSummary(row, state);
    this.renderErrors(state);
    await this.fetchOutput(id);
    const changed = this._lastState !== state.state;
    this._lastState = state.state;
    if (state.state === 'running' || changed || !this._filesFetched) {
      await this.fetchFiles(id);
    }
  }

  /** Say (or stop saying) why the details could not be refreshed. */
  private problem(id: string, text: string | null): void {
    if (this._id !== id) {
      return;
    }
    if (text === null) {
      this._problem.remove();
      return;
    }
    replaceChildren(this._problem, h('strong', {}, 'Cannot refresh the details: '), text);
    if (!this._problem.isConnected) {
      this._head.after(this._problem);
    }
  }

  private renderHead(row: IRow, state: IState): void {
    const { execution } = row;
    const running = state.state === 'running';
    const cancel = h(
      'button',
      {
        class: 'jp-mole-button jp-mod-warn jp-mole-cancel',
        disabled: !running,
        title: 'Cancel this execution (its jobs stop; the work directory stays)'
      },
      'Cancel'
    );
    cancel.addEventListener('click', () => void this.cancel());
    const remove = h(
      'button',
      {
        class: 'jp-mole-button jp-mole-remove',
        title: 'Remove this execution and its work directory from the backend'
      },
      'Remove'
    );
    remove.addEventListener('click', () => void this.remove());
    const close = h('button', { class: 'jp-mole-button jp-mole-close', title: 'Close the details' }, '×');
    close.addEventListener('click', () => this.options.changed('closed'));
    replaceChildren(
      this._head,
      h(
        'div',
        { class: 'jp-mole-details-title' },
        h('span', { class: 'jp-mole-script' }, basename(execution.script) || execution.id),
        stateBadge(state.state),
        close
      ),
      h('div', { class: 'jp-mole-details-actions' }, cancel, remove)
    );
  }

  private renderSummary(row: IRow, state: IState): void {
    const { execution } = row;
    const now = Date.now() / 1000;
    const facts: [string, string | undefined][] = [
      ['id', execution.id],
      ['script', execution.script],
      ['notebook', notebookOf(execution, PageConfig.getOption('serverRoot'))],
      ['time', timing(execution, now, state.state)]
    ];
    const capsules = state.capsules.map(([name, counters]) =>
      h('div', { class: 'jp-mole-capsule' }, h('span', { class: 'jp-mole-capsule-name' }, name), jobCounters(counters))
    );
    replaceChildren(
      this._summary,
      progressBar(state, state.state),
      jobCounters(state),
      h(
        'dl',
        { class: 'jp-mole-facts' },
        ...facts.filter(([, v]) => v).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])
      ),
      capsules.length ? h('div', { class: 'jp-mole-capsules' }, ...capsules) : null,
      state.environments.length ? environmentCounters(state.environments) : null
    );
  }

  private renderErrors(state: IState): void {
    const errors: IMoleErrorInfo[] = [];
    if (state.error) {
      errors.push({ message: state.error.message, level: 'FAILURE', stackTrace: state.error.stackTrace });
    }
    errors.push(...(state.errors ?? []));
    const key = JSON.stringify(errors);
    if (key === this._errorsKey) {
      return; // keep open stack traces open
    }
    this._errorsKey = key;
    if (!errors.length) {
      replaceChildren(this._errors, h('div', { class: 'jp-mole-none' }, 'No error.'));
      return;
    }
    replaceChildren(
      this._errors,
      ...errors.map(e => {
        const stack = e['stack-trace'] ?? e.stackTrace;
        return h(
          'div',
          { class: 'jp-mole-error', 'data-level': e.level ?? '' },
          h(
            'div',
            { class: 'jp-mole-error-head' },
            e.level ? h('span', { class: 'jp-mole-level' }, e.level) : null,
            h('span', { class: 'jp-mole-error-message' }, e.message),
            e.count && e.count > 1 ? h('span', { class: 'jp-mole-count' }, `×${e.count}`) : null
          ),
          stack
            ? h('details', { class: 'jp-mole-stack' }, h('summary', {}, 'stack trace'), h('pre', {}, stack))
            : null
        );
      })
    );
  }

  private async fetchOutput(id: string): Promise<void> {
    const { output, offset } = await this.options.api.output(id, this._offset);
    if (this._id !== id || !output) {
      this._offset = this._id === id ? offset : this._offset;
      return;
    }
    const pre = this._output;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    this._offset = offset;
    this._text = (this._text + output).slice(-this.options.maxOutput());
    pre.textContent = this._text;
    if (atBottom) {
      pre.scrollTop = pre.scrollHeight;
    }
  }

  private async fetchFiles(id: string): Promise<void> {
    const path = this._path;
    let entries: IFileEntry[];
    try {
      entries = await this.options.api.files(id, path);
    } catch (error) {
      if (error instanceof MoleError && error.status === 404 && path) {
        this._path = ''; // the folder went away
        return;
      }
      throw error;
    }
    if (this._id !== id || this._path !== path) {
      return;
    }
    this._filesFetched = true;
    this.renderCrumbs(id);
    const sorted = [...entries].sort(
      (a, b) => Number(b.type === 'directory') - Number(a.type === 'directory') || a.name.localeCompare(b.name)
    );
    if (!sorted.length) {
      replaceChildren(this._files, h('li', { class: 'jp-mole-none' }, 'The work directory is empty.'));
      return;
    }
    replaceChildren(this._files, ...sorted.map(entry => this.fileRow(id, entry)));
  }

  private renderCrumbs(id: string): void {
    const parts = this._path.split('/').filter(Boolean);
    const crumb = (label: string, to: string) => {
      const b = h('button', { class: 'jp-mole-crumb', title: `Open ${to || 'the work directory'}` }, label);
      b.addEventListener('click', () => this.cd(id, to));
      return b;
    };
    replaceChildren(
      this._crumbs,
      crumb('work directory', ''),
      ...parts.flatMap((part, i) => [' / ', crumb(part, parts.slice(0, i + 1).join('/'))])
    );
  }

  private fileRow(id: string, entry: IFileEntry): HTMLElement {
    const path = this._path ? `${this._path}/${entry.name}` : entry.name;
    const isDir = entry.type === 'directory';
    const name = h(
      isDir ? 'button' : 'span',
      { class: 'jp-mole-file-name', title: isDir ? `Open ${path}` : path },
      isDir ? `${entry.name}/` : entry.name
    );
    if (isDir) {
      name.addEventListener('click', () => this.cd(id, path));
    }
    const download = h(
      'button',
      {
        class: 'jp-mole-button jp-mole-download',
        title: `Download ${path} into the current folder of the file browser`
      },
      'Download'
    );
    download.addEventListener('click', () => void this.download(id, path));
    return h(
      'li',
      { class: 'jp-mole-file', 'data-name': entry.name, 'data-type': entry.type },
      name,
      h('span', { class: 'jp-mole-file-size' }, isDir ? '' : size(entry.size)),
      download
    );
  }

  private cd(id: string, path: string): void {
    this._path = path;
    void this.fetchFiles(id).catch(error => this.report('Cannot list the files', error));
  }

  private async download(id: string, path: string): Promise<void> {
    const to = this.options.currentFolder();
    const where = to ? `/${to}` : 'the root folder';
    try {
      let written: string;
      try {
        written = await this.options.api.download(id, path, to);
      } catch (error) {
        if (!(error instanceof MoleError) || error.status !== 409) {
          throw error;
        }
        const answer = await showDialog({
          title: 'Replace the file?',
          body: `${basename(path)} already exists in ${where}. Replace it?`,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Replace' })]
        });
        if (!answer.button.accept) {
          return;
        }
        written = await this.options.api.download(id, path, to, true);
      }
      Notification.success(`Downloaded ${basename(path)} into ${where}`, { autoClose: 4000 });
      this.options.downloaded(written);
    } catch (error) {
      this.report(`Cannot download ${path}`, error);
    }
  }

  private async cancel(): Promise<void> {
    const id = this._id;
    if (id === null) {
      return;
    }
    const answer = await showDialog({
      title: 'Cancel the execution?',
      body: `Its running jobs stop. The results written so far stay in its work directory.`,
      buttons: [Dialog.cancelButton({ label: 'Keep running' }), Dialog.warnButton({ label: 'Cancel execution' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.options.api.cancel(id);
      this.options.changed('cancelled');
    } catch (error) {
      this.report('Cannot cancel the execution', error);
    }
  }

  private async remove(): Promise<void> {
    const id = this._id;
    if (id === null) {
      return;
    }
    const answer = await showDialog({
      title: 'Remove the execution?',
      body: 'It is cancelled if it runs, and its work directory is deleted from the backend. Files already downloaded stay.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await this.options.api.remove(id);
      this.showExecution(null);
      this.options.changed('removed');
    } catch (error) {
      this.report('Cannot remove the execution', error);
    }
  }

  private report(what: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    Notification.error(`${what}: ${message}`, { autoClose: 8000 });
  }

  private _id: string | null = null;
  private _offset = 0;
  private _text = '';
  private _path = '';
  private _lastState: string | undefined;
  private _filesFetched = false;
  private _errorsKey = '';
  private _head = h('div', { class: 'jp-mole-details-head' });
  private _summary = h('div', { class: 'jp-mole-summary' });
  private _problem = h('div', { class: 'jp-mole-details-problem', role: 'alert' });
  private _output = h('pre', { class: 'jp-mole-output', tabindex: 0, 'aria-label': 'Output' });
  private _errors = h('div', { class: 'jp-mole-errors' });
  private _crumbs = h('div', { class: 'jp-mole-crumbs' });
  private _files = h('ul', { class: 'jp-mole-files' });
}

function section(title: string, body: HTMLElement, name: string): HTMLElement {
  return h(
    'section',
    { class: 'jp-mole-section', 'data-section': name },
    h('h3', { class: 'jp-mole-section-title' }, title),
    body
  );
}
