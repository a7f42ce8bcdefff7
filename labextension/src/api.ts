/**
 * The jupyter-mole server extension's API under `{baseUrl}mole/api/`, typed.
 *
 * Every call goes through `ServerConnection.makeRequest`, which adds Jupyter's
 * authentication and XSRF token. Failures become a `MoleError` whose message
 * is fit to show a user (the server's own `{"message"}` when it gave one).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** What the backend is, as `GET service` says. */
export interface IService {
  kind: string | null;
  url: string | null;
  embedded: boolean;
  problem: string | null;
  info: { name?: string; version?: string; engine?: string } | null;
  poll_interval: number;
}

/** One row of `GET executions` (an OpenMOLE backend gives the id only). */
export interface IExecution {
  id: string;
  state?: string;
  script?: string;
  tags?: { [key: string]: string };
  submitted?: number;
  started?: number;
  ended?: number;
  ready?: number;
  running?: number;
  completed?: number;
  error?: string;
  /** What the backend cannot tell (an OpenMOLE backend lists ids only), in words for people. */
  unsupported?: string;
}

/** Job counters: waiting, running and completed jobs. */
export interface ICounters {
  ready: number;
  running: number;
  completed: number;
}

export interface IEnvironment {
  name?: string;
  submitted: number;
  running: number;
  done: number;
  failed: number;
}

/** An error of an execution, accumulated by the server extension. */
export interface IMoleErrorInfo {
  message: string;
  level?: string | null;
  'stack-trace'?: string | null;
  stackTrace?: string | null;
  count?: number;
}

/** `GET executions/<id>/state`. */
export interface IState extends ICounters {
  state: string;
  capsules: [string, ICounters][];
  environments: IEnvironment[];
  error?: { message: string; stackTrace?: string };
  errors: IMoleErrorInfo[];
}

export interface IFileEntry {
  name: string;
  type: 'file' | 'directory';
  modified: number;
  size?: number;
}

/** A failed call, with a message for people and the HTTP status (0: no answer). */
export class MoleError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'MoleError';
  }
}

/** The client of the proxy API. */
export class MoleApi {
  constructor(readonly settings: ServerConnection.ISettings) {}

  service(): Promise<IService> {
    return this.request('service');
  }

  executions(): Promise<IExecution[]> {
    return this.request('executions');
  }

  /** Start the script at a path of Jupyter's file tree; its folder is sent. */
  async run(path: string): Promise<string> {
    const answer = await this.request<{ id: string }>('executions', 'POST', { path });
    return answer.id;
  }

  details(id: string): Promise<IExecution> {
    return this.request(one(id));
  }

  state(id: string): Promise<IState> {
    return this.request(one(id, 'state'));
  }

  output(id: string, offset: number): Promise<{ output: string; offset: number }> {
    return this.request(`${one(id, 'output')}?offset=${offset}`);
  }

  files(id: string, path: string): Promise<IFileEntry[]> {
    return this.request(`${one(id, 'files')}?path=${encodeURIComponent(path)}`);
  }

  cancel(id: string): Promise<unknown> {
    return this.request(one(id, 'cancel'), 'POST', {});
  }

  remove(id: string): Promise<unknown> {
    return this.request(one(id), 'DELETE');
  }

  /** Save a file of the work directory into folder `to` of Jupyter's tree; the path written. */
  async download(id: string, path: string, to: string, overwrite = false): Promise<string> {
    const body = { path, to, overwrite };
    const answer = await this.request<{ path: string }>(one(id, 'download'), 'POST', body);
    return answer.path;
  }

  private async request<T>(endpoint: string, method = 'GET', body?: unknown): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'mole', 'api', endpoint);
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new MoleError(`The Jupyter server does not answer (${String(error)}).`, 0);
    }
    const text = await response.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new MoleError(describe(response, data, text), response.status);
    }
    return data as T;
  }
}

function one(id: string, what?: string): string {
  const base = `executions/${encodeURIComponent(id)}`;
  return what ? `${base}/${what}` : base;
}

/** A readable message for a failed answer. */
function describe(response: Response, data: unknown, text: string): string {
  const message =
    data && typeof data === 'object' && 'message' in data
      ? String((data as { message: unknown }).message)
      : '';
  if (message) {
    return message;
  }
  if (response.status === 404 && !data) {
    return 'The jupyter-mole server extension is not enabled in this Jupyter server.';
  }
  if (response.status === 403) {
    return 'Jupyter refused the request (authentication or XSRF).';
  }
  const detail = text && text.length < 200 && !text.startsWith('<') ? `: ${text}` : '';
  return `The server answered ${response.status} ${response.statusText}${detail}`;
}
