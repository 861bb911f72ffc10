// Validates the custom resources of the rendered manifests (KEDA's ScaledObject, the Prometheus
// operator's ServiceMonitor and PrometheusRule), which the Kubernetes schemas do not cover.
//
//   node validate-crds.mjs OBJECTS.json WORKDIR
//
// OBJECTS.json: a JSON array of objects. WORKDIR: a directory under the npm prefix that holds
// @kubernetes-models/keda, @kubernetes-models/prometheus-operator and typescript (installed by
// scripts/validate-deploy.sh), so that imports resolve from there.
//
// Two checks per object, both generated from the CRDs' OpenAPI schemas:
//  1. the models' JSON-schema validators: types, required fields, enums, formats;
//  2. TypeScript's excess-property check: every object is written out as a literal of its
//     model's interface and `tsc --noEmit` rejects a field the CRD does not declare (a
//     misspelled `maxReplicaCont` would otherwise be pruned by the API server in silence).
// Free-form maps (a trigger's `metadata`, labels) are typed as string maps and are checked by
// scripts/deploy/check_manifests.py instead.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject", "ScaledObject", "IScaledObject"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "ServiceMonitor", "IServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "PrometheusRule", "IPrometheusRule"],
};

const [objectsPath, workdir] = process.argv.slice(2);
if (!objectsPath || !workdir) {
  console.error("usage: node validate-crds.mjs OBJECTS.json WORKDIR");
  process.exit(2);
}
const objects = JSON.parse(readFileSync(objectsPath, "utf8"));
const name = (o) => `${o.kind}/${o.metadata?.name ?? "?"}`;
let failures = 0;
const literals = [];
const imports = new Set();

for (const [i, object] of objects.entries()) {
  const key = `${object.apiVersion}/${object.kind}`;
  const model = MODELS[key];
  if (!model) {
    console.error(`validate-crds: ${name(object)}: no schema for ${key} here; add it to MODELS`);
    failures++;
    continue;
  }
  const [module, className, interfaceName] = model;
  const { [className]: Model } = await import(join(workdir, "node_modules", module + ".js"));
  try {
    new Model(object).validate();
    console.log(`validate-crds: ${name(object)} matches the ${key} schema`);
  } catch (error) {
    console.error(`validate-crds: ${name(object)} does not match the ${key} schema: ${error.message}`);
    failures++;
  }
  imports.add(`import type { ${interfaceName} } from "${module}";`);
  literals.push(`// ${name(object)}\nexport const object${i}: ${interfaceName} = ${JSON.stringify(object, null, 2)};`);
}

if (literals.length > 0) {
  // Under WORKDIR, whose node_modules the imports resolve from; one directory per run.
  const dir = mkdtempSync(join(workdir, "crd-check-"));
  writeFileSync(join(dir, "objects.ts"), [...imports, ...literals].join("\n") + "\n");
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext",
        target: "es2022", skipLibCheck: true, types: [],
      },
      files: ["objects.ts"],
    }),
  );
  try {
    execFileSync(join(workdir, "node_modules", ".bin", "tsc"), ["-p", dir], { encoding: "utf8" });
    console.log(`validate-crds: no field outside the CRD schemas (${literals.length} objects, tsc)`);
  } catch (error) {
    console.error("validate-crds: fields the CRD schemas do not declare (tsc; objects.ts holds the rendered objects):");
    console.error((error.stdout || "") + (error.stderr || ""));
    failures++;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
process.exit(failures === 0 ? 0 : 1);
