/** A small typed helper to build DOM elements (no framework needed for this panel). */

type Child = Node | string | null | undefined | false;

export interface IAttributes {
  [name: string]: string | number | boolean | undefined | null;
}

/** `h('div', {class: 'x', title: 'y'}, child, ...)`: attributes set when defined and not false. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: IAttributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, ...children);
  return element;
}

export function append(parent: Element, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    parent.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
}

/** Replace every child of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.textContent = '';
  append(parent, ...children);
}
