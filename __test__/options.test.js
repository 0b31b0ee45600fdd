// __test__/options.test.js: the typings of `new RelaySessionManager(config)` declare
// every JS option of the option schema, and only those, with the defaults it gives. The
// schema is read from docs/configuration.md, which a Rust test keeps equal to it
// (crates/switchyard-core/tests/reference_page.rs); the typings are read with
// TypeScript's own parser.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const root = path.resolve(__dirname, '..');

/** The schema's JS options: path → the addon's default, as the reference page writes it. */
function schemaOptions() {
  const page = fs.readFileSync(path.join(root, 'docs', 'configuration.md'), 'utf8');
  const options = new Map();
  for (const line of page.split('\n').filter((l) => l.startsWith('| `'))) {
    const [js, , , , defaultCell] = line.slice(2, -2).split(' | ');
    options.set(js.replaceAll('`', ''), defaultCell.split(' [')[0]);
  }
  return options;
}

/**
 * Every property under the config interface, by path (`rateLimit.perUser.burst`), with
 * its doc comment; `leaf` when its type holds no further properties of its own.
 */
function typedOptions() {
  const file = path.join(root, 'crates', 'switchyard-node', 'types.d.ts');
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const interfaces = new Map(source.statements.filter(ts.isInterfaceDeclaration).map((i) => [i.name.text, i]));
  const options = new Map();
  /** The members a type brings: an inline object's, a named interface's with what it extends, a union's members'. */
  const membersOf = (type) => {
    if (!type) return [];
    if (ts.isTypeLiteralNode(type)) return [...type.members];
    if (ts.isUnionTypeNode(type)) return type.types.flatMap(membersOf);
    if (ts.isTypeReferenceNode(type) && interfaces.has(type.typeName.text)) {
      const declaration = interfaces.get(type.typeName.text);
      const inherited = (declaration.heritageClauses ?? []).flatMap((clause) => clause.types.flatMap((t) => membersOf(ts.factory.createTypeReferenceNode(t.expression.text))));
      return [...inherited, ...declaration.members];
    }
    return [];
  };
  const visit = (members, prefix) => {
    for (const member of members.filter(ts.isPropertySignature)) {
      const name = `${prefix}${member.name.text}`;
      const doc = ts.getJSDocCommentsAndTags(member).map((d) => ts.getTextOfJSDocComment(d.comment) ?? '').join(' ');
      const children = membersOf(member.type);
      const leaf = children.length === 0 || ts.isUnionTypeNode(member.type);
      options.set(name, { doc, leaf });
      visit(children, `${name}.`);
    }
  };
  visit([...interfaces.get('RelaySessionManagerConfig').members], '');
  return options;
}

/** A default as a doc comment says it ("Default 30 minutes.", "Default `'close'`."), as the reference page writes it. */
function documentedDefault(doc) {
  if (/\bOff by default\b/.test(doc)) return 'off';
  const said = /\bDefault ([^.,;]+)/.exec(doc)?.[1].trim();
  if (said === undefined) return undefined;
  const units = { minutes: 60_000, MiB: 1024 * 1024 };
  const number = /^(\d[\d ]*)(?: (minutes|MiB))?$/.exec(said);
  if (number) return String(Number(number[1].replaceAll(' ', '')) * (units[number[2]] ?? 1));
  return said.replace(/^`['"]?|['"]?`$/g, '`');
}

describe('the option schema and getStats().config', () => {
  it('reports every option in force, defaults filled in (redis as getStats().cluster)', () => {
    const { RelaySessionManager } = require('..');
    const reported = new RelaySessionManager().getStats().config;
    const topLevel = new Set([...schemaOptions().keys()].map((name) => name.split('.')[0]));
    topLevel.delete('redis');
    assert.deepEqual([...topLevel].filter((name) => !(name in reported)), [], 'options of the schema that getStats().config leaves out');
  });
});

describe('the option schema and the typings', () => {
  const schema = schemaOptions();
  const typed = typedOptions();

  it('declare the same JS options', () => {
    const missing = [...schema.keys()].filter((name) => !typed.has(name));
    assert.deepEqual(missing, [], 'options of the schema that types.d.ts does not declare');
    const unknown = [...typed].filter(([name, { leaf }]) => leaf && !schema.has(name)).map(([name]) => name);
    assert.deepEqual(unknown, [], 'options types.d.ts declares that the schema does not have');
  });

  it('agree on the defaults the typings state', () => {
    let checked = 0;
    for (const [name, addonDefault] of schema) {
      const said = documentedDefault(typed.get(name)?.doc ?? '');
      if (said === undefined) continue;
      const expected = said === 'off' ? ['none', 'false'] : [said];
      assert.ok(expected.includes(addonDefault), `${name}: types.d.ts says the default is ${said}, the schema ${addonDefault}`);
      checked += 1;
    }
    assert.ok(checked >= 20, `only ${checked} defaults were stated and checked`);
  });
});
