// swiftvol serve under systemd: the unit verifies (systemd-analyze verify),
// and serve started as its ExecStart starts it (its EnvironmentFile, the
// options split as systemd splits $VAR, NOTIFY_SOCKET) tells systemd READY=1
// once ready and STOPPING=1 on SIGTERM, then exits 0. These machines do not
// run systemd as PID 1: a Python helper plays its notify socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { startSwift, freePort, type DevSwift } from './fixtures/swift.js';
import { tempDir, repoRoot, cliPath } from './fixtures/files.js';
import { stopLeftTgtd, swiftvolEnv, swiftvolSync } from './fixtures/serve.js';

const root = repoRoot;
const unit = path.join(root, 'systemd', 'swiftvol.service');
let swift: DevSwift;
let tmp: { dir: string; remove: () => void };

before(async () => {
  swift = await startSwift();
  tmp = tempDir();
});

after(async () => {
  await stopLeftTgtd(path.join(tmp.dir, 'state'));
  await swift?.stop();
  tmp?.remove();
});

/** The unit's [Service] settings (the last of each key). */
function serviceSettings(): Map<string, string> {
  const out = new Map<string, string>();
  let section = '';
  for (const line of fs.readFileSync(unit, 'utf8').split('\n')) {
    const m = /^\[(\w+)\]$/.exec(line);
    if (m) section = m[1]!;
    const kv = /^(\w+)=(.*)$/.exec(line);
    if (kv && section === 'Service') out.set(kv[1]!, kv[2]!);
  }
  return out;
}

test('the unit passes systemd-analyze verify, and a broken one does not', () => {
  const ok = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(ok.stderr.trim(), '', 'no warnings');
  const broken = path.join(tmp.dir, 'swiftvol.service');
  fs.writeFileSync(broken, fs.readFileSync(unit, 'utf8').replace('ExecStart=/usr/local/bin/swiftvol', 'ExecStart=swiftvol-nowhere'));
  const bad = spawnSync('systemd-analyze', ['verify', broken], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0, 'a unit whose ExecStart is not an absolute path fails verify');
  const s = serviceSettings();
  assert.equal(s.get('Type'), 'notify');
  assert.equal(s.get('KillSignal'), 'SIGTERM');
  assert.equal(s.get('Restart'), 'on-failure');
  assert.match(fs.readFileSync(unit, 'utf8'), /^After=network-online\.target$/m);
});

test('serve started as ExecStart starts it tells systemd READY=1, then STOPPING=1 on SIGTERM, and exits 0', async () => {
  const stateDir = path.join(tmp.dir, 'state');
  const env0 = swiftvolEnv(swift, stateDir);
  const image = path.join(tmp.dir, 'one.raw');
  fs.writeFileSync(image, Buffer.alloc(4 * 1024 * 1024, 7));
  assert.equal(swiftvolSync(['import', image, 'unitvol'], env0).status, 0);
  assert.equal(swiftvolSync(['target', 'add', 'unitvol'], env0).status, 0);

  // the EnvironmentFile, as an operator would fill in systemd/serve.env
  const envFile = path.join(tmp.dir, 'serve.env');
  const port = await freePort();
  fs.writeFileSync(
    envFile,
    fs
      .readFileSync(path.join(root, 'systemd', 'serve.env'), 'utf8')
      .replace(/^#ST_AUTH=.*$/m, `ST_AUTH=${swift.authUrl}`)
      .replace(/^#ST_USER=.*$/m, `ST_USER=${swift.user}`)
      .replace(/^#ST_KEY=.*$/m, `ST_KEY=${swift.key}`)
      .replace(/^SWIFTVOL_STATE_DIR=.*$/m, `SWIFTVOL_STATE_DIR=${stateDir}`)
      .replace(/^SWIFTVOL_SERVE_OPTIONS=.*$/m, `SWIFTVOL_SERVE_OPTIONS=--portal 127.0.0.1:${port} --log-format json --metrics 127.0.0.1:0`),
  );
  const fileEnv: Record<string, string> = {};
  for (const line of fs.readFileSync(envFile, 'utf8').split('\n')) {
    const kv = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (kv) fileEnv[kv[1]!] = kv[2]!;
  }
  // ExecStart with $VAR split on whitespace, as systemd does
  const exec = serviceSettings().get('ExecStart')!.replace(/\$(\w+)/g, (_, k: string) => fileEnv[k] ?? '').trim().split(/\s+/);
  assert.equal(exec[0], '/usr/local/bin/swiftvol');
  assert.match(fs.realpathSync(exec[0]!), /dist\/src\/cli\/main\.js$/, 'scripts/setup links /usr/local/bin/swiftvol to the CLI');

  // systemd's notify socket: a datagram socket whose messages a helper prints
  const notifySocket = path.join(tmp.dir, 'notify.sock');
  const listener = spawn('python3', ['-u', '-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
while True:
    print(s.recv(4096).decode().replace("\\n", " ").strip(), flush=True)
`, notifySocket], { stdio: ['ignore', 'pipe', 'inherit'] });
  let notified = '';
  listener.stdout!.on('data', (d: Buffer) => (notified += d.toString()));
  try {
    for (let i = 0; i < 100 && !notified.includes('LISTENING'); i++) await new Promise((r) => setTimeout(r, 50));
    // the CLI of the checkout under test stands for /usr/local/bin/swiftvol (which may link another)
    const child = spawn(process.execPath, [cliPath, ...exec.slice(1)], { env: { PATH: process.env.PATH ?? '', ...fileEnv, NOTIFY_SOCKET: notifySocket }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = once(child, 'exit');
    const deadline = Date.now() + 60_000;
    while (!notified.includes('READY=1') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    assert.match(notified, /READY=1/, `serve told systemd it is ready\n${out}`);
    // its log line went out before (a pipe may deliver it a little later than the datagram)
    for (let i = 0; i < 40 && !/"msg":"ready: /.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /"msg":"ready: 1 target\(s\)/, 'and it was ready then');
    assert.match(notified, /STATUS=ready: 1 target\(s\)/);
    assert.doesNotMatch(notified, /STOPPING=1/);
    child.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0, out);
    await new Promise((r) => setTimeout(r, 200));
    assert.match(notified, /STOPPING=1/, 'serve told systemd it is stopping');
    assert.match(out, /"msg":"stopped"/);
  } finally {
    listener.kill('SIGTERM');
  }
});
