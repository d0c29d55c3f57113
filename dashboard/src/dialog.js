// A modal confirmation (<dialog>): resolves true when the operator confirms.
import { h } from './dom.js';

export function confirmAction({ title, body, confirm = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'submit', value: 'ok', class: danger ? 'btn btn-danger' : 'btn btn-primary', testid: 'confirm-ok' }, confirm);
    const cancel = h('button', { type: 'submit', value: 'cancel', class: 'btn', testid: 'confirm-cancel', formnovalidate: true }, 'Cancel');
    const dialog = h(
      'dialog',
      { class: 'confirm', testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title' },
      h('form', { method: 'dialog' }, h('h2', { id: 'confirm-title' }, title), h('p', {}, body), h('div', { class: 'actions' }, cancel, ok)),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'ok');
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
