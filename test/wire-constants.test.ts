// One source for the wire format: bs_swift/swift_protocol.h holds the
// protocol's constants and the block map's layout (doc/protocol.md); the
// daemon keeps its own copies in src/daemon/protocol.ts and
// src/overlay/direct-map.ts. This test parses the header's `#define NAME
// VALUE` lines and checks that every one equals its TypeScript counterpart:
// a define the daemon has a value for but the header lacks, a value that
// differs, and a define this test does not know all fail it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import * as P from '../src/daemon/protocol.js';
import { MAP_HEADER_LENGTH, MAP_MAGIC, MAP_VERSION, MapField } from '../src/overlay/direct-map.js';
import { findRepoRoot } from './fixtures/swift.js';

/** Evaluates the integer expressions of a define: literals (hex, U/L suffixes), earlier defines, ( ) << >> | & + - *. */
function evaluate(expr: string, defines: ReadonlyMap<string, number>): number {
  const tokens = expr.match(/0x[0-9a-f]+[ul]*|\d+[ul]*|\w+|<<|>>|\S/gi) ?? [];
  let at = 0;
  const peek = (): string | undefined => tokens[at];
  const binary = (next: () => bigint, ops: Record<string, (a: bigint, b: bigint) => bigint>) => (): bigint => {
    let v = next();
    for (let op = peek(); op !== undefined && op in ops; op = peek()) {
      at++;
      v = ops[op]!(v, next());
    }
    return v;
  };
  const primary = (): bigint => {
    const t = tokens[at++];
    if (t === '(') {
      const v = or();
      if (tokens[at++] !== ')') throw new Error(`unbalanced parentheses in "${expr}"`);
      return v;
    }
    const literal = t?.match(/^(0x[0-9a-f]+|0|[1-9]\d*)[ul]*$/i);
    if (literal) return BigInt(literal[1]!);
    if (t !== undefined && defines.has(t)) return BigInt(defines.get(t)!);
    throw new Error(`cannot evaluate "${expr}" (at ${t ?? 'its end'})`);
  };
  const mul = binary(primary, { '*': (a, b) => a * b });
  const add = binary(mul, { '+': (a, b) => a + b, '-': (a, b) => a - b });
  const shift = binary(add, { '<<': (a, b) => a << b, '>>': (a, b) => a >> b });
  const and = binary(shift, { '&': (a, b) => a & b });
  const or = binary(and, { '|': (a, b) => a | b });
  const v = or();
  if (at !== tokens.length) throw new Error(`cannot evaluate "${expr}" (at ${tokens[at]})`);
  return Number(v);
}

/** The header's `#define NAME VALUE` lines, evaluated; a define without a value (the include guard) is left out. */
function parseDefines(text: string): Map<string, number> {
  const defines = new Map<string, number>();
  const code = text.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/.*$/gm, '');
  for (const line of code.split('\n')) {
    const m = line.match(/^\s*#\s*define\s+(\w+)(.*)$/);
    if (!m) continue;
    const value = m[2]!.trim();
    if (value === '') continue;
    if (defines.has(m[1]!)) throw new Error(`${m[1]} defined twice`);
    defines.set(m[1]!, evaluate(value, defines));
  }
  return defines;
}

/** Prefixes of the header's groups of defines, and the TypeScript objects whose members they are (SWP_OP_READ = Op.READ). */
const GROUPS: ReadonlyArray<readonly [string, Readonly<Record<string, number>>]> = [
  ['SWP_OP_', P.Op],
  ['SWP_CAP_', P.Feature],
  ['SWP_F_', P.Flag],
  ['SWP_RF_', P.ReplyFlag],
  ['SWP_STATUS_', P.Status],
  ['SWM_OFF_', MapField],
];

/** Every define the header must have, with the daemon's value. */
function daemonValues(): Map<string, number> {
  const values = new Map<string, number>(
    Object.entries({
      SWP_MAGIC: P.MAGIC,
      SWP_VERSION: P.VERSION,
      SWP_HDR_LEN: P.HEADER_LENGTH,
      SWP_MAX_PAYLOAD: P.MAX_PAYLOAD,
      SWP_MIN_PAYLOAD: P.MIN_MAX_PAYLOAD,
      SWP_MAX_NAME: P.MAX_NAME_LENGTH,
      SWP_MAX_MESSAGE: P.MAX_MESSAGE_LENGTH,
      SWP_HELLO_REPLY_LEN: P.HELLO_REPLY_LENGTH,
      SWP_ALIGN: P.SECTOR_SIZE,
      SWP_MAX_BLOCK: P.MAX_BLOCK_SIZE,
      SWP_REPLY: P.REPLY_BIT,
      SWP_DIRECT_VERSION: P.DIRECT_MAP_VERSION,
      SWP_MAX_PATH: P.MAX_DIRECT_PATH,
      SWM_MAGIC: MAP_MAGIC,
      SWM_VERSION: MAP_VERSION,
      SWM_HDR_LEN: MAP_HEADER_LENGTH,
    }),
  );
  for (const [prefix, members] of GROUPS) {
    for (const [name, value] of Object.entries(members)) values.set(prefix + name, value);
  }
  return values;
}

/** What differs between the header's defines and the daemon's values, one line each. */
function differences(defines: ReadonlyMap<string, number>, expected: ReadonlyMap<string, number>): string[] {
  const out: string[] = [];
  const hex = (n: number): string => `0x${n.toString(16)}`;
  for (const [name, value] of expected) {
    const found = defines.get(name);
    if (found === undefined) out.push(`${name} missing from the header (the daemon's is ${hex(value)})`);
    else if (found !== value) out.push(`${name} is ${hex(found)} in the header, ${hex(value)} in the daemon`);
  }
  for (const name of defines.keys()) {
    if (!expected.has(name)) out.push(`${name} has no TypeScript counterpart in this test`);
  }
  return out;
}

test('every constant of bs_swift/swift_protocol.h equals the daemon\'s', () => {
  const defines = parseDefines(readFileSync(path.join(findRepoRoot(), 'bs_swift', 'swift_protocol.h'), 'utf8'));
  assert.deepEqual(differences(defines, daemonValues()), []);
  // the checks above saw every group (a renamed prefix would otherwise pass unseen)
  for (const [prefix] of GROUPS) assert.ok([...defines.keys()].some((n) => n.startsWith(prefix)), `no ${prefix}* define`);
});

test('a missing, a changed or an unknown define is reported', () => {
  const header = '#define SWP_OP_DIRECT\t\t0x0A\n#define SWM_OFF_DIRTY\t\t64\t/* u64 */\n';
  const daemon = new Map([
    ['SWP_OP_DIRECT', 0x0a],
    ['SWM_OFF_DIRTY', 64],
  ]);
  assert.deepEqual(differences(parseDefines(header), daemon), []);
  assert.deepEqual(differences(parseDefines(header.replace(/^#define SWP_OP_DIRECT.*$/m, '')), daemon), [
    "SWP_OP_DIRECT missing from the header (the daemon's is 0xa)",
  ]);
  assert.deepEqual(differences(parseDefines(header.replace('64', '68')), daemon), ['SWM_OFF_DIRTY is 0x44 in the header, 0x40 in the daemon']);
  assert.deepEqual(differences(parseDefines(`${header}#define SWP_OP_NEW 0x0B\n`), daemon), ['SWP_OP_NEW has no TypeScript counterpart in this test']);
  assert.deepEqual(differences(parseDefines(header), new Map([...daemon, ['SWP_OP_DIRECT', 0x0b]])), [
    'SWP_OP_DIRECT is 0xa in the header, 0xb in the daemon',
  ]);
});

test('the header parser evaluates the forms the header uses', () => {
  const defines = parseDefines(
    [
      '/* #define COMMENTED 1 */',
      '#ifndef GUARD_H',
      '#define GUARD_H',
      '#define A\t\t0x4D565753U\t/* "SWVM" */',
      '#define B (32U << 20)',
      '#define C  (1U << 16) // feature',
      '#define D 0',
      '#define E ((A & 0xff) + B * 2 - 1) | C',
    ].join('\n'),
  );
  assert.deepEqual(Object.fromEntries(defines), {
    A: 0x4d565753,
    B: 32 * 1024 * 1024,
    C: 65536,
    D: 0,
    E: (0x53 + 64 * 1024 * 1024 - 1) | 65536,
  });
  assert.throws(() => parseDefines('#define X sizeof(int)'), /cannot evaluate/);
  assert.throws(() => parseDefines('#define X 010'), /cannot evaluate/);
  assert.throws(() => parseDefines('#define X (1 << 2'), /unbalanced/);
  assert.throws(() => parseDefines('#define X 1\n#define X 2'), /twice/);
});
