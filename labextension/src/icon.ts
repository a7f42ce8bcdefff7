import { LabIcon } from '@jupyterlab/ui-components';

import moleSvg from '../style/icons/mole.svg';

/** The OpenMOLE icon: a mole wearing a miner's lamp, in one colour that follows the theme (jp-icon3). */
export const moleIcon = new LabIcon({ name: 'jupyter-mole:mole', svgstr: moleSvg });
