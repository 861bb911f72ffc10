// Builds the dashboard into one directory, for crates/worker/build.rs to embed:
//   index.html            the page (no inline script or style: the worker's CSP forbids them)
//   main-<hash>.js/.css   the bundle (esbuild; uPlot and its stylesheet included)
//   favicon-<hash>.svg
// Every file but index.html has a content hash in its name, so the worker serves those as
// immutable. Usage: node build.mjs <outdir>
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, "dist"));
/** gzip bytes of everything the page loads; the budget keeps a small library small. */
const BUDGET_GZIP_BYTES = 48 * 1024;

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { main: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  outdir,
  metafile: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((file) => path.basename(file));
const pick = (ext) => {
  const found = outputs.filter((file) => file.endsWith(ext));
  if (found.length !== 1) throw new Error(`expected one ${ext} output, got ${found.join(", ") || "none"}`);
  return found[0];
};
const js = pick(".js");
const css = pick(".css");

const digest = (file, algorithm) => createHash(algorithm).update(readFileSync(path.join(outdir, file)));
const integrity = (file) => `sha384-${digest(file, "sha384").digest("base64")}`;

const faviconSource = path.join(here, "src", "favicon.svg");
const faviconHash = createHash("sha256").update(readFileSync(faviconSource)).digest("hex").slice(0, 8).toUpperCase();
const favicon = `favicon-${faviconHash}.svg`;
copyFileSync(faviconSource, path.join(outdir, favicon));

const values = { js, css, favicon, js_integrity: integrity(js), css_integrity: integrity(css) };
const html = readFileSync(path.join(here, "src", "index.html"), "utf8").replace(/\{\{(\w+)\}\}/g, (whole, name) => {
  if (!(name in values)) throw new Error(`index.html names an unknown placeholder ${whole}`);
  return values[name];
});
writeFileSync(path.join(outdir, "index.html"), html);

let gzipTotal = 0;
for (const file of readdirSync(outdir).sort()) {
  const bytes = readFileSync(path.join(outdir, file));
  const gzipped = gzipSync(bytes, { level: 9 }).length;
  gzipTotal += gzipped;
  console.log(`${file}\t${bytes.length} bytes\t${gzipped} gzipped`);
}
if (gzipTotal > BUDGET_GZIP_BYTES) {
  throw new Error(`the dashboard is ${gzipTotal} bytes gzipped, over its budget of ${BUDGET_GZIP_BYTES}`);
}
