// Arrow-key moves in the actions menu (a list) and the emoji picker (a grid of 6 a row).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rovingIndex } from '../../quart_chat/static/js/dom.js';

test('a list: Down and Up move and wrap, Home and End jump, Left and Right do nothing', () => {
  assert.equal(rovingIndex('ArrowDown', 0, 4), 1);
  assert.equal(rovingIndex('ArrowDown', 3, 4), 0, 'wraps to the first');
  assert.equal(rovingIndex('ArrowUp', 0, 4), 3, 'wraps to the last');
  assert.equal(rovingIndex('Home', 2, 4), 0);
  assert.equal(rovingIndex('End', 0, 4), 3);
  assert.equal(rovingIndex('ArrowRight', 1, 4), -1);
  assert.equal(rovingIndex('a', 1, 4), -1, 'not a move');
  assert.equal(rovingIndex('ArrowDown', -1, 4), 0, 'from nothing focused: the first');
});

test('a grid of 6 a row: Left and Right step, Up and Down go a row, wrapping', () => {
  assert.equal(rovingIndex('ArrowRight', 3, 12, 6), 4);
  assert.equal(rovingIndex('ArrowLeft', 0, 12, 6), 11);
  assert.equal(rovingIndex('ArrowDown', 2, 12, 6), 8);
  assert.equal(rovingIndex('ArrowDown', 8, 12, 6), 2);
  assert.equal(rovingIndex('ArrowUp', 1, 12, 6), 7);
});
