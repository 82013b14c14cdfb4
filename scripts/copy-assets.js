#!/usr/bin/env node
/**
 * After tsc: puts each node's editor file (.html), its locales/ and the
 * icons/ beside its compiled .js in dist/nodes/<name>/, where Node-RED looks
 * for them (the template and catalog share the .js's base name; icons come
 * from an icons/ folder next to it).
 */
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const nodesSource = path.join(root, 'nodes');
const nodesTarget = path.join(root, 'dist', 'nodes');
const icons = path.join(root, 'icons');

const nodeNames = fs.readdirSync(nodesSource)
  .filter((name) => fs.existsSync(path.join(nodesSource, name, `${name}.html`)));

for (const name of nodeNames) {
  const from = path.join(nodesSource, name);
  const to = path.join(nodesTarget, name);
  if (!fs.existsSync(path.join(to, `${name}.js`))) {
    console.error(`copy-assets: ${path.relative(root, to)}/${name}.js is missing; run tsc first`);
    process.exit(1);
  }
  fs.copyFileSync(path.join(from, `${name}.html`), path.join(to, `${name}.html`));
  fs.rmSync(path.join(to, 'locales'), { recursive: true, force: true });
  fs.cpSync(path.join(from, 'locales'), path.join(to, 'locales'), { recursive: true });
  fs.rmSync(path.join(to, 'icons'), { recursive: true, force: true });
  fs.cpSync(icons, path.join(to, 'icons'), { recursive: true });
}
console.log(`copy-assets: ${nodeNames.length} nodes (${nodeNames.join(', ')})`);
