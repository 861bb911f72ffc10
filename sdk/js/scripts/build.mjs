// Builds the SDK with esbuild: ESM and CJS for bundlers and Node, an IIFE for a <script> tag
// (global `InsightFlow`, minified, plus a readable copy), and .d.ts types with tsc.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const common = {
  absWorkingDir: root,
  entryPoints: ['src/index.ts'],
  bundle: true,
  // Browsers of the last ~5 years; `async`, classes and `?.` stay native, which keeps it small.
  target: ['es2020'],
  define: { __VERSION__: JSON.stringify(pkg.version) },
  legalComments: 'none',
  logLevel: 'warning',
};

rmSync(join(root, 'dist'), { recursive: true, force: true });
await Promise.all([
  build({ ...common, format: 'esm', outfile: 'dist/index.js', sourcemap: true }),
  build({ ...common, format: 'cjs', outfile: 'dist/index.cjs', sourcemap: true }),
  build({ ...common, format: 'iife', globalName: 'InsightFlow', outfile: 'dist/insightflow.js' }),
  build({
    ...common,
    format: 'iife',
    globalName: 'InsightFlow',
    outfile: 'dist/insightflow.min.js',
    minify: true,
    // Members named _x are private to the bundle (src/client.ts): short names save ~10 %.
    mangleProps: /^_[a-zA-Z]/,
    sourcemap: true,
  }),
]);
execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
console.log(`built insightflow-js ${pkg.version} into dist/`);
