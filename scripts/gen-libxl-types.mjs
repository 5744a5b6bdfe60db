#!/usr/bin/env node
// Generates lib/config/libxl-types.gen.ts from libxl's installed _libxl_types.h:
// `npm run gen:types [-- --header PATH] [--out PATH] [--check]`.
//
// _libxl_types.h is itself generated (by libxl's gentypes.py from libxl_types.idl), so its
// shape is regular enough to read with a small parser. The JSON each type takes is what
// gentypes.py's `_gen_json` / `_parse_json` code does with it; the rules applied here:
//
// - an enum serialises as its value's name, lower-cased, without the `LIBXL_<TYPE>_` prefix
//   (`libxl_<type>_to_string`); libxl_error has no `LIBXL_` prefix;
// - a struct is a JSON object keyed by the C field names; fields equal to their default are
//   omitted when libxl writes, and absent keys keep the default when it reads — so every
//   field is optional. `const` fields and private types (libxl_ev_link) are never written;
// - an array is `int num_x; T *x;` in C and a plain JSON array (no count) in JSON;
// - a keyed union (an enum field followed by `union { … } u;`) is written as ONE key
//   `"<keyvar>.<member>"` (e.g. `"type.pv"`) whose object holds the member's fields; the
//   key variable itself is not written: libxl sets it from which key is present;
// - builtins serialise as libxl_json.c writes them: defbool as "True"/"False"/"<default>",
//   uuid and mac as strings, bitmap as the list of set bit numbers, string_list as an array
//   of strings, key_value_list as an object of string|null, hwcap and ms_vm_genid as
//   arrays of integers, uint64 as a JSON number.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const headerPath = option('header', '/usr/include/_libxl_types.h');
const outPath = option('out', join(root, 'lib', 'config', 'libxl-types.gen.ts'));

/** C builtin → [TypeScript type, note]. A type missing here and not declared in the header is an error. */
const builtins = {
  int: 'number',
  bool: 'boolean',
  size_t: 'number',
  uint8_t: 'number',
  uint16_t: 'number',
  uint32_t: 'number',
  uint64_t: 'number',
  'char *': 'string',
  libxl_domid: 'number',
  libxl_devid: 'number',
  libxl_defbool: 'LibxlDefbool',
  libxl_uuid: 'LibxlUuid',
  libxl_mac: 'LibxlMac',
  libxl_bitmap: 'LibxlBitmap',
  libxl_string_list: 'string[]',
  libxl_key_value_list: 'LibxlKeyValueList',
  libxl_hwcap: 'number[]',
  libxl_ms_vm_genid: 'number[]',
  libxl_cpuid_policy_list: 'LibxlCpuidPolicyList',
};
/** Types libxl never serialises (gentypes.py skips fields of private types). */
const privateTypes = new Set(['libxl_ev_link']);

function pascal(cname) {
  return cname.split('_').filter(Boolean).map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}

/** Splits the header into top-level `typedef enum|struct NAME { … } NAME;` blocks. */
function blocks(text) {
  const out = [];
  const re = /^typedef (enum|struct) (\w+) \{$/gm;
  let m;
  while ((m = re.exec(text))) {
    const end = text.indexOf(`\n} ${m[2]};`, m.index);
    if (end < 0) throw new Error(`${headerPath}: no end for ${m[2]}`);
    out.push({ kind: m[1], name: m[2], body: text.slice(m.index + m[0].length, end).split('\n').map((l) => l.trim()).filter(Boolean) });
    re.lastIndex = end;
  }
  return out;
}

function parseEnum(name, lines) {
  const values = lines.map((l) => {
    const m = /^(\w+) = (-?\d+),$/.exec(l);
    if (!m) throw new Error(`${headerPath}: ${name}: cannot read enum value "${l}"`);
    return { cname: m[1], value: Number(m[2]) };
  });
  const raw = name.replace(/^libxl_/, '').toUpperCase();
  const prefix = values.every((v) => v.cname.startsWith(`LIBXL_${raw}_`)) ? `LIBXL_${raw}_` : `${raw}_`;
  for (const v of values) {
    if (!v.cname.startsWith(prefix)) throw new Error(`${headerPath}: ${name}: ${v.cname} lacks the prefix ${prefix}`);
    v.json = v.cname.slice(prefix.length).toLowerCase();
  }
  return { name, values };
}

/** Reads struct members from `lines[i…]` up to the matching `}`; returns [fields, next index]. */
function parseMembers(owner, lines, i) {
  const fields = [];
  while (i < lines.length && !lines[i].startsWith('}')) {
    const line = lines[i];
    if (line === 'union {' || line === 'struct {') {
      const [members, j] = parseMembers(owner, lines, i + 1);
      const m = /^\} (\w+);$/.exec(lines[j]);
      if (!m) throw new Error(`${headerPath}: ${owner}: cannot read "${lines[j]}"`);
      fields.push({ name: m[1], kind: line === 'union {' ? 'union' : 'struct', members });
      i = j + 1;
      continue;
    }
    const m = /^(const )?([\w ]+?)( \*)? (\w+);$/.exec(line);
    if (!m) throw new Error(`${headerPath}: ${owner}: cannot read field "${line}"`);
    const [, isConst, ctype, star, name] = m;
    fields.push({ name, kind: 'plain', ctype: star && ctype === 'char' ? 'char *' : ctype, pointer: Boolean(star) && ctype !== 'char', isConst: Boolean(isConst) });
    i++;
  }
  return [fields, i];
}

const headerText = readFileSync(headerPath, 'utf8');
const enums = new Map();
const structs = new Map();
for (const b of blocks(headerText)) {
  if (b.kind === 'enum') enums.set(b.name, parseEnum(b.name, b.body));
  else structs.set(b.name, parseMembers(b.name, [...b.body, '}'], 0)[0]);
}

function tsType(owner, ctype) {
  if (enums.has(ctype) || structs.has(ctype)) return pascal(ctype);
  if (ctype in builtins) return builtins[ctype];
  throw new Error(`${headerPath}: ${owner}: no JSON mapping for C type ${ctype}; teach scripts/gen-libxl-types.mjs how libxl_json.c writes it`);
}

/** The TypeScript members for a list of C fields, applying the JSON rules above. */
function members(owner, fields, indent) {
  const out = [];
  for (let k = 0; k < fields.length; k++) {
    const f = fields[k];
    const next = fields[k + 1];
    if (f.kind === 'plain' && f.isConst) continue;
    if (f.kind === 'plain' && privateTypes.has(f.ctype)) continue;
    // `int num_x;` just before an array `T *x;` is the array's length: not in the JSON.
    if (f.kind === 'plain' && f.ctype === 'int' && next?.kind === 'plain' && next.pointer) continue;
    // An enum field just before a union is the union's key: not in the JSON.
    if (f.kind === 'plain' && enums.has(f.ctype) && next?.kind === 'union') continue;
    if (f.kind === 'union') {
      const key = fields[k - 1];
      if (!key || key.kind !== 'plain' || !enums.has(key.ctype)) throw new Error(`${headerPath}: ${owner}: union ${f.name} without an enum key before it`);
      const seen = new Set();
      for (const m of f.members) {
        seen.add(m.name);
        out.push(`${indent}/** Present when \`${key.name}\` is \`${m.name}\` (${key.ctype}); libxl sets \`${key.name}\` from this key. */`);
        out.push(`${indent}'${key.name}.${m.name}'?: ${objectType(`${owner}.${m.name}`, m, indent)};`);
      }
      for (const v of enums.get(key.ctype).values) {
        if (seen.has(v.json)) continue;
        out.push(`${indent}/** \`${key.name}\` = \`${v.json}\`, a member without fields (libxl writes \`{}\`). */`);
        out.push(`${indent}'${key.name}.${v.json}'?: Record<string, never>;`);
      }
      continue;
    }
    if (f.kind === 'struct') {
      out.push(`${indent}${f.name}?: ${objectType(`${owner}.${f.name}`, f, indent)};`);
      continue;
    }
    const t = tsType(owner, f.ctype);
    out.push(`${indent}${f.name}?: ${f.pointer ? (t.includes(' ') || t.includes('|') ? `Array<${t}>` : `${t}[]`) : t};`);
  }
  return out;
}

function objectType(owner, f, indent) {
  if (f.kind !== 'struct') throw new Error(`${headerPath}: ${owner}: union member is not a struct`);
  const body = members(owner, f.members, `${indent}  `);
  return body.length === 0 ? 'Record<string, never>' : `{\n${body.join('\n')}\n${indent}}`;
}

/** C builtin → schema kind (how libxl_json.c writes it), for LIBXL_STRUCTS. */
const builtinKinds = {
  int: 'int', size_t: 'int', uint8_t: 'int', uint16_t: 'int', uint32_t: 'int', uint64_t: 'int', libxl_domid: 'int', libxl_devid: 'int',
  bool: 'bool', 'char *': 'string', libxl_defbool: 'defbool', libxl_uuid: 'uuid', libxl_mac: 'mac', libxl_bitmap: 'bitmap',
  libxl_string_list: 'string_list', libxl_key_value_list: 'key_value_list', libxl_hwcap: 'hwcap', libxl_ms_vm_genid: 'ms_vm_genid',
  libxl_cpuid_policy_list: 'cpuid_policy_list',
};

function kindOf(owner, ctype) {
  if (enums.has(ctype)) return `{ t: 'enum', name: '${ctype.replace(/^libxl_/, '')}' }`;
  if (structs.has(ctype)) return `{ t: 'struct', name: '${ctype.replace(/^libxl_/, '')}' }`;
  if (ctype in builtinKinds) return `{ t: '${builtinKinds[ctype]}' }`;
  throw new Error(`${headerPath}: ${owner}: no JSON mapping for C type ${ctype}`);
}

/** The schema entries for a list of C fields: the same rules as members(), as data. */
function schema(owner, fields) {
  const out = [];
  for (let k = 0; k < fields.length; k++) {
    const f = fields[k];
    const next = fields[k + 1];
    if (f.kind === 'plain' && (f.isConst || privateTypes.has(f.ctype))) continue;
    if (f.kind === 'plain' && f.ctype === 'int' && next?.kind === 'plain' && next.pointer) continue;
    if (f.kind === 'plain' && enums.has(f.ctype) && next?.kind === 'union') continue;
    if (f.kind === 'union') {
      const key = fields[k - 1];
      const seen = new Set();
      for (const m of f.members) {
        seen.add(m.name);
        out.push(`'${key.name}.${m.name}': { t: 'object', union: '${key.name}', fields: { ${schema(`${owner}.${m.name}`, m.members).join(', ')} } }`);
      }
      for (const v of enums.get(key.ctype).values) {
        if (!seen.has(v.json)) out.push(`'${key.name}.${v.json}': { t: 'object', union: '${key.name}', fields: {} }`);
      }
    } else if (f.kind === 'struct') {
      out.push(`${f.name}: { t: 'object', fields: { ${schema(`${owner}.${f.name}`, f.members).join(', ')} } }`);
    } else {
      const kind = kindOf(owner, f.ctype);
      out.push(`${f.name}: ${f.pointer ? `{ t: 'array', of: ${kind} }` : kind}`);
    }
  }
  return out;
}

const hash = createHash('sha256').update(headerText).digest('hex');
const out = [];
out.push(`// Generated by scripts/gen-libxl-types.mjs from ${headerPath} — DO NOT EDIT.`);
out.push(`// Regenerate with \`npm run gen:types\`. Source sha256: ${hash}`);
out.push('/**');
out.push(" * libxl's configuration types as its JSON functions (`libxl_<type>_to_json` /");
out.push(' * `libxl_<type>_from_json`) write and read them. Every field is optional: libxl omits');
out.push(' * fields equal to their default when it writes, and keeps the default for absent keys');
out.push(' * when it reads. See docs/domain-config.md.');
out.push(' *');
out.push(' * @module');
out.push(' */');
out.push('');
out.push('/** A libxl_defbool: unset (`<default>`, libxl decides) or set. */');
out.push("export type LibxlDefbool = 'True' | 'False' | '<default>';");
out.push('/** A libxl_uuid: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex. */');
out.push('export type LibxlUuid = string;');
out.push('/** A libxl_mac: `xx:xx:xx:xx:xx:xx`, lower-case hex. */');
out.push('export type LibxlMac = string;');
out.push('/** A libxl_bitmap: the numbers of the set bits, ascending. */');
out.push('export type LibxlBitmap = number[];');
out.push('/** A libxl_key_value_list: an object of strings (or null). */');
out.push('export type LibxlKeyValueList = Record<string, string | null>;');
out.push("/** A libxl_cpuid_policy_list: libxl_cpuid.c's own format (not used by xenode). */");
out.push('export type LibxlCpuidPolicyList = unknown;');
out.push('');
out.push('/** Every libxl enum: JSON name → C value. */');
out.push('export const LIBXL_ENUMS = {');
for (const e of enums.values()) {
  out.push(`  ${e.name.replace(/^libxl_/, '')}: { ${e.values.map((v) => `${/^[a-z_][a-z0-9_]*$/.test(v.json) ? v.json : `'${v.json}'`}: ${v.value}`).join(', ')} },`);
}
out.push('} as const;');
out.push('');
out.push('/** How one JSON field is written (see the rules in scripts/gen-libxl-types.mjs). */');
out.push('export type LibxlFieldKind =');
out.push("  | { t: 'int' | 'bool' | 'string' | 'defbool' | 'uuid' | 'mac' | 'bitmap' | 'string_list' | 'key_value_list' | 'hwcap' | 'ms_vm_genid' | 'cpuid_policy_list' }");
out.push("  | { t: 'enum'; name: keyof typeof LIBXL_ENUMS }");
out.push("  | { t: 'struct'; name: string }");
out.push("  | { t: 'array'; of: LibxlFieldKind }");
out.push("  | { t: 'object'; fields: Record<string, LibxlFieldKind>; union?: string };");
out.push('');
out.push('/** Every libxl struct as data: its JSON fields, and whether libxl can read it back (`_from_json`). */');
out.push('export const LIBXL_STRUCTS: Record<string, { fromJson: boolean; fields: Record<string, LibxlFieldKind> }> = {');
for (const [name, fields] of structs) {
  const fromJson = headerText.includes(`int ${name}_from_json(`);
  out.push(`  ${name.replace(/^libxl_/, '')}: { fromJson: ${fromJson}, fields: { ${schema(name, fields).join(', ')} } },`);
}
out.push('};');
out.push('');
for (const e of enums.values()) {
  out.push(`/** ${e.name}: ${e.values.map((v) => `\`${v.json}\``).join(', ')}. */`);
  out.push(`export type ${pascal(e.name)} = ${e.values.map((v) => `'${v.json}'`).join(' | ')};`);
}
out.push('');
for (const [name, fields] of structs) {
  out.push(`/** ${name}, as libxl_${name.replace(/^libxl_/, '')}_to_json writes it. */`);
  const body = members(name, fields, '  ');
  out.push(body.length === 0 ? `export type ${pascal(name)} = Record<string, never>;` : `export interface ${pascal(name)} {\n${body.join('\n')}\n}`);
  out.push('');
}
const text = out.join('\n');

if (process.argv.includes('--check')) {
  const current = readFileSync(outPath, 'utf8');
  if (current !== text) {
    console.error(`${relative(process.cwd(), outPath)} is out of date with ${headerPath}: run npm run gen:types`);
    process.exit(1);
  }
} else if (process.argv.includes('--stdout')) {
  process.stdout.write(text);
} else {
  writeFileSync(outPath, text);
  console.log(`wrote ${relative(process.cwd(), outPath)}: ${enums.size} enums, ${structs.size} structs`);
}
