// scripts/typings.js: run after `napi build`. napi-rs cannot declare a generic class, so
// this gives the generated binding.d.ts the original's `RelaySessionManager<MetaData = any>`
// and a `SessionData<MetaData>` to match; the Rust methods already name `MetaData` in
// their TypeScript signatures.
const fs = require('node:fs');
const { at } = require('./run');

const file = at('binding.d.ts');
const generics = [
  ['export declare class RelaySessionManager {', 'export declare class RelaySessionManager<MetaData = any> {'],
  ['export interface SessionData {', 'export interface SessionData<MetaData = any> {'],
];
let typings = fs.readFileSync(file, 'utf8');
for (const [plain, generic] of generics) {
  if (typings.includes(generic)) continue;
  if (!typings.includes(plain)) throw new Error(`binding.d.ts has no "${plain}" to make generic`);
  typings = typings.replace(plain, generic);
}
fs.writeFileSync(file, typings);
