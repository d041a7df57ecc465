#!/usr/bin/env node
// Validates Kubernetes manifests offline, against the API's schemas:
//   node validate.js FILE.yaml...            (documents separated by ---; `# Source:` comments name them)
// Prints a JSON report ({documents, kinds, errors: [{source, kind, name, message}]}) and exits 1 when
// any document is invalid. What it checks:
//   - built-in kinds: kubernetes-models' validators (the Kubernetes OpenAPI schemas: types, required
//     fields, enums, formats such as quantities), plus fields the schema does not know (the API server
//     rejects them under strict field validation; the validators let them through), found from the
//     models' type declarations;
//   - monitoring.coreos.com/v1 (ServiceMonitor, ...): @kubernetes-models/prometheus-operator, the same way;
//   - custom resources whose CustomResourceDefinition is among the inputs (or given with --crd FILE):
//     the CRD's openAPIV3Schema as the API server applies it (unknown fields refused unless
//     x-kubernetes-preserve-unknown-fields), and the CRD itself for a structural schema;
//   - snapshot.storage.k8s.io/v1 VolumeSnapshotClass and VolumeSnapshot: a schema written here from the
//     external-snapshotter CRDs' fields (no package covers them);
//   - rules the API server enforces outside the schemas: object, container, port and volume names,
//     label keys and values, environment variable names.
// Any other kind is an error ("no schema"), so nothing passes unchecked.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const Ajv = require("ajv");

// ---------------------------------------------------------------------------------------------------
// Unknown fields, from the models' .d.ts declarations: interface I<Name> { "field"?: Type; ... }

const interfaceCache = new Map(); // file -> Map(localName -> {fields: Map(name -> type)}), plus aliases

function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

function parseDts(file) {
  if (interfaceCache.has(file)) return interfaceCache.get(file);
  const info = { interfaces: new Map(), imports: new Map(), aliases: new Map(), dir: path.dirname(file) };
  interfaceCache.set(file, info);
  let text;
  try {
    text = stripComments(fs.readFileSync(file, "utf8"));
  } catch (e) {
    return info;
  }
  for (const m of text.matchAll(/^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim()).filter(Boolean)) info.imports.set(name, m[2]);
  }
  for (const m of text.matchAll(/^export\s*\{([^}]*)\};/gm)) {
    for (const part of m[1].split(",")) {
      const mm = part.trim().match(/^(\w+)\s+as\s+(\w+)$/);
      if (mm) info.aliases.set(mm[2], mm[1]);
    }
  }
  const re = /export interface (\w+)(?:\s+extends\s+[\w\s,<>]+?)?\s*\{/g;
  let m;
  while ((m = re.exec(text))) {
    const fields = new Map();
    let i = re.lastIndex;
    let depth = 1;
    let entry = "";
    for (; i < text.length && depth > 0; i++) {
      const c = text[i];
      if (c === "{" || c === "<") depth++;
      if (c === "}" || c === ">") depth--;
      if (depth === 0) break;
      if (c === ";" && depth === 1) {
        const em = entry.trim().match(/^"([^"]+)"\??:\s*([\s\S]+)$/);
        if (em) fields.set(em[1], em[2].replace(/\s+/g, " ").trim());
        entry = "";
      } else {
        entry += c;
      }
    }
    info.interfaces.set(m[1], { fields });
  }
  return info;
}

function resolveModule(fromDir, spec) {
  if (spec.startsWith(".")) return path.resolve(fromDir, spec + ".d.ts");
  try {
    return require.resolve(spec).replace(/\.js$/, ".d.ts");
  } catch (e) {
    return null;
  }
}

// A type: {kind: "object", file, name} | {kind: "array", of} | {kind: "map", of} | {kind: "leaf"}
function resolveType(file, expr) {
  expr = expr.trim();
  let m = expr.match(/^Array<(.+)>$/);
  if (m) return { kind: "array", of: resolveType(file, m[1]) };
  m = expr.match(/^\{\s*\[key: string\]:\s*(.+?);?\s*\}$/);
  if (m) return { kind: "map", of: resolveType(file, m[1]) };
  if (!/^\w+$/.test(expr)) return { kind: "leaf" };
  const info = parseDts(file);
  const local = info.aliases.get(expr) || expr;
  if (info.interfaces.has(local)) return { kind: "object", file, name: local };
  const spec = info.imports.get(expr);
  if (spec) {
    const target = resolveModule(info.dir, spec);
    if (target) {
      const tinfo = parseDts(target);
      const tname = tinfo.aliases.get(expr) || expr;
      if (tinfo.interfaces.has(tname)) return { kind: "object", file: target, name: tname };
    }
  }
  return { kind: "leaf" };
}

function unknownFields(value, type, where, out) {
  if (value === null || value === undefined) return;
  if (type.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, type.of, `${where}[${i}]`, out));
    return;
  }
  if (type.kind === "map") {
    if (typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) unknownFields(v, type.of, `${where}.${k}`, out);
    }
    return;
  }
  if (type.kind !== "object" || typeof value !== "object" || Array.isArray(value)) return;
  const iface = parseDts(type.file).interfaces.get(type.name);
  if (!iface || iface.fields.size === 0) return; // opaque (e.g. RawExtension, JSON)
  for (const [k, v] of Object.entries(value)) {
    const ft = iface.fields.get(k);
    if (ft === undefined) {
      out.push(`${where || "."}: unknown field "${k}"`);
      continue;
    }
    unknownFields(v, resolveType(type.file, ft), where ? `${where}.${k}` : k, out);
  }
}

// ---------------------------------------------------------------------------------------------------
// Built-in kinds

function builtinModule(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (!/^\w+$/.test(kind) || !/^[\w.-]*$/.test(group) || !/^\w+$/.test(version)) return null;
  const candidates = [];
  if (group === "") candidates.push(`kubernetes-models/${version}/${kind}`);
  else if (group === "monitoring.coreos.com") candidates.push(`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`);
  else candidates.push(`kubernetes-models/${group}/${version}/${kind}`);
  for (const spec of candidates) {
    let js;
    try {
      js = require.resolve(spec);
    } catch (e) {
      continue;
    }
    const mod = require(js);
    const cls = mod[kind];
    if (cls && cls.apiVersion === apiVersion && cls.kind === kind) {
      return { cls, dts: js.replace(/\.js$/, ".d.ts"), iface: "I" + kind };
    }
  }
  return null;
}

function validateBuiltin(obj, mod) {
  const errors = [];
  try {
    new mod.cls(obj).validate();
  } catch (e) {
    errors.push(String(e.message || e));
  }
  unknownFields(obj, { kind: "object", file: mod.dts, name: mod.iface }, "", errors);
  return errors;
}

// ---------------------------------------------------------------------------------------------------
// Custom resources: the CRD's schema, as the API server applies it.

const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
for (const f of ["int32", "int64", "float", "double", "byte", "binary", "password"]) ajv.addFormat(f, true);
ajv.addFormat("date-time", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
ajv.addFormat("date", /^\d{4}-\d\d-\d\d$/);

// Turns an openAPIV3Schema into a JSON schema with the API server's pruning made strict: objects with
// properties refuse other fields unless x-kubernetes-preserve-unknown-fields; int-or-string.
function strictSchema(s) {
  if (!s || typeof s !== "object") return s;
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === "x-kubernetes-validations" || k === "x-kubernetes-preserve-unknown-fields") continue;
    if (k === "properties" || k === "patternProperties") {
      out[k] = Object.fromEntries(Object.entries(v).map(([p, ps]) => [p, strictSchema(ps)]));
    } else if (["items", "additionalProperties", "not"].includes(k) && typeof v === "object") {
      out[k] = strictSchema(v);
    } else if (["allOf", "anyOf", "oneOf"].includes(k)) {
      out[k] = v.map(strictSchema);
    } else {
      out[k] = v;
    }
  }
  if (s["x-kubernetes-int-or-string"]) {
    delete out.type;
    out.anyOf = [{ type: "integer" }, { type: "string" }];
  }
  if (s.type === "object" && s.properties && !s["x-kubernetes-preserve-unknown-fields"] && s.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  return out;
}

// A structural schema (what apiextensions.k8s.io/v1 requires): every node has a type unless it is
// int-or-string or keeps unknown fields; properties and additionalProperties are not both given;
// metadata at the root is only {type: object}.
let schemaFields = null; // the fields of apiextensions.k8s.io/v1 JSONSchemaProps
function structuralErrors(s, where, out, root) {
  if (!s || typeof s !== "object") return;
  if (!schemaFields) {
    const dts = require.resolve("kubernetes-models/apiextensions.k8s.io/v1/JSONSchemaProps").replace(/\.js$/, ".d.ts");
    schemaFields = new Set(parseDts(dts).interfaces.get("IJSONSchemaProps").fields.keys());
  }
  for (const k of Object.keys(s)) {
    if (!schemaFields.has(k)) out.push(`${where}: unknown field "${k}"`);
  }
  if (!s.type && !s["x-kubernetes-int-or-string"] && !s["x-kubernetes-preserve-unknown-fields"]) {
    out.push(`${where}: no type (not a structural schema)`);
  }
  if (s.properties && s.additionalProperties !== undefined && s.additionalProperties !== false) {
    out.push(`${where}: properties and additionalProperties together`);
  }
  if (s.type === "array" && !s.items) out.push(`${where}: an array without items`);
  for (const [p, ps] of Object.entries(s.properties || {})) {
    if (root && p === "metadata") {
      const extra = Object.keys(ps).filter((k) => k !== "type");
      if (ps.type !== "object" || extra.length) out.push(`${where}.properties.metadata: only {type: object} is allowed at the root`);
      continue;
    }
    structuralErrors(ps, `${where}.properties.${p}`, out, false);
  }
  if (s.items) structuralErrors(s.items, `${where}.items`, out, false);
  if (s.additionalProperties && typeof s.additionalProperties === "object") {
    structuralErrors(s.additionalProperties, `${where}.additionalProperties`, out, false);
  }
  for (const rule of s["x-kubernetes-validations"] || []) {
    if (typeof rule.rule !== "string" || !rule.rule.trim()) out.push(`${where}: a validation without a rule`);
  }
}

function crdChecks(crd) {
  const errors = [];
  const spec = crd.spec || {};
  const names = spec.names || {};
  if (crd.metadata && crd.metadata.name !== `${names.plural}.${spec.group}`) {
    errors.push(`metadata.name must be <plural>.<group> (${names.plural}.${spec.group})`);
  }
  const versions = spec.versions || [];
  if (versions.filter((v) => v.storage).length !== 1) errors.push("exactly one version must be the storage version");
  for (const v of versions) {
    const schema = v.schema && v.schema.openAPIV3Schema;
    if (!schema) {
      errors.push(`version ${v.name}: no openAPIV3Schema`);
      continue;
    }
    if (schema.type !== "object") errors.push(`version ${v.name}: the root schema must be type object`);
    structuralErrors(schema, `versions[${v.name}].schema.openAPIV3Schema`, errors, true);
    for (const col of v.additionalPrinterColumns || []) {
      if (!/^\./.test(col.jsonPath || "")) errors.push(`version ${v.name}: printer column ${col.name}: jsonPath must start with "."`);
    }
    try {
      ajv.compile(strictSchema(schema));
    } catch (e) {
      errors.push(`version ${v.name}: the schema does not compile: ${e.message}`);
    }
  }
  return errors;
}

function customResourceValidator(crds, apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  for (const crd of crds) {
    const spec = crd.spec || {};
    if (spec.group !== group || !spec.names || spec.names.kind !== kind) continue;
    const v = (spec.versions || []).find((x) => x.name === version && x.served);
    if (!v) return { error: `${apiVersion} is not a served version of ${spec.names.plural}.${group}` };
    return { validate: ajv.compile(strictSchema(v.schema.openAPIV3Schema)), scope: spec.scope };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------
// snapshot.storage.k8s.io/v1, from the external-snapshotter CRDs' fields.

const metaSchema = { type: "object" };
const snapshotSchemas = {
  VolumeSnapshotClass: {
    type: "object",
    additionalProperties: false,
    required: ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
    properties: {
      apiVersion: { const: "snapshot.storage.k8s.io/v1" },
      kind: { const: "VolumeSnapshotClass" },
      metadata: metaSchema,
      driver: { type: "string", minLength: 1 },
      deletionPolicy: { enum: ["Delete", "Retain"] },
      parameters: { type: "object", additionalProperties: { type: "string" } },
    },
  },
  VolumeSnapshot: {
    type: "object",
    additionalProperties: false,
    required: ["apiVersion", "kind", "metadata", "spec"],
    properties: {
      apiVersion: { const: "snapshot.storage.k8s.io/v1" },
      kind: { const: "VolumeSnapshot" },
      metadata: metaSchema,
      spec: {
        type: "object",
        additionalProperties: false,
        required: ["source"],
        properties: {
          volumeSnapshotClassName: { type: "string" },
          source: {
            type: "object",
            additionalProperties: false,
            properties: {
              persistentVolumeClaimName: { type: "string", minLength: 1 },
              volumeSnapshotContentName: { type: "string", minLength: 1 },
            },
            oneOf: [{ required: ["persistentVolumeClaimName"] }, { required: ["volumeSnapshotContentName"] }],
          },
        },
      },
      status: { type: "object" },
    },
  },
};
const snapshotValidators = Object.fromEntries(Object.entries(snapshotSchemas).map(([k, s]) => [k, ajv.compile(s)]));

// ---------------------------------------------------------------------------------------------------
// What the API server checks beyond the schemas.

const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dns1035Label = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const dns1123Subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const labelValue = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const qualifiedName = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const envName = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

function checkLabelKey(k) {
  const parts = k.split("/");
  if (parts.length > 2) return false;
  const name = parts[parts.length - 1];
  if (name.length > 63 || !qualifiedName.test(name)) return false;
  if (parts.length === 2 && (parts[0].length > 253 || !dns1123Subdomain.test(parts[0]))) return false;
  return true;
}

function checkLabels(labels, where, out) {
  for (const [k, v] of Object.entries(labels || {})) {
    if (!checkLabelKey(k)) out.push(`${where}: invalid label key "${k}"`);
    if (typeof v !== "string" || v.length > 63 || !labelValue.test(v)) out.push(`${where}: invalid value of label "${k}": ${JSON.stringify(v)}`);
  }
}

function checkName(kind, name, out) {
  if (typeof name !== "string" || !name) {
    out.push("metadata.name: required");
    return;
  }
  const labelNamed = ["Service", "Namespace"];
  if (kind === "Service" ? !dns1035Label.test(name) || name.length > 63 : labelNamed.includes(kind) ? !dns1123Label.test(name) || name.length > 63 : !dns1123Subdomain.test(name) || name.length > 253) {
    out.push(`metadata.name: "${name}" is not a valid ${kind} name`);
  }
  if (kind === "StatefulSet" && name.length > 52) out.push(`metadata.name: "${name}" is longer than 52 (its pods' controller-revision-hash label would not fit)`);
}

function podSpecOf(obj) {
  const s = obj.spec || {};
  if (obj.kind === "Pod") return s;
  if (["Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"].includes(obj.kind)) return (s.template || {}).spec;
  if (obj.kind === "CronJob") return (((s.jobTemplate || {}).spec || {}).template || {}).spec;
  return null;
}

function checkPodSpec(pod, claims, out) {
  if (!pod) return;
  const containers = [...(pod.initContainers || []), ...(pod.containers || [])];
  const names = new Set();
  for (const c of containers) {
    if (!dns1123Label.test(c.name || "") || c.name.length > 63) out.push(`container "${c.name}": invalid name`);
    if (names.has(c.name)) out.push(`container "${c.name}": duplicate name`);
    names.add(c.name);
    const portNames = new Set();
    for (const p of c.ports || []) {
      if (p.name !== undefined) {
        if (p.name.length > 15 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.name) || !/[a-z]/.test(p.name) || p.name.includes("--")) {
          out.push(`container "${c.name}": invalid port name "${p.name}" (at most 15 characters, a-z0-9 and -, a letter)`);
        }
        if (portNames.has(p.name)) out.push(`container "${c.name}": duplicate port name "${p.name}"`);
        portNames.add(p.name);
      }
      if (pod.hostNetwork && p.hostPort !== undefined && p.hostPort !== p.containerPort) {
        out.push(`container "${c.name}": with hostNetwork, hostPort must equal containerPort`);
      }
    }
    for (const e of c.env || []) {
      if (!envName.test(e.name || "")) out.push(`container "${c.name}": invalid environment variable name "${e.name}"`);
    }
    for (const probe of ["livenessProbe", "readinessProbe", "startupProbe"]) {
      const pr = c[probe];
      if (!pr) continue;
      const port = (pr.httpGet || pr.tcpSocket || {}).port;
      if (typeof port === "string" && !portNames.has(port)) out.push(`container "${c.name}": ${probe} names port "${port}", which the container does not declare`);
      if (probe !== "livenessProbe" && pr.successThreshold !== undefined && pr.successThreshold < 1) out.push(`container "${c.name}": ${probe}.successThreshold < 1`);
      if ((probe === "livenessProbe" || probe === "startupProbe") && pr.successThreshold !== undefined && pr.successThreshold !== 1) {
        out.push(`container "${c.name}": ${probe}.successThreshold must be 1`);
      }
    }
    const mountNames = new Set([...(pod.volumes || []).map((v) => v.name), ...claims]);
    for (const m of c.volumeMounts || []) {
      if (!mountNames.has(m.name)) out.push(`container "${c.name}": mounts volume "${m.name}", which the pod does not have`);
      if (m.mountPropagation === "Bidirectional" && !(c.securityContext || {}).privileged) {
        out.push(`container "${c.name}": Bidirectional mount propagation needs a privileged container`);
      }
    }
  }
  const volNames = new Set();
  for (const v of pod.volumes || []) {
    if (!dns1123Label.test(v.name || "")) out.push(`volume "${v.name}": invalid name`);
    if (volNames.has(v.name)) out.push(`volume "${v.name}": duplicate`);
    volNames.add(v.name);
  }
  if (pod.hostNetwork && pod.dnsPolicy === "ClusterFirst") out.push("hostNetwork with dnsPolicy ClusterFirst: cluster names do not resolve (ClusterFirstWithHostNet)");
}

function checkWorkload(obj, out) {
  const s = obj.spec || {};
  if (["Deployment", "DaemonSet", "StatefulSet", "ReplicaSet"].includes(obj.kind)) {
    const sel = (s.selector || {}).matchLabels || {};
    const labels = ((s.template || {}).metadata || {}).labels || {};
    for (const [k, v] of Object.entries(sel)) {
      if (labels[k] !== v) out.push(`spec.selector does not match the pod template's labels (${k})`);
    }
    checkLabels(labels, "spec.template.metadata.labels", out);
  }
  if (obj.kind === "StatefulSet") {
    for (const t of s.volumeClaimTemplates || []) checkLabels((t.metadata || {}).labels, "volumeClaimTemplates", out);
  }
}

// ---------------------------------------------------------------------------------------------------

function sourceOf(doc, file, index) {
  const comments = `${doc.commentBefore || ""}\n${(doc.contents && doc.contents.commentBefore) || ""}`;
  const m = comments.match(/Source:\s*(\S+)/);
  return m ? m[1] : `${file}#${index}`;
}

function main(argv) {
  const files = [];
  const crdFiles = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--crd") crdFiles.push(argv[++i]);
    else files.push(argv[i]);
  }
  if (!files.length) {
    process.stderr.write("usage: node validate.js [--crd CRD.yaml] MANIFEST.yaml...\n");
    return 2;
  }
  const items = [];
  const report = { documents: 0, kinds: {}, errors: [] };
  const readAll = (file, into) => {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
    docs.forEach((doc, i) => {
      if (doc.errors.length) {
        report.errors.push({ source: `${file}#${i}`, kind: "", name: "", message: `YAML: ${doc.errors[0].message}` });
        return;
      }
      const obj = doc.toJS();
      if (obj === null || obj === undefined) return;
      into.push({ obj, source: sourceOf(doc, file, i) });
    });
  };
  const extraCrds = [];
  for (const f of crdFiles) readAll(f, extraCrds);
  for (const f of files) readAll(f, items);
  const crds = [...extraCrds, ...items]
    .map((it) => it.obj)
    .filter((o) => o && o.apiVersion === "apiextensions.k8s.io/v1" && o.kind === "CustomResourceDefinition");

  const seen = new Map();
  for (const { obj, source } of items) {
    const errors = [];
    const kind = obj && obj.kind;
    const apiVersion = obj && obj.apiVersion;
    const name = obj && obj.metadata && obj.metadata.name;
    report.documents++;
    if (typeof obj !== "object" || Array.isArray(obj) || !kind || !apiVersion) {
      report.errors.push({ source, kind: "", name: "", message: "not a Kubernetes object (apiVersion and kind)" });
      continue;
    }
    report.kinds[`${apiVersion}/${kind}`] = (report.kinds[`${apiVersion}/${kind}`] || 0) + 1;
    const key = `${apiVersion.split("/")[0]}/${kind}/${(obj.metadata || {}).namespace || ""}/${name}`;
    if (seen.has(key)) errors.push(`the same object again (also in ${seen.get(key)})`);
    seen.set(key, source);

    const mod = builtinModule(apiVersion, kind);
    if (mod) {
      errors.push(...validateBuiltin(obj, mod));
      if (kind === "CustomResourceDefinition") errors.push(...crdChecks(obj));
    } else if (apiVersion === "snapshot.storage.k8s.io/v1" && snapshotValidators[kind]) {
      const v = snapshotValidators[kind];
      if (!v(obj)) errors.push(...v.errors.map((e) => `${e.instancePath || "."} ${e.message}`));
    } else {
      const cr = apiVersion.includes("/") ? customResourceValidator(crds, apiVersion, kind) : null;
      if (cr && cr.error) {
        errors.push(cr.error);
      } else if (cr) {
        if (!cr.validate(obj)) errors.push(...cr.validate.errors.map((e) => `${e.instancePath || "."} ${e.message}${e.params && e.params.additionalProperty ? ` "${e.params.additionalProperty}"` : ""}`));
        if (cr.scope === "Namespaced" && !(obj.metadata || {}).namespace) errors.push("metadata.namespace: a namespaced custom resource without a namespace");
        const meta = builtinModule("v1", "Pod"); // ObjectMeta through a Pod's declarations
        unknownFields(obj.metadata, resolveType(meta.dts, "IIoK8sApimachineryPkgApisMetaV1ObjectMeta"), "metadata", errors);
      } else {
        errors.push(`no schema for ${apiVersion} ${kind} (not a built-in kind, not covered by the packages, no CRD given)`);
      }
    }
    checkName(kind, name, errors);
    checkLabels((obj.metadata || {}).labels, "metadata.labels", errors);
    const claims = kind === "StatefulSet" ? ((obj.spec || {}).volumeClaimTemplates || []).map((t) => (t.metadata || {}).name) : [];
    checkPodSpec(podSpecOf(obj), claims, errors);
    checkWorkload(obj, errors);
    for (const message of errors) report.errors.push({ source, kind, name: name || "", message });
  }
  process.stdout.write(JSON.stringify(report, null, 1) + "\n");
  return report.errors.length ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
