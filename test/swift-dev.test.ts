// Tests of scripts/swift-dev and its fixture test/fixtures/swift.ts against a
// real one-node Swift.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";

import { type DevSwift, startSwift, swiftDevScript } from "./fixtures/swift.js";

interface Session {
  token: string;
  storageUrl: string;
}

async function auth(sw: DevSwift): Promise<Session> {
  const r = await fetch(sw.authUrl, { headers: { "X-Auth-User": sw.user, "X-Auth-Key": sw.key } });
  await r.arrayBuffer();
  assert.equal(r.status, 200, `auth at ${sw.authUrl}`);
  const token = r.headers.get("x-auth-token");
  const storageUrl = r.headers.get("x-storage-url");
  assert.ok(token, "no X-Auth-Token");
  assert.ok(storageUrl, "no X-Storage-Url");
  return { token, storageUrl };
}

async function req(
  s: Session,
  method: string,
  rel: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  const r = await fetch(`${s.storageUrl}${rel}`, {
    method,
    headers: { "X-Auth-Token": s.token },
    ...(body === undefined ? {} : { body }),
  });
  return { status: r.status, text: await r.text() };
}

/** PIDs recorded by swift-dev in DIR/run/*.pid. */
function recordedPids(dir: string): number[] {
  const run = path.join(dir, "run");
  return readdirSync(run)
    .filter((f) => f.endsWith(".pid"))
    .map((f) => Number.parseInt(readFileSync(path.join(run, f), "utf8").trim(), 10));
}

interface Proc {
  pid: number;
  state: string;
  session: number;
  cmdline: string;
}

function processes(): Proc[] {
  const out: Proc[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "latin1");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmdline = readFileSync(`/proc/${e}/cmdline`, "latin1").replaceAll("\0", " ");
      out.push({ pid: Number(e), state: rest[0]!, session: Number(rest[3]), cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Live (non-zombie) processes that are one of pids or in their sessions. */
function liveMembers(pids: number[]): Proc[] {
  const set = new Set(pids);
  return processes().filter((p) => p.state !== "Z" && (set.has(p.pid) || set.has(p.session)));
}

/** Live processes whose command line names one of dirs. */
function liveNaming(dirs: string[]): Proc[] {
  return processes().filter((p) => p.state !== "Z" && dirs.some((d) => p.cmdline.includes(d)));
}

describe("swift-dev", { timeout: 180_000 }, () => {
  let a: DevSwift | undefined;
  let b: DevSwift | undefined;
  const allPids: number[] = [];
  const allDirs: string[] = [];

  after(async () => {
    await Promise.allSettled([a?.stop(), b?.stop()]);
    const left = [...liveMembers(allPids), ...liveNaming(allDirs)];
    assert.deepEqual(left, [], "processes left behind");
  });

  test("two instances run at once, isolated from each other", async () => {
    const t0 = Date.now();
    [a, b] = await Promise.all([startSwift(), startSwift()]);
    console.log(`# two instances started in ${Date.now() - t0} ms: ${a.dir}, ${b.dir}`);
    allDirs.push(a.dir, b.dir);
    allPids.push(...recordedPids(a.dir), ...recordedPids(b.dir));
    assert.notEqual(a.port, b.port);
    assert.notEqual(a.dir, b.dir);
    for (const sw of [a, b]) {
      assert.equal(sw.authUrl, `http://127.0.0.1:${sw.port}/auth/v1.0`);
      assert.equal(sw.user, "test:tester");
      assert.equal(sw.key, "testing");
      assert.equal(recordedPids(sw.dir).length, 5, "memcached + 4 servers");
    }

    const sa = await auth(a);
    const sb = await auth(b);
    assert.ok(sa.storageUrl.startsWith(`http://127.0.0.1:${a.port}/v1/`), sa.storageUrl);
    assert.ok(sb.storageUrl.startsWith(`http://127.0.0.1:${b.port}/v1/`), sb.storageUrl);

    assert.equal((await req(sa, "PUT", "/only-in-a")).status, 201);
    assert.equal((await req(sa, "PUT", "/only-in-a/obj", "hello from a")).status, 201);
    assert.deepEqual(await req(sa, "GET", "/only-in-a/obj"), { status: 200, text: "hello from a" });
    const listA = await req(sa, "GET", "/only-in-a?format=json");
    assert.equal(listA.status, 200);
    assert.deepEqual(
      (JSON.parse(listA.text) as { name: string }[]).map((o) => o.name),
      ["obj"],
    );

    assert.equal((await req(sb, "GET", "/only-in-a/obj")).status, 404);
    assert.equal((await req(sb, "HEAD", "/only-in-a")).status, 404);
    const accB = await req(sb, "GET", "?format=json");
    assert.ok(accB.status === 200 || accB.status === 204, `account GET ${accB.status}`);
    assert.ok(!accB.text.includes("only-in-a"), accB.text);

    // same names in b hold b's data
    assert.equal((await req(sb, "PUT", "/only-in-a")).status, 201);
    assert.equal((await req(sb, "PUT", "/only-in-a/obj", "b's")).status, 201);
    assert.equal((await req(sb, "GET", "/only-in-a/obj")).text, "b's");
    assert.equal((await req(sa, "GET", "/only-in-a/obj")).text, "hello from a");
  });

  test("start on a running instance is idempotent on its port, refused on another", () => {
    assert.ok(b, "instance b did not start");
    const same = spawnSync(swiftDevScript(), ["start", b.dir, String(b.port)], { encoding: "utf8" });
    assert.equal(same.status, 0, same.stderr);
    assert.equal(
      same.stdout,
      `export ST_AUTH=${b.authUrl}\nexport ST_USER=test:tester\nexport ST_KEY=testing\n`,
    );
    const other = spawnSync(swiftDevScript(), ["start", b.dir, String(b.port === 65535 ? 1 : b.port + 1)], {
      encoding: "utf8",
    });
    assert.equal(other.status, 1, other.stderr);
    assert.equal(other.stdout, "");
    assert.match(other.stderr, /already running/);
  });

  test("stopping one instance ends its processes and leaves the other working", async () => {
    assert.ok(a && b, "instances did not start");
    const pids = recordedPids(a.dir);
    const before = liveMembers(pids);
    assert.ok(before.length >= 5, `expected servers and workers, got ${JSON.stringify(before)}`);

    await a.stop();
    assert.deepEqual(liveMembers(pids), [], "processes of the stopped instance");
    assert.deepEqual(liveNaming([a.dir]), []);
    assert.equal(existsSync(a.dir), false, "the fixture removes the directory");
    await assert.rejects(fetch(a.authUrl), "the stopped proxy still answers");
    await a.stop(); // idempotent

    // stop on a stopped or missing DIR exits 0
    const again = spawnSync(swiftDevScript(), ["stop", a.dir], { encoding: "utf8" });
    assert.equal(again.status, 0, again.stderr);

    assert.ok(liveMembers(recordedPids(b.dir)).length >= 5, "b's processes are gone");
    const sb = await auth(b);
    assert.equal((await req(sb, "PUT", "/after-stop")).status, 201);
    assert.equal((await req(sb, "PUT", "/after-stop/o", "still here")).status, 201);
    assert.deepEqual(await req(sb, "GET", "/after-stop/o"), { status: 200, text: "still here" });
  });

  test("bad usage exits 2 with a one-line usage message", () => {
    const cases = [
      [],
      ["start"],
      ["start", "/tmp/x"],
      ["start", "/tmp/x", "notaport"],
      ["start", "/tmp/x", "70000"],
      ["start", "/tmp/x", "8080", "extra"],
      ["stop"],
      ["stop", "/tmp/x", "extra"],
      ["restart", "/tmp/x"],
    ];
    for (const args of cases) {
      const r = spawnSync(swiftDevScript(), args, { encoding: "utf8" });
      assert.equal(r.status, 2, `swift-dev ${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "", `stdout of swift-dev ${args.join(" ")}`);
      assert.match(r.stderr, /^usage: [^\n]*\n$/, `stderr of swift-dev ${args.join(" ")}`);
    }
  });
});
