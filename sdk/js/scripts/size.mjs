// The size budget of the <script> bundle: minified + gzipped (level 9, what CDNs serve) must
// stay under BUDGET bytes, or this exits 1. Run after `npm run build`.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 6 * 1024;
const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'insightflow.min.js');
// The source map comment is not part of what a browser needs.
const code = readFileSync(file, 'utf8').replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
const gz = gzipSync(code, { level: 9 }).length;
const line = `size: dist/insightflow.min.js ${code.length} B minified, ${gz} B min+gzip (budget ${BUDGET} B)`;
if (gz > BUDGET) {
  console.error(`${line}: OVER BUDGET by ${gz - BUDGET} B`);
  process.exit(1);
}
console.log(`${line}: ok, ${BUDGET - gz} B to spare`);
