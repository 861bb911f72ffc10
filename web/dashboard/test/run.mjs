// Compiles test/*.test.ts with esbuild (no TypeScript toolchain needed) and runs them with
// node's test runner.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const tests = readdirSync(here).filter((f) => f.endsWith(".test.ts"));
const outdir = mkdtempSync(path.join(tmpdir(), "dashboard-tests-"));
try {
  await build({
    entryPoints: tests.map((f) => path.join(here, f)),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outdir,
    outExtension: { ".js": ".mjs" },
    packages: "external",
    logLevel: "warning",
  });
  const files = readdirSync(outdir).map((f) => path.join(outdir, f));
  const run = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
  process.exitCode = run.status ?? 1;
} finally {
  rmSync(outdir, { recursive: true, force: true });
}
