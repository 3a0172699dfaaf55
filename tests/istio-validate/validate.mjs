#!/usr/bin/env node
// Validates Kubernetes manifests (multi-document YAML) against Istio's and
// Kubernetes' published schemas:
//
//   kubernetes-models  the validators generated from the Istio / Kubernetes
//                      CRDs and OpenAPI by the `@kubernetes-models/istio` and
//                      `kubernetes-models` npm packages (WasmPlugin,
//                      EnvoyFilter, Deployment, Service, ...);
//   crd                the openAPIV3Schema of the CustomResourceDefinitions in
//                      the CRD directory (istio/api's WasmPlugin,
//                      TrafficExtension, EnvoyFilter), validated the way the
//                      API server does with `kubectl apply --validate=strict`:
//                      unknown fields are errors, and the
//                      `x-kubernetes-validations` CEL rules are evaluated;
//   objectmeta         metadata.name, namespace, label and annotation syntax.
//
// Usage:
//   node validate.mjs [--json] [--crds DIR] [--require-crds] FILE... ('-' reads stdin)
//
// The CRD directory defaults to $ISTIO_CRDS_DIR, else ../shared/istio-crds
// relative to the repository root. When it does not exist the `crd` checks are
// skipped (said on stderr and in the report), unless --require-crds is given.
//
// Exit code: 0 when every document passed every check that ran, 1 when one
// failed, 2 on a usage error. --json prints the full report on stdout.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import Ajv from "ajv";
import addFormats from "ajv-formats";
import { parseAllDocuments } from "yaml";
import { Environment } from "@marcbachmann/cel-js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "..", "..");

// ------------------------------------------------------------------ args ---

function usage(message) {
  if (message) console.error(`validate.mjs: ${message}`);
  console.error("usage: node validate.mjs [--json] [--crds DIR] [--require-crds] FILE... ('-' = stdin)");
  process.exit(2);
}

const args = process.argv.slice(2);
let json = false;
let requireCrds = false;
let crdDir = process.env.ISTIO_CRDS_DIR || path.resolve(repoRoot, "..", "shared", "istio-crds");
const files = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--json") json = true;
  else if (a === "--require-crds") requireCrds = true;
  else if (a === "--crds") {
    if (i + 1 >= args.length) usage("--crds needs a directory");
    crdDir = path.resolve(args[++i]);
  } else if (a === "-h" || a === "--help") usage();
  else if (a.startsWith("--")) usage(`unknown option ${a}`);
  else files.push(a);
}
if (files.length === 0) usage("no manifest given");

// ------------------------------------------------------------------ CRDs ---

const crdStatus = { dir: crdDir, loaded: [], skipped: null };
const crdSchemas = new Map(); // "group/version/Kind" -> { crd, schema, validate }

function loadCrds() {
  if (!fs.existsSync(crdDir) || !fs.statSync(crdDir).isDirectory()) {
    crdStatus.skipped = `CRD directory ${crdDir} does not exist: the CRD schema checks are SKIPPED`;
    return;
  }
  const names = fs.readdirSync(crdDir).filter((n) => /\.ya?ml$/.test(n)).sort();
  for (const name of names) {
    const file = path.join(crdDir, name);
    for (const doc of parseAllDocuments(fs.readFileSync(file, "utf8"))) {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
      const crd = doc.toJS();
      if (!crd || crd.kind !== "CustomResourceDefinition") continue;
      const group = crd.spec.group;
      const kind = crd.spec.names.kind;
      for (const version of crd.spec.versions || []) {
        const openapi = version.schema && version.schema.openAPIV3Schema;
        if (!openapi) continue;
        const key = `${group}/${version.name}/${kind}`;
        crdSchemas.set(key, { crd: crd.metadata.name, file, schema: openapi, served: version.served });
        crdStatus.loaded.push(key);
      }
    }
  }
  if (crdSchemas.size === 0) {
    crdStatus.skipped = `no CustomResourceDefinition in ${crdDir}: the CRD schema checks are SKIPPED`;
  }
}

// An OpenAPI v3 schema of a CRD as the API server applies it with strict field
// validation: objects that list `properties` accept no other field, unless
// they preserve unknown fields. apiVersion, kind and metadata are added at the
// top (the API server validates metadata itself).
function strictSchema(node) {
  if (Array.isArray(node)) return node.map(strictSchema);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "description" || k === "x-kubernetes-validations") continue;
    out[k] = ["properties", "patternProperties", "definitions"].includes(k)
      ? Object.fromEntries(Object.entries(v).map(([p, s]) => [p, strictSchema(s)]))
      : strictSchema(v);
  }
  if (
    out.properties &&
    out.additionalProperties === undefined &&
    out["x-kubernetes-preserve-unknown-fields"] !== true
  ) {
    out.additionalProperties = false;
  }
  return out;
}

const ajv = new Ajv({ allErrors: true, strict: false, logger: false });
addFormats(ajv);
ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });
ajv.addFormat("double", { type: "number", validate: () => true });
ajv.addFormat("float", { type: "number", validate: () => true });

function crdValidator(key) {
  const entry = crdSchemas.get(key);
  if (!entry.validate) {
    const [group, version, kind] = key.split("/");
    const root = strictSchema(entry.schema);
    root.type = "object";
    root.properties = {
      apiVersion: { type: "string", enum: [`${group}/${version}`] },
      kind: { type: "string", enum: [kind] },
      metadata: { type: "object" },
      ...(root.properties || {}),
    };
    root.required = [...new Set(["apiVersion", "kind", "metadata", ...(root.required || [])])];
    root.additionalProperties = false;
    entry.validate = ajv.compile(root);
  }
  return entry;
}

function ajvErrors(errors) {
  return (errors || []).map((e) => {
    const where = e.instancePath || "/";
    let detail = e.message;
    if (e.keyword === "additionalProperties") detail = `unknown field "${e.params.additionalProperty}"`;
    else if (e.keyword === "enum") detail += `: ${JSON.stringify(e.params.allowedValues)}`;
    return `${where}: ${detail}`;
  });
}

// ------------------------------------------------------------------- CEL ---

// The Kubernetes CEL library functions the Istio CRDs use, on top of standard
// CEL: isURL(string), url(string).getScheme().
class KubeURL {
  constructor(u) {
    this.u = u;
  }
}

function parseUrl(s) {
  // Go's url.Parse is more lenient than WHATWG URL; what matters here is the
  // scheme, which both read the same way.
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(s)) return null;
  try {
    return new URL(s);
  } catch {
    return null;
  }
}

const cel = new Environment({ unlistedVariablesAreDyn: true, homogeneousAggregateLiterals: false })
  .registerType("URL", KubeURL)
  .registerFunction("isURL(string): bool", (s) => parseUrl(s) !== null)
  .registerFunction("url(string): URL", (s) => {
    const u = parseUrl(s);
    if (!u) throw new Error(`url(): ${JSON.stringify(s)} is not a URL`);
    return new KubeURL(u);
  })
  .registerFunction({
    name: "getScheme",
    receiverType: "URL",
    returnType: "string",
    handler: (u) => u.u.protocol.replace(/:$/, ""),
    params: [],
  });

// CEL distinguishes int from double: give integers of `type: integer` fields
// (and of schemaless subtrees) CEL's int representation.
function toCel(value, schema) {
  if (typeof value === "number") {
    const integer = schema ? schema.type === "integer" || schema["x-kubernetes-int-or-string"] : Number.isInteger(value);
    return integer && Number.isInteger(value) ? BigInt(value) : value;
  }
  if (Array.isArray(value)) return value.map((v) => toCel(v, schema && schema.items));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => {
        let sub;
        if (schema && schema.properties && schema.properties[k]) sub = schema.properties[k];
        else if (schema && typeof schema.additionalProperties === "object") sub = schema.additionalProperties;
        return [k, toCel(v, sub)];
      }),
    );
  }
  return value;
}

function celCheck(schema, data, where, errors) {
  if (data === undefined || data === null || !schema || typeof schema !== "object") return;
  for (const rule of schema["x-kubernetes-validations"] || []) {
    if (/\boldSelf\b/.test(rule.rule)) continue; // transition rules only apply to updates
    let ok;
    try {
      ok = cel.evaluate(rule.rule, { self: toCel(data, schema) });
    } catch (e) {
      errors.push(`${where || "/"}: cannot evaluate the CRD rule \`${rule.rule}\`: ${e.message}`);
      continue;
    }
    if (ok !== true) errors.push(`${where || "/"}: ${rule.message || `failed rule ${rule.rule}`}`);
  }
  if (schema.properties && typeof data === "object" && !Array.isArray(data)) {
    for (const [k, sub] of Object.entries(schema.properties)) celCheck(sub, data[k], `${where}/${k}`, errors);
  } else if (typeof schema.additionalProperties === "object" && typeof data === "object" && !Array.isArray(data)) {
    for (const [k, v] of Object.entries(data)) celCheck(schema.additionalProperties, v, `${where}/${k}`, errors);
  }
  if (schema.items && Array.isArray(data)) {
    data.forEach((v, i) => celCheck(schema.items, v, `${where}/${i}`, errors));
  }
}

// -------------------------------------------------- kubernetes-models ---

const modelCache = new Map();

async function loadModel(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (modelCache.has(key)) return modelCache.get(key);
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = group.endsWith("istio.io")
    ? [`@kubernetes-models/istio/${group}/${version}/${kind}`]
    : [group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`];
  let model = null;
  for (const spec of candidates) {
    try {
      const mod = await import(spec);
      if (typeof mod[kind] === "function") {
        model = { module: spec, cls: mod[kind] };
        break;
      }
    } catch (e) {
      if (e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED" && e.code !== "ERR_MODULE_NOT_FOUND") throw e;
    }
  }
  modelCache.set(key, model);
  return model;
}

// ------------------------------------------------------------ metadata ---

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function qualifiedKeyErrors(key) {
  const parts = key.split("/");
  if (parts.length > 2) return [`${key}: at most one "/"`];
  const [prefix, name] = parts.length === 2 ? parts : [null, parts[0]];
  const errors = [];
  if (prefix !== null && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    errors.push(`${key}: prefix must be a DNS subdomain`);
  }
  if (!name || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    errors.push(`${key}: name part must be 1-63 characters of [A-Za-z0-9-_.], alphanumeric at both ends`);
  }
  return errors;
}

function metadataErrors(meta) {
  const errors = [];
  if (!meta || typeof meta !== "object") return ["/metadata: required object"];
  if (typeof meta.name !== "string" || meta.name.length > 253 || !DNS1123_SUBDOMAIN.test(meta.name)) {
    errors.push(`/metadata/name: ${JSON.stringify(meta.name)} is not a DNS subdomain name`);
  }
  if (meta.namespace !== undefined && (typeof meta.namespace !== "string" || meta.namespace.length > 63 || !DNS1123_LABEL.test(meta.namespace))) {
    errors.push(`/metadata/namespace: ${JSON.stringify(meta.namespace)} is not a DNS label`);
  }
  for (const [field, checkValue] of [["labels", true], ["annotations", false]]) {
    const map = meta[field];
    if (map === undefined) continue;
    if (!map || typeof map !== "object") {
      errors.push(`/metadata/${field}: must be a map`);
      continue;
    }
    for (const [k, v] of Object.entries(map)) {
      errors.push(...qualifiedKeyErrors(k).map((e) => `/metadata/${field}: ${e}`));
      if (typeof v !== "string") errors.push(`/metadata/${field}/${k}: value must be a string`);
      else if (checkValue && (v.length > 63 || !LABEL_VALUE.test(v))) {
        errors.push(`/metadata/${field}/${k}: ${JSON.stringify(v)} is not a valid label value`);
      }
    }
  }
  return errors;
}

// Pod template labels follow the same rules.
function nestedMetadataErrors(doc) {
  const tmpl = doc && doc.spec && doc.spec.template && doc.spec.template.metadata;
  if (!tmpl) return [];
  return metadataErrors({ name: "template", ...tmpl }).map((e) => e.replace("/metadata", "/spec/template/metadata"));
}

// ------------------------------------------------------------- run it ---

async function validateDocument(doc) {
  const checks = [];
  const apiVersion = doc && doc.apiVersion;
  const kind = doc && doc.kind;
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    checks.push({ validator: "objectmeta", status: "fail", errors: ["/: apiVersion and kind are required strings"] });
    return checks;
  }

  const metaErrors = [...metadataErrors(doc.metadata), ...nestedMetadataErrors(doc)];
  checks.push({ validator: "objectmeta", status: metaErrors.length ? "fail" : "pass", errors: metaErrors });

  const model = await loadModel(apiVersion, kind);
  if (model) {
    try {
      // The model fills in apiVersion/kind; validate a copy.
      new model.cls(structuredClone(doc)).validate();
      checks.push({ validator: "kubernetes-models", status: "pass", errors: [], note: model.module });
    } catch (e) {
      const errors = (e.errors ? ajvErrors(e.errors) : [e.message]);
      checks.push({ validator: "kubernetes-models", status: "fail", errors, note: model.module });
    }
  } else {
    checks.push({
      validator: "kubernetes-models",
      status: "skip",
      errors: [],
      note: `the npm packages have no model for ${apiVersion} ${kind}`,
    });
  }

  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const key = `${group}/${version}/${kind}`;
  if (crdStatus.skipped) {
    checks.push({ validator: "crd", status: "skip", errors: [], note: crdStatus.skipped });
  } else if (crdSchemas.has(key)) {
    const entry = crdValidator(key);
    const errors = [];
    if (!entry.validate(doc)) errors.push(...ajvErrors(entry.validate.errors));
    celCheck(entry.schema, doc, "", errors);
    if (entry.served === false) errors.push(`/apiVersion: ${apiVersion} is not served by ${entry.crd}`);
    checks.push({
      validator: "crd",
      status: errors.length ? "fail" : "pass",
      errors,
      note: `${entry.crd} (${path.relative(process.cwd(), entry.file) || entry.file})`,
    });
  } else if (group.endsWith("istio.io")) {
    // An Istio kind we have CRDs for, but not this version: a typo or an old version.
    const known = [...crdSchemas.keys()].filter((k) => k.startsWith(`${group}/`) && k.endsWith(`/${kind}`));
    if (known.length) {
      checks.push({ validator: "crd", status: "fail", errors: [`/apiVersion: ${apiVersion} ${kind} has no CRD version; known: ${known.join(", ")}`] });
    } else {
      checks.push({ validator: "crd", status: "skip", errors: [], note: `no CRD for ${apiVersion} ${kind} in ${crdDir}` });
    }
  } else {
    checks.push({ validator: "crd", status: "skip", errors: [], note: `built-in kind ${apiVersion} ${kind}` });
  }

  if (!checks.some((c) => c.validator !== "objectmeta" && c.status === "pass") && !checks.some((c) => c.status === "fail")) {
    // Nothing knew this kind: that is not a pass.
    if (!crdStatus.skipped) {
      checks.push({ validator: "coverage", status: "fail", errors: [`no schema knows ${apiVersion} ${kind}`] });
    }
  }
  return checks;
}

function readSource(file) {
  if (file === "-") return { source: "<stdin>", text: fs.readFileSync(0, "utf8") };
  return { source: path.relative(process.cwd(), path.resolve(file)) || file, text: fs.readFileSync(file, "utf8") };
}

async function main() {
  loadCrds();
  if (crdStatus.skipped) {
    if (requireCrds) {
      console.error(`validate.mjs: ${crdStatus.skipped} (and --require-crds was given)`);
      process.exit(1);
    }
    console.error(`NOTE: ${crdStatus.skipped}`);
  }

  const report = { ok: true, crds: crdStatus, documents: [] };
  for (const file of files) {
    let input;
    try {
      input = readSource(file);
    } catch (e) {
      report.ok = false;
      report.documents.push({ source: file, index: 0, checks: [{ validator: "yaml", status: "fail", errors: [e.message] }] });
      continue;
    }
    const docs = parseAllDocuments(input.text);
    let index = 0;
    for (const d of Array.isArray(docs) ? docs : [docs]) {
      const entry = { source: input.source, index };
      index++;
      if (d.errors && d.errors.length) {
        entry.checks = [{ validator: "yaml", status: "fail", errors: d.errors.map((e) => e.message) }];
      } else {
        const doc = d.toJS();
        if (doc === null || doc === undefined) continue; // empty document (e.g. after a trailing ---)
        entry.apiVersion = doc.apiVersion;
        entry.kind = doc.kind;
        entry.name = doc.metadata && doc.metadata.name;
        entry.checks = await validateDocument(doc);
      }
      if (entry.checks.some((c) => c.status === "fail")) report.ok = false;
      report.documents.push(entry);
    }
  }
  if (report.documents.length === 0) {
    report.ok = false;
    report.documents.push({ source: files.join(" "), index: 0, checks: [{ validator: "yaml", status: "fail", errors: ["no document"] }] });
  }

  if (json) {
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  } else {
    for (const d of report.documents) {
      const failed = d.checks.some((c) => c.status === "fail");
      const what = `${d.source}#${d.index} ${d.kind || "?"}/${d.name || "?"}`;
      const summary = d.checks.map((c) => `${c.validator}:${c.status}`).join(" ");
      console.log(`${failed ? "FAIL" : "ok  "} ${what}  [${summary}]`);
      for (const c of d.checks) {
        for (const e of c.errors) console.log(`       ${c.validator}: ${e}`);
        if (c.status === "skip" && c.note) console.log(`       ${c.validator}: skipped: ${c.note}`);
      }
    }
    const failed = report.documents.filter((d) => d.checks.some((c) => c.status === "fail")).length;
    console.log(`manifests checked: ${report.documents.length} documents, ${failed} with errors`);
  }
  process.exit(report.ok ? 0 : 1);
}

main().catch((e) => {
  console.error(`validate.mjs: ${e.stack || e}`);
  process.exit(2);
});
