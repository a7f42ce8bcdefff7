/**
 * jupyter-mole's JupyterLab extension: the OpenMOLE executions sidebar, and
 * "Run on OpenMOLE" on the .oms files of the file browser.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser, IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { MoleApi } from './api';
import { moleIcon } from './icon';
import { IPanelSettings, MolePanel } from './panel';

const PLUGIN_ID = 'jupyter-mole:plugin';

/** The commands; the context menu item is declared in schema/plugin.json. */
export namespace CommandIDs {
  export const open = 'jupyter-mole:open';
  export const run = 'jupyter-mole:run-script';
}

/** Registered so that .oms files get the icon and the selector of the context menu item. */
export const FILE_TYPE = 'mole-script';

const DEFAULTS: IPanelSettings = { pollInterval: 2, maxOutput: 200_000 };

function readSettings(settings: ISettingRegistry.ISettings | null): IPanelSettings {
  if (!settings) {
    return DEFAULTS;
  }
  const get = (key: keyof IPanelSettings) => {
    const value = settings.get(key).composite;
    return typeof value === 'number' && isFinite(value) ? value : DEFAULTS[key];
  };
  return { pollInterval: get('pollInterval'), maxOutput: get('maxOutput') };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Every OpenMOLE execution, live, with its output, errors and files.',
  autoStart: true,
  optional: [ISettingRegistry, IDefaultFileBrowser, IFileBrowserFactory, ILayoutRestorer, ICommandPalette],
  activate: async (
    app: JupyterFrontEnd,
    registry: ISettingRegistry | null,
    defaultBrowser: IDefaultFileBrowser | null,
    factory: IFileBrowserFactory | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const api = new MoleApi(app.serviceManager.serverSettings);
    app.docRegistry.addFileType({
      name: FILE_TYPE,
      displayName: 'OpenMOLE script',
      extensions: ['.oms'],
      mimeTypes: ['text/x-python'],
      icon: moleIcon
    });

    let settings: ISettingRegistry.ISettings | null = null;
    if (registry) {
      try {
        settings = await registry.load(PLUGIN_ID);
      } catch (error) {
        console.warn('jupyter-mole: settings not loaded, using the defaults', error);
      }
    }

    const panel = new MolePanel({
      api,
      settings: readSettings(settings),
      currentFolder: () => defaultBrowser?.model.path ?? '',
      downloaded: () => void defaultBrowser?.model.refresh()
    });
    settings?.changed.connect(() => panel.configure(readSettings(settings)));
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'jupyter-mole-sidebar');

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show the OpenMOLE executions',
      icon: moleIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: CommandIDs.open, category: 'OpenMOLE' });

    const selectedScripts = (): string[] => {
      const browser = factory?.tracker.currentWidget ?? defaultBrowser;
      if (!browser) {
        return [];
      }
      return [...browser.selectedItems()]
        .filter(item => item.type !== 'directory' && item.path.endsWith('.oms'))
        .map(item => item.path);
    };

    app.commands.addCommand(CommandIDs.run, {
      label: 'Run on OpenMOLE',
      caption: "Send the script's folder to the OpenMOLE backend and run the script",
      icon: moleIcon,
      isVisible: () => selectedScripts().length > 0,
      execute: async args => {
        const paths = typeof args.path === 'string' ? [args.path] : selectedScripts();
        let last: string | null = null;
        for (const path of paths) {
          try {
            last = await api.run(path);
            Notification.success(`${path} started on OpenMOLE`, { autoClose: 4000 });
          } catch (error) {
            const message = error instanceof Error ? error.message : String(error);
            Notification.error(`Cannot run ${path}: ${message}`, { autoClose: 10000 });
          }
        }
        if (last !== null) {
          app.shell.activateById(panel.id);
          await panel.reveal(last);
        }
      }
    });
  }
};

export default plugin;
