// tgtd's management protocol, spoken as tgtadm speaks it (tgt's usr/tgtadm.c
// and usr/mgmt.c), so that making a target costs a few socket round trips
// instead of one tgtadm process per step (8 steps per target; a process is
// about 5 ms of CPU here, which made serve with hundreds of volumes slow).
//
// One request per connection to the AF_UNIX socket /var/run/tgtd/socket.N
// ($TGT_IPC_SOCKET.N if set, as tgtadm reads it): a struct tgtadm_req in host
// byte order, whose len counts itself and the parameters after it; the
// parameters are "key=value,key=value" ending in a NUL. tgtd checks that the
// peer has its uid and gid, runs the request in its main loop, answers a
// struct tgtadm_rsp {err, len} and, when len is more than the header, the
// text of a show, and closes the connection.
//
// The layout below is checked against tgt's own tgtadm.h by test/tgt-ipc.test.ts.
import net from 'node:net';
import os from 'node:os';

/** enum tgtadm_mode */
export const TgtMode = { system: 0, target: 1, device: 2, portal: 3, lld: 4, session: 5, connection: 6, account: 7 } as const;
/** enum tgtadm_op */
export const TgtOp = { new: 0, delete: 1, show: 2, bind: 3, unbind: 4, update: 5, stats: 6, start: 7, stop: 8 } as const;

export type TgtModeName = keyof typeof TgtMode;
export type TgtOpName = keyof typeof TgtOp;

/** Byte offsets in struct tgtadm_req (x86-64 and every ABI tgt builds on: natural alignment). */
export const TGTADM_REQ = {
  mode: 0,
  op: 4,
  lld: 8,
  lldLength: 64,
  len: 72,
  tid: 76,
  sid: 80,
  lun: 88,
  cid: 96,
  hostNo: 100,
  deviceType: 104,
  acDir: 108,
  pack: 112,
  force: 116,
  size: 120,
} as const;
/** struct tgtadm_rsp: err at 0, len at 4. */
export const TGTADM_RSP_SIZE = 8;
/** tgtd's MAX_MGT_BUFSIZE: a longer parameter string is refused. */
export const TGTADM_MAX_PARAMS = 8 * 1024;

/** GLOBAL_TID, and tgtadm's "no tid given". */
const NO_TID = -1;
/** tgtadm's "no LUN given". */
const NO_LUN = 0xffff_ffff_ffff_ffffn;

/** The values of enum tgtadm_errno that callers tell apart. */
export const TgtErrno = { NO_TARGET: 4, TARGET_EXIST: 9 } as const;

/** tgtadm_strerror's table, by enum tgtadm_errno. */
export const TGTADM_ERRORS: readonly string[] = [
  'success',
  'unknown error',
  'out of memory',
  "can't find the driver",
  "can't find the target",
  "can't find the logical unit",
  "can't find the session",
  "can't find the connection",
  "can't find the binding",
  'this target already exists',
  'this logical unit number already exists',
  'this binding already exists',
  'this access control rule already exists',
  'this access control rule does not exist',
  'this account already exists',
  "can't find the account",
  'too many accounts',
  'invalid request',
  'this target already has an outgoing account',
  'this target is still active',
  'this logical unit is still active',
  'this driver is busy',
  "this operation isn't supported",
  'unknown parameter',
  'this device has Prevent Removal set',
];

export interface TgtRequest {
  mode: TgtModeName;
  op: TgtOpName;
  /** Low-level driver ("iscsi"); tgtd takes its first driver when absent. */
  lld?: string;
  tid?: number;
  lun?: number;
  force?: boolean;
  /** Parameters in the order tgtadm writes them; joined as key=value with commas. */
  params?: ReadonlyArray<readonly [string, string | number]>;
}

/** tgtd refused a request (err is its tgtadm_errno), or could not be reached. */
export class TgtIpcError extends Error {
  constructor(
    message: string,
    readonly tgtErrno: number | null,
  ) {
    super(message);
    this.name = 'TgtIpcError';
  }
}

export function tgtSocketPath(control: number): string {
  return `${process.env.TGT_IPC_SOCKET ?? '/var/run/tgtd/socket'}.${control}`;
}

/** What tgtadm would have been asked, for error messages: "target new tid 3". */
export function describeRequest(req: TgtRequest): string {
  const parts: string[] = [req.mode === 'device' ? 'logicalunit' : req.mode, req.op];
  if (req.tid !== undefined) parts.push(`tid ${req.tid}`);
  if (req.lun !== undefined) parts.push(`lun ${req.lun}`);
  const named = req.params?.find(([k]) => k !== 'password' && k !== 'path' && k !== 'bsopts');
  if (named) parts.push(`${named[0]}=${named[1]}`);
  return parts.join(' ');
}

/** The bytes of a request: header and NUL-terminated parameters. */
export function encodeRequest(req: TgtRequest): Buffer {
  const text = (req.params ?? []).map(([k, v]) => `${k}=${v}`).join(',');
  // a NUL would end the parameters early (commas are the caller's concern, as with tgtadm)
  if (text.includes('\0')) throw new TgtIpcError('tgtd parameters must not contain a NUL byte', null);
  const params = text === '' ? Buffer.alloc(0) : Buffer.from(`${text}\0`, 'utf8');
  if (params.length > TGTADM_MAX_PARAMS) throw new TgtIpcError(`tgtd parameters longer than ${TGTADM_MAX_PARAMS} bytes`, null);
  const lld = Buffer.from(req.lld ?? '', 'utf8');
  if (lld.length >= TGTADM_REQ.lldLength) throw new TgtIpcError(`tgtd driver name too long: ${req.lld}`, null);
  const buf = Buffer.alloc(TGTADM_REQ.size + params.length);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const le = os.endianness() === 'LE';
  view.setUint32(TGTADM_REQ.mode, TgtMode[req.mode], le);
  view.setUint32(TGTADM_REQ.op, TgtOp[req.op], le);
  lld.copy(buf, TGTADM_REQ.lld);
  view.setUint32(TGTADM_REQ.len, buf.length, le);
  view.setInt32(TGTADM_REQ.tid, req.tid ?? NO_TID, le);
  view.setBigUint64(TGTADM_REQ.sid, 0n, le);
  view.setBigUint64(TGTADM_REQ.lun, req.lun === undefined ? NO_LUN : BigInt(req.lun), le);
  // cid, host_no, device_type (TYPE_DISK = 0), ac_dir (incoming = 0), pack: 0
  view.setUint32(TGTADM_REQ.force, req.force ? 1 : 0, le);
  params.copy(buf, TGTADM_REQ.size);
  return buf;
}

/**
 * Sends one request to the tgtd on control port `control`; resolves with the
 * text it answers (empty for all but show) or rejects with its error.
 */
export function tgtRequest(control: number, req: TgtRequest, timeoutMs = 30_000): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = encodeRequest(req);
  } catch (err) {
    return Promise.reject(err as Error);
  }
  const what = describeRequest(req);
  return new Promise((resolve, reject) => {
    const socket = net.connect(tgtSocketPath(control));
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (err: Error | null, text = ''): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(text);
    };
    const timer = setTimeout(() => finish(new TgtIpcError(`tgtd ${what}: no answer from control port ${control} in ${timeoutMs} ms`, null)), timeoutMs);
    socket.once('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const reason = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `no tgtd on control port ${control}` : err.message;
      finish(new TgtIpcError(`tgtd ${what}: ${reason}`, null));
    });
    socket.once('close', () => {
      const answer = Buffer.concat(chunks);
      if (answer.length < TGTADM_RSP_SIZE) return finish(new TgtIpcError(`tgtd ${what}: tgtd closed the connection without an answer`, null));
      const le = os.endianness() === 'LE';
      const view = new DataView(answer.buffer, answer.byteOffset, answer.length);
      const err = view.getUint32(0, le);
      const len = view.getUint32(4, le);
      if (err !== 0) return finish(new TgtIpcError(`tgtd ${what}: ${TGTADM_ERRORS[err] ?? `error ${err}`}`, err));
      if (answer.length < len) return finish(new TgtIpcError(`tgtd ${what}: a partial answer (${answer.length} of ${len} bytes)`, null));
      const text = answer.subarray(TGTADM_RSP_SIZE, len).toString('utf8');
      const nul = text.indexOf('\0');
      finish(null, nul < 0 ? text : text.slice(0, nul));
    });
  });
}
