// A search's words and where a result has them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { highlightParts, searchTerms } from '../../quart_chat/static/js/searchterms.js';

const marked = (parts) => parts.map((p) => (p.hit ? '[' + p.text + ']' : p.text)).join('');

test('the words to highlight: phrases and words, not -word nor or', () => {
  assert.deepEqual(searchTerms('deploy "release notes" -draft or Friday'), ['release', 'deploy', 'friday', 'notes']);
  assert.deepEqual(searchTerms('  '), []);
});

test('a word is highlighted where one starts with a term, whatever its case', () => {
  assert.equal(marked(highlightParts('Deploying the redeploy, deploy!', ['deploy'])), '[Deploy]ing the redeploy, [deploy]!');
  assert.equal(marked(highlightParts('release notes', ['release', 'notes'])), '[release] [notes]');
  assert.deepEqual(highlightParts('plain', []), [{ text: 'plain', hit: false }]);
  assert.equal(highlightParts('<i>deploy</i>', ['deploy']).map((p) => p.text).join(''), '<i>deploy</i>');
});
