// Project lint: the architecture rules of STYLE.md, and no circular imports.
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..', '..');
const files = [];
const walk = dir => {
  for (const entry of fs.readdirSync(dir, {withFileTypes: true})) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory())
      walk(full);
    else if (full.endsWith('.ts'))
      files.push(full);
  }
};
walk(path.join(root, 'src'));
walk(path.join(root, 'commands'));

const problems = [];
const graph = new Map();
const importRe = /^(?:import|export)\s[^;]*?from\s+'([^']+)'/gm;

for (const file of files) {
  const rel = path.relative(root, file);
  const text = fs.readFileSync(file, 'utf8');
  const deps = [];
  for (const [, spec] of text.matchAll(importRe)) {
    if (rel.startsWith('src/') && (spec === 'clipanion' || spec.includes('/commands/')))
      problems.push(`${rel}: src/ must not import ${spec} (commands/ -> src/ only)`);
    if ((spec === 'node:child_process' || spec === 'child_process') && !rel.startsWith('src/spawn/'))
      problems.push(`${rel}: only src/spawn/ starts processes`);
    if (spec.startsWith('.')) {
      let target = path.resolve(path.dirname(file), spec);
      target = fs.existsSync(`${target}.ts`) ? `${target}.ts` : path.join(target, 'index.ts');
      deps.push(target);
    }
  }
  if (/\bconsole\.(log|info|debug)\(/.test(text))
    problems.push(`${rel}: console output; use the logger (stderr) or the command's stdout`);
  if (/shell:\s*true/.test(text))
    problems.push(`${rel}: never spawn through a shell`);
  if (/createReadStream\([^)]*fifo/i.test(text))
    problems.push(`${rel}: never read the FIFO with createReadStream (pins a pool thread, EOF on writer close)`);
  graph.set(file, deps);
}

// Cycles through index.ts barrels count too: they are what esbuild orders.
const state = new Map();
const stack = [];
const visit = file => {
  state.set(file, 'open');
  stack.push(file);
  for (const dep of graph.get(file) ?? []) {
    if (state.get(dep) === 'open') {
      const cycle = stack.slice(stack.indexOf(dep)).concat(dep).map(f => path.relative(root, f));
      problems.push(`circular import: ${cycle.join(' -> ')}`);
    } else if (!state.has(dep) && graph.has(dep)) {
      visit(dep);
    }
  }
  stack.pop();
  state.set(file, 'done');
};
for (const file of graph.keys())
  if (!state.has(file))
    visit(file);

if (problems.length > 0) {
  console.error(problems.join('\n'));
  console.error(`lint: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`lint: ${files.length} files, no problems`);
