#!/usr/bin/env node
/**
 * `npm start`: builds the demo plan from models/demo/ when it is missing or
 * older than the model, then runs Node-RED with flows/ as its user directory.
 * The flow there answers GET /fill-mask?text=... with JSON predictions.
 *
 * Environment: PORT (default 1880), HOST (default 127.0.0.1),
 * FUSEDRT_DEMO_MODEL (another Hugging Face directory; default models/demo).
 */
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const modelDir = path.resolve(process.env.FUSEDRT_DEMO_MODEL || path.join(root, 'models', 'demo'));
const planPath = path.join(modelDir, 'demo.plan');
const userDir = path.join(root, 'flows');
const port = process.env.PORT || '1880';

function fail(message) {
  console.error(`start-demo: ${message}`);
  process.exit(1);
}

/** The newest modification time of the files a build reads (the list the plan cache keys on). */
function newestSourceMtime() {
  const { planSourceFiles } = require(path.join(root, 'dist', 'src', 'build', 'plan-cache.js'));
  const sources = planSourceFiles(modelDir);
  if (!sources.includes('config.json')) fail(`${modelDir} has no config.json: it is not a Hugging Face model directory`);
  return Math.max(...sources.map((f) => fs.statSync(path.join(modelDir, f)).mtimeMs));
}

/** The safetensors metadata says who wrote the weights: the random-model tool marks its own. */
function hasRandomWeights() {
  const file = path.join(modelDir, 'model.safetensors');
  if (!fs.existsSync(file)) return false;
  const fd = fs.openSync(file, 'r');
  try {
    const length = Buffer.alloc(8);
    fs.readSync(fd, length, 0, 8, 0);
    const headerBytes = Buffer.alloc(Number(length.readBigUInt64LE(0)));
    fs.readSync(fd, headerBytes, 0, headerBytes.length, 8);
    const generator = JSON.parse(headerBytes.toString('utf8')).__metadata__?.generator ?? '';
    return generator.startsWith('fusedrt random-model');
  } finally {
    fs.closeSync(fd);
  }
}

async function ensurePlan() {
  const builder = path.join(root, 'dist', 'src', 'build', 'builder.js');
  if (!fs.existsSync(builder) || !fs.existsSync(path.join(root, 'dist', 'nodes', 'fusedrt-engine', 'fusedrt-engine.html'))) {
    fail('dist/ is missing or incomplete: run `npm run build` first');
  }
  if (!fs.existsSync(modelDir)) fail(`the demo model ${modelDir} is missing`);
  if (fs.existsSync(planPath) && fs.statSync(planPath).mtimeMs >= newestSourceMtime()) return;
  console.log(`start-demo: building ${path.relative(root, planPath)} from ${path.relative(root, modelDir) || modelDir}`);
  const { buildPlan } = require(builder);
  let shown = -1;
  await buildPlan(modelDir, planPath, {
    onProgress: (message, fraction) => {
      const tenth = Math.floor(fraction * 10);
      if (tenth !== shown) {
        shown = tenth;
        console.log(`start-demo:   ${Math.round(fraction * 100)}% ${message}`);
      }
    },
  });
}

async function main() {
  await ensurePlan();
  console.log('');
  if (hasRandomWeights()) {
    console.log('start-demo: NOTE: this model has RANDOM weights. It runs the real engine end to end,');
    console.log('start-demo: but its predictions are random words, not language understanding.');
  } else if (!process.env.FUSEDRT_DEMO_MODEL) {
    console.log('start-demo: the demo model is a small BERT that the project trained on the Brown corpus');
    console.log('start-demo: (1960s American prose): it fills in plausible words, it does not know facts.');
    console.log('start-demo: Held-out accuracy and examples: models/demo/MODEL_CARD.md');
  }
  console.log('');
  const url = `http://${process.env.HOST || '127.0.0.1'}:${port}`;
  console.log(`start-demo: editor at ${url}/ ; try: curl '${url}/fill-mask?text=He%20walked%20into%20the%20%5BMASK%5D%20and%20sat%20down.'`);
  const nodeRed = spawn(process.execPath, [require.resolve('node-red/red.js'), '--userDir', userDir, '--port', port], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, FUSEDRT_DEMO_PLAN: planPath },
  });
  // Ctrl-C reaches both processes from the terminal; a kill of this script must reach Node-RED too.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => nodeRed.kill(signal));
  }
  nodeRed.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

main().catch((err) => fail(err && err.code ? `${err.code}: ${err.message}` : String(err && err.stack || err)));
