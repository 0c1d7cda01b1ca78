"""swift-dev: a throw-away one-node OpenStack Swift for development and tests.

Usage:
  scripts/swift-dev start DIR PORT
  scripts/swift-dev stop DIR
  scripts/swift-dev help

start DIR PORT
  Starts memcached and the account, container, object and proxy servers of a
  one-node Swift on 127.0.0.1. The proxy (tempauth, user test:tester, key
  testing) listens on PORT; the other servers listen on free ports picked at
  start. Everything (configs, rings, devices, logs, pid files) lives under
  DIR (created if missing):
    DIR/etc/      proxy|account|container|object-server.conf and the rings
    DIR/devices/  the one storage device (d1); needs user xattrs
    DIR/log/      one log per process (NAME.log), appended to
    DIR/run/      NAME.pid (one PID a file), state.json, env (the exports)
  Returns once the store answers auth and a container/object PUT, GET and
  DELETE work, then prints exactly these lines on stdout, for `eval`:
    export ST_AUTH=http://127.0.0.1:PORT/auth/v1.0
    export ST_USER=test:tester
    export ST_KEY=testing
  Progress and diagnostics go to stderr. If the store is not ready within
  $SWIFT_DEV_TIMEOUT seconds (default 30) it prints the logs' tails, stops
  what it started and exits 1.
  If DIR's instance is already running on the same PORT, start is
  idempotent: it checks that the store answers and prints the exports
  again. If it runs on another PORT, start refuses (exit 1). Leftovers of a
  half-dead instance are stopped and the instance is started afresh (data
  in DIR/devices is kept).
  Each process is started in its own session (setsid); its PID is the
  session id and is recorded in DIR/run before start returns.

stop DIR
  Stops only the processes recorded in DIR/run (and their workers, i.e. the
  members of their sessions whose command line names DIR), never by name:
  SIGTERM, then SIGKILL after 5 s; waits until they are gone. Idempotent:
  exits 0 on a stopped instance or a missing DIR. DIR itself is left alone.

Environment:
  SWIFT_DEV_TIMEOUT  seconds to wait for the store (default 30)
  SWIFT_DEV_WORKERS  workers of the proxy and object servers (default 1)

Notes:
  - /etc/swift/swift.conf is always read by Swift: start creates it (with a
    random swift_hash_path_suffix) if it is missing, adds a [swift-hash]
    section if that is missing, and otherwise leaves it alone. Its
    [swift-constraints] (metadata limits etc.) apply to every instance.
  - Object metadata is stored in xattrs of files under DIR/devices. ext4
    holds about 4 KiB of xattrs a file, so objects whose user metadata is
    larger than about 3.5 KiB fail (503) when DIR is on ext4; put DIR on a
    tmpfs (e.g. /dev/shm, or TMPDIR=/dev/shm for test/fixtures/swift.ts) if
    you need the full metadata allowance.
  - Exit codes: 0 ok, 1 failure, 2 bad usage, 3 PORT is already in use.
  - Needs the Debian packages swift swift-proxy swift-account
    swift-container swift-object memcached; uses /usr/bin/python3.
"""

# The docstring is what `swift-dev help` prints. Run this file through
# scripts/swift-dev, which picks /usr/bin/python3 (Debian's swift modules).

import argparse
import configparser
import fcntl
import json
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

USER, KEY = 'test:tester', 'testing'
NAMES = ['memcached', 'account', 'container', 'object', 'proxy']
PART_POWER = 6
EXIT_FAIL, EXIT_USAGE, EXIT_PORT_BUSY = 1, 2, 3


def log(msg):
    print('swift-dev: ' + msg, file=sys.stderr, flush=True)


class Fail(Exception):
    def __init__(self, msg, code=EXIT_FAIL):
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------- processes

def proc_info(pid):
    """(state, session, starttime, cmdline) of pid, or None if gone."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read()
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmdline = f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b')') + 2:].split()
    return rest[0].decode(), int(rest[3]), int(rest[19]), cmdline


def members(recorded, marker):
    """{pid: session} of the live processes of the recorded sessions.

    recorded: {name: {'pid': P, 'start': T}}. A process belongs to the
    instance if it is a recorded leader with the recorded start time, or a
    member of a recorded session started no earlier than its leader whose
    command line names the instance's directory (server workers).
    """
    sessions = {r['pid']: r['start'] for r in recorded.values()}
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        pid = int(entry)
        info = proc_info(pid)
        if info is None:
            continue
        state, sid, start, cmdline = info
        if state == 'Z' or sid not in sessions:
            continue
        if pid == sid:
            if start == sessions[sid]:
                found[pid] = sid
        elif start >= sessions[sid] and marker in cmdline:
            found[pid] = sid
    return found


def leaders_alive(recorded):
    alive = {}
    for name, r in recorded.items():
        info = proc_info(r['pid'])
        alive[name] = bool(info and info[0] != 'Z' and info[2] == r['start'])
    return alive


def kill_all(recorded, marker, grace=5.0):
    """SIGTERM the instance's processes, SIGKILL what is left after grace
    seconds; True once none is left. Workers are signalled with their
    parents: a Swift 2.30 parent acts on SIGTERM only once a worker exits."""
    t0 = time.monotonic()
    term_until, kill_until = t0 + grace, t0 + grace + 5.0
    termed = set()
    while True:
        pids = members(recorded, marker)
        if not pids:
            return True
        now = time.monotonic()
        if now > kill_until:
            return False
        for pid in pids:
            if now > term_until:
                sig = signal.SIGKILL
            elif pid in termed:
                continue
            else:
                sig = signal.SIGTERM
                termed.add(pid)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


# -------------------------------------------------------------------- state

class Instance:
    def __init__(self, d):
        self.dir = os.path.abspath(d)
        self.etc = os.path.join(self.dir, 'etc')
        self.devices = os.path.join(self.dir, 'devices')
        self.logdir = os.path.join(self.dir, 'log')
        self.run = os.path.join(self.dir, 'run')
        self.cache = os.path.join(self.dir, 'cache')
        self.state_file = os.path.join(self.run, 'state.json')
        # Swift servers' command lines name their config file under etc/.
        self.marker = self.etc + '/'

    def load_state(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except ValueError:
            raise Fail('%s is corrupt; remove it by hand once no process of '
                       'this instance runs' % self.state_file)

    def save_state(self, state):
        tmp = self.state_file + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, self.state_file)

    def lock(self):
        fd = os.open(os.path.join(self.dir, '.swift-dev.lock'),
                     os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def stop(self):
        state = self.load_state()
        if state is None:
            return True
        recorded = state.get('procs', {})
        ok = kill_all(recorded, self.marker)
        if not ok:
            log('could not stop: %s'
                % sorted(members(recorded, self.marker)))
            return False
        for name in recorded:
            try:
                os.unlink(os.path.join(self.run, name + '.pid'))
            except FileNotFoundError:
                pass
        for f in ('env', 'state.json'):
            try:
                os.unlink(os.path.join(self.run, f))
            except FileNotFoundError:
                pass
        return True

    def log_tails(self, lines=25):
        for name in NAMES:
            path = os.path.join(self.logdir, name + '.log')
            try:
                with open(path, 'rb') as f:
                    f.seek(0, 2)
                    f.seek(max(0, f.tell() - 64 * 1024))
                    tail = f.read().decode('utf-8', 'replace').splitlines()
            except FileNotFoundError:
                continue
            print('----- %s (last %d lines) -----' % (path, lines),
                  file=sys.stderr)
            for line in tail[-lines:]:
                print(line, file=sys.stderr)
        sys.stderr.flush()


# -------------------------------------------------------------------- setup

def ensure_swift_conf():
    path = '/etc/swift/swift.conf'
    if not os.path.exists(path):
        os.makedirs('/etc/swift', exist_ok=True)
        suffix = 'swift-dev-' + secrets.token_hex(8)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, 'w') as f:
            f.write('# written by swift-dev\n[swift-hash]\n'
                    'swift_hash_path_suffix = %s\n\n'
                    '[storage-policy:0]\nname = Policy-0\ndefault = yes\n'
                    % suffix)
        log('created %s' % path)
        return
    cp = configparser.RawConfigParser()
    try:
        cp.read(path, encoding='latin1')
    except configparser.Error as e:
        raise Fail('cannot parse %s: %s' % (path, e))
    if not cp.has_section('swift-hash'):
        with open(path, 'a') as f:
            f.write('\n# added by swift-dev\n[swift-hash]\n'
                    'swift_hash_path_suffix = swift-dev-%s\n'
                    % secrets.token_hex(8))
        log('added a [swift-hash] section to %s' % path)
        return
    if not (cp.get('swift-hash', 'swift_hash_path_suffix', fallback='') or
            cp.get('swift-hash', 'swift_hash_path_prefix', fallback='')):
        raise Fail('%s has a [swift-hash] section without '
                   'swift_hash_path_suffix: add one (swift-dev does not '
                   'edit it)' % path)


def check_xattrs(device):
    probe = os.path.join(device, '.swift-dev-xattr-probe')
    with open(probe, 'wb'):
        pass
    try:
        os.setxattr(probe, 'user.swift-dev.probe', b'x' * 1024)
    except OSError as e:
        raise Fail('%s does not support user xattrs (%s); the object server '
                   'needs them: use a DIR on ext4/xfs/tmpfs' % (device, e))
    finally:
        os.unlink(probe)


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(n, avoid):
    """n distinct free TCP ports on 127.0.0.1 (the kernel's choice)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(('127.0.0.1', 0))
            p = s.getsockname()[1]
            if p not in avoid:
                ports.append(p)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(u)
        u.bind(('127.0.0.1', 0))
        udp = u.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return ports, udp


def write_configs(inst, port, ports, udp):
    user = pwd.getpwuid(os.geteuid()).pw_name
    workers = os.environ.get('SWIFT_DEV_WORKERS', '1')
    if not workers.isdigit():
        raise Fail('SWIFT_DEV_WORKERS must be a number')
    common = '''[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
bind_timeout = 3
workers = {workers}
user = {user}
swift_dir = {etc}
devices = {devices}
mount_check = false
disable_fallocate = true
recon_cache_path = {cache}
log_name = {name}
log_level = INFO
log_udp_host = 127.0.0.1
log_udp_port = {udp}
'''
    servers = {
        'account': '''
[pipeline:main]
pipeline = account-server

[app:account-server]
use = egg:swift#account
log_requests = false
''',
        'container': '''
[pipeline:main]
pipeline = container-server

[app:container-server]
use = egg:swift#container
log_requests = false
# account updates are inline (no updater runs): be patient
conn_timeout = 2
node_timeout = 30
''',
        'object': '''
[pipeline:main]
pipeline = object-server

[app:object-server]
use = egg:swift#object
log_requests = false
# container updates are inline (no updater runs): wait for them so that
# listings are complete when a PUT or DELETE returns
container_update_timeout = 30
conn_timeout = 2
node_timeout = 30
''',
        'proxy': '''
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache bulk tempauth slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# one node: never stop talking to it after errors
error_suppression_interval = 0
conn_timeout = 2
node_timeout = 30
recoverable_node_timeout = 30

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}

[filter:bulk]
use = egg:swift#bulk

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
''',
    }
    all_ports = dict(ports, proxy=port)
    for name, body in servers.items():
        text = (common + body).format(
            port=all_ports[name], user=user, etc=inst.etc,
            devices=inst.devices, cache=inst.cache, udp=udp,
            workers=workers if name in ('proxy', 'object') else '1',
            name='swift-dev-' + name, memcached=ports['memcached'])
        with open(os.path.join(inst.etc, name + '-server.conf'), 'w') as f:
            f.write(text)


def build_rings(inst, ports):
    from swift.common.ring import RingBuilder
    from swift.common.storage_policy import POLICIES, REPL_POLICY
    rings = [('account', ports['account']), ('container', ports['container'])]
    for policy in POLICIES:
        if policy.policy_type != REPL_POLICY:
            raise Fail('storage policy %s in /etc/swift/swift.conf is not a '
                       'replication policy: swift-dev supports only those'
                       % policy.name)
        rings.append((policy.ring_name, ports['object']))
    for ring_name, p in rings:
        b = RingBuilder(PART_POWER, 1, 1)
        b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1',
                   'port': p, 'device': 'd1', 'weight': 1.0, 'meta': ''})
        b.rebalance()
        b.get_ring().save(os.path.join(inst.etc, ring_name + '.ring.gz'))


def spawn(inst, name, ports, state):
    if name == 'memcached':
        argv = ['/usr/bin/memcached', '-l', '127.0.0.1',
                '-p', str(ports['memcached']), '-U', '0', '-m', '64',
                '-t', '2', '-c', '1024']
        if os.geteuid() == 0:
            argv += ['-u', 'root']
    else:
        argv = ['/usr/bin/swift-%s-server' % name,
                os.path.join(inst.etc, name + '-server.conf'), '-v']
    logf = open(os.path.join(inst.logdir, name + '.log'), 'ab')
    try:
        logf.write(('==== %s swift-dev start: %s\n' % (
            time.strftime('%Y-%m-%d %H:%M:%S'), ' '.join(argv))).encode())
        logf.flush()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             close_fds=True, cwd=inst.dir)
    finally:
        logf.close()
    info = proc_info(p.pid)
    # start time is what makes a recorded PID ours (PIDs get reused)
    state['procs'][name] = {'pid': p.pid, 'start': info[2] if info else -1}
    inst.save_state(state)
    with open(os.path.join(inst.run, name + '.pid'), 'w') as f:
        f.write('%d\n' % p.pid)
    return p


# ------------------------------------------------------------------ probing

# no http_proxy & co for 127.0.0.1
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, headers=None, body=None, timeout=3.0):
    req = urllib.request.Request(url, data=body, method=method,
                                 headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def probe(port):
    """None if the store works, else a description of what does not."""
    auth_url = 'http://127.0.0.1:%d/auth/v1.0' % port
    try:
        st, h, _ = http('GET', auth_url,
                        {'X-Auth-User': USER, 'X-Auth-Key': KEY})
        if st != 200 or not h.get('X-Auth-Token'):
            return 'auth answered %d' % st
        token, url = h['X-Auth-Token'], h['X-Storage-Url']
        hdr = {'X-Auth-Token': token}
        cont = url + '/swift-dev-probe-' + secrets.token_hex(4)
        obj = cont + '/probe'
        steps = [('PUT', cont, None, (201, 202)),
                 ('PUT', obj, b'swift-dev', (201,)),
                 ('GET', obj, None, (200,)),
                 ('DELETE', obj, None, (204,)),
                 ('DELETE', cont, None, (204,))]
        for method, u, body, want in steps:
            st, _, data = http(method, u, hdr, body)
            if st not in want:
                return '%s %s answered %d' % (method, u, st)
            if method == 'GET' and data != b'swift-dev':
                return 'GET %s returned wrong data' % u
        return None
    except (OSError, urllib.error.URLError) as e:
        return str(getattr(e, 'reason', e))


# ------------------------------------------------------------------ start

def exports(port):
    return ('export ST_AUTH=http://127.0.0.1:%d/auth/v1.0\n'
            'export ST_USER=%s\nexport ST_KEY=%s\n' % (port, USER, KEY))


def bind_failed(inst, name):
    try:
        with open(os.path.join(inst.logdir, name + '.log'), 'rb') as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read()
    except FileNotFoundError:
        return False
    return (b'Could not bind' in tail or b'Address already in use' in tail or
            b'failed to listen' in tail)


def attempt(inst, port, timeout):
    """One start attempt. Returns None on success, or 'retry' when an
    internal port was taken meanwhile; raises Fail otherwise."""
    if not port_free(port):
        raise Fail('port %d on 127.0.0.1 is already in use' % port,
                   EXIT_PORT_BUSY)
    picked, udp = pick_ports(4, {port})
    ports = dict(zip(['memcached', 'account', 'container', 'object'], picked))
    write_configs(inst, port, ports, udp)
    state = {'port': port, 'ports': ports, 'log_udp_port': udp,
             'procs': {}, 'started': time.time()}
    inst.save_state(state)
    procs = {}
    # Only the proxy reads the rings: build them while the others start.
    for name in NAMES:
        if name == 'proxy':
            build_rings(inst, ports)
        procs[name] = spawn(inst, name, ports, state)
    log('started %s' % ', '.join('%s=%d' % (n, p.pid)
                                  for n, p in procs.items()))
    deadline = time.monotonic() + timeout
    why = 'not probed yet'
    while True:
        for name, p in procs.items():
            rc = p.poll()
            if rc is not None:
                if bind_failed(inst, name):
                    if name == 'proxy':
                        raise Fail('port %d on 127.0.0.1 is already in use '
                                   '(the proxy could not bind it)' % port,
                                   EXIT_PORT_BUSY)
                    log('%s could not bind port %d, retrying with other '
                        'ports' % (name, ports[name]))
                    return 'retry'
                raise Fail('%s exited with status %d during start-up'
                           % (name, rc))
        why = probe(port)
        if why is None:
            return None
        if time.monotonic() > deadline:
            raise Fail('the store is not ready after %gs: %s'
                       % (timeout, why))
        time.sleep(0.1)


def start(d, port):
    inst = Instance(d)
    os.makedirs(inst.dir, exist_ok=True)
    lockfd = inst.lock()
    try:
        state = inst.load_state()
        if state is not None:
            alive = leaders_alive(state.get('procs', {}))
            if alive and all(alive.values()) and \
                    set(alive) == set(NAMES):
                if state.get('port') != port:
                    raise Fail('%s is already running on port %s; stop it '
                               'first' % (inst.dir, state.get('port')))
                why = probe(port)
                if why is not None:
                    raise Fail('%s is running but does not work: %s; stop '
                               'it first' % (inst.dir, why))
                log('%s is already running on port %d' % (inst.dir, port))
                sys.stdout.write(exports(port))
                return 0
            if any(alive.values()):
                log('stopping the leftovers of a half-dead instance')
            if not inst.stop():
                raise Fail('could not stop the leftovers of %s' % inst.dir)
        for sub in (inst.etc, inst.devices, os.path.join(inst.devices, 'd1'),
                    inst.logdir, inst.run, inst.cache):
            os.makedirs(sub, exist_ok=True)
        ensure_swift_conf()
        check_xattrs(os.path.join(inst.devices, 'd1'))
        timeout = float(os.environ.get('SWIFT_DEV_TIMEOUT', '30'))
        t0 = time.monotonic()
        try:
            for _ in range(3):
                if attempt(inst, port, timeout) is None:
                    break
                inst.stop()
            else:
                raise Fail('could not find free ports for the servers')
        except BaseException as e:
            if isinstance(e, Fail) and e.code == EXIT_PORT_BUSY:
                inst.stop()
                raise
            if isinstance(e, Fail):
                log('error: %s' % e)
                e.logged = True
            if not isinstance(e, KeyboardInterrupt):
                inst.log_tails()
            log('stopping what was started')
            inst.stop()
            raise
        text = exports(port)
        with open(os.path.join(inst.run, 'env'), 'w') as f:
            f.write(text)
        log('ready in %.1fs: proxy on 127.0.0.1:%d, logs in %s'
            % (time.monotonic() - t0, port, inst.logdir))
        sys.stdout.write(text)
        return 0
    finally:
        os.close(lockfd)


def stop(d):
    inst = Instance(d)
    if not os.path.isdir(inst.dir):
        return 0
    lockfd = inst.lock()
    try:
        if not inst.stop():
            return EXIT_FAIL
        return 0
    finally:
        os.close(lockfd)


# ------------------------------------------------------------ command line

USAGE_LINE = ('usage: swift-dev start DIR PORT | swift-dev stop DIR | '
              'swift-dev help')
SERVER_BINARIES = ['swift-proxy-server', 'swift-account-server',
                   'swift-container-server', 'swift-object-server',
                   'memcached']
INSTALL_HINT = ('apt-get install -y --no-install-recommends swift '
                'swift-proxy swift-account swift-container swift-object '
                'memcached python3-swiftclient')
# argparse takes a lone '--' for "end of options" even in a parser without
# options; here it is a plain argument (a DIR named '--'), so it is hidden
# from argparse as '--\0' (argv cannot hold a NUL).
DASHDASH = '--\0'


class Parser(argparse.ArgumentParser):
    """A parser without options whose every usage error is USAGE_LINE."""

    def __init__(self, **kw):
        # NUL as the only prefix char: no argument is taken for an option,
        # so a DIR may begin with '-' and -h/--help are subcommand names.
        kw.update(add_help=False, prefix_chars='\0')
        super().__init__(**kw)

    def error(self, message):
        # one line, for scripts and test/swift-dev.test.ts
        print(USAGE_LINE, file=sys.stderr)
        sys.exit(EXIT_USAGE)


def dir_arg(s):
    if s == DASHDASH:
        return '--'
    if not s:
        raise argparse.ArgumentTypeError('DIR is empty')
    return s


def port_arg(s):
    # ASCII digits only (int() would also take ' 80', '8_0' or '٨٠')
    if not re.fullmatch('[0-9]{1,5}', s) or not 1 <= int(s, 10) <= 65535:
        raise argparse.ArgumentTypeError('bad PORT')
    return int(s, 10)


def parse_args(argv):
    parser = Parser(prog='swift-dev')
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('start')
    p.add_argument('dir', type=dir_arg)
    p.add_argument('port', type=port_arg)
    p = sub.add_parser('stop')
    p.add_argument('dir', type=dir_arg)
    sub.add_parser('help', aliases=['-h', '--help'])
    args = parser.parse_args([DASHDASH if a == '--' else a for a in argv])
    if args.cmd in ('-h', '--help'):
        args.cmd = 'help'
    return args


def main(argv):
    args = parse_args(argv)
    if args.cmd == 'help':
        sys.stdout.write(__doc__)
        return 0
    # DIR ends up in Swift's ini files, where a newline breaks them.
    if '\n' in args.dir:
        log('DIR must not contain a newline')
        return EXIT_USAGE
    try:
        if args.cmd == 'start':
            missing = ['/usr/bin/' + b for b in SERVER_BINARIES
                       if not os.access('/usr/bin/' + b, os.X_OK)]
            if missing:
                log('OpenStack Swift is not installed (missing: %s).'
                    % ' '.join(missing))
                log('install it with: ' + INSTALL_HINT)
                return EXIT_FAIL
            try:
                import swift.common.ring  # noqa: F401 (slow: 0.4 s)
            except ImportError as e:
                log('OpenStack Swift is not installed for %s (%s). Install '
                    'it with: %s' % (sys.executable, e, INSTALL_HINT))
                return EXIT_FAIL
            return start(args.dir, args.port)
        return stop(args.dir)
    except Fail as e:
        if not getattr(e, 'logged', False):
            log('error: %s' % e)
        return e.code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
