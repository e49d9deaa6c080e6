#!/usr/bin/env python3
"""Helpers for conformance/run.sh (run with the autobahn venv's python).

  abtool.py spec ROLE OUT URL CASES EXCLUDE  -> writes OUT/fuzzing{client,server}.json
  abtool.py free-port                        -> prints a free TCP port on 127.0.0.1
  abtool.py wait-port HOST PORT SECONDS [PID]
                                             -> exit 0 once HOST:PORT accepts TCP,
                                                1 on timeout, 3 if process PID exited first
  abtool.py update-reports HOST PORT AGENT   -> opens ws://HOST:PORT/updateReports?agent=AGENT
  abtool.py progress ROLE LOG TOTAL SECONDS  -> prints progress every SECONDS until killed
  abtool.py meta OUT KEY=VALUE...            -> merges the pairs into OUT/run.json
  abtool.py summarize ROLE OUT AGENT         -> prints the verdict lines, writes OUT/summary.json,
                                                exit 0 iff all passed
  abtool.py results-md REPORTS OUTFILE       -> writes the markdown results page (RESULTS.md)
                                                from REPORTS/{server,client}/ of full runs
"""

import base64
import json
import os
import re
import socket
import struct
import sys
import time
from urllib.parse import quote, urlparse

PASS = ('OK', 'NON-STRICT', 'INFORMATIONAL')
LOOPBACK = ('127.', '::1', 'localhost')


def patterns(s):
    return [p for p in re.split(r'[,\s]+', s or '') if p]


def idkey(case_id):
    return [int(x) for x in case_id.split('.')]


def cmd_spec(role, out, url, cases, exclude):
    host = urlparse(url).hostname or ''
    if not host.startswith(LOOPBACK) and os.environ.get('AUTOBAHN_ALLOW_NON_LOOPBACK') != '1':
        sys.exit("abtool: refusing non-loopback target %r (set AUTOBAHN_ALLOW_NON_LOOPBACK=1)" % host)
    spec = {'outdir': out, 'cases': patterns(cases) or ['*'],
            'exclude-cases': patterns(exclude), 'exclude-agent-cases': {}}
    if role == 'server':   # we test a server: wstest is the fuzzing *client*
        spec['servers'] = [{'agent': os.environ.get('AUTOBAHN_AGENT', 'testee'), 'url': url}]
        name = 'fuzzingclient.json'
    else:                  # we test a client: wstest is the fuzzing *server*
        spec['url'] = url
        spec['interface'] = host   # listen on loopback only (port patch)
        name = 'fuzzingserver.json'
    path = os.path.join(out, name)
    with open(path, 'w') as f:
        json.dump(spec, f, indent=2)
    print(path)


def cmd_free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    print(s.getsockname()[1])
    s.close()


def pid_alive(pid):
    """True while process PID exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return True


def cmd_wait_port(host, port, seconds, pid=None):
    """Poll until HOST:PORT accepts a TCP connection (an await on the port,
    not a fixed delay).  With PID: give up as soon as that process is gone."""
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        if pid is not None and not pid_alive(int(pid)):
            return 3
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.05)
    return 1


def cmd_update_reports(host, port, agent):
    """Minimal WebSocket client: handshake, wait for the server's close frame
    (sent after the reports are written), answer it, wait for EOF."""
    s = socket.create_connection((host, int(port)), timeout=300)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /updateReports?agent=%s HTTP/1.1\r\nHost: %s:%s\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (quote(agent), host, port, key)).encode())
    buf = b''
    while b'\r\n\r\n' not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("abtool: updateReports: connection closed during handshake")
        buf += chunk
    head, buf = buf.split(b'\r\n\r\n', 1)
    if b' 101 ' not in head.split(b'\r\n')[0]:
        sys.exit("abtool: updateReports: handshake refused: %r" % head[:200])
    while True:
        while len(buf) < 2:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            buf += chunk
        if buf[0] & 0x0f == 8:   # close frame (sent after the reports are written)
            try:                 # reply with a masked close; the server then aborts TCP
                s.sendall(struct.pack('!BBI', 0x88, 0x80, 0))
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            return 0
        buf = b''   # nothing else is expected on this connection


def expected_cases(spec):
    from autobahntestsuite.caseset import CaseSet
    from autobahntestsuite.case import (Cases, CaseCategories, CaseSubCategories,
                                        CaseSetname, CaseBasename)
    cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
    return cs.parseSpecCases(spec)


def cmd_progress(role, log, total, interval):
    """Every INTERVAL seconds print how many cases wstest has started (its log
    has one 'Running test case ID' line per case); runs until killed."""
    t0 = time.time()
    while True:
        time.sleep(float(interval))
        try:
            with open(log, errors='replace') as f:
                n = sum(1 for line in f if 'Running test case ID' in line)
        except OSError:
            n = 0
        print("autobahn %s: ... %ds, %d of %s cases started" % (role, time.time() - t0, n, total))
        sys.stdout.flush()


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def cmd_meta(out, *pairs):
    path = os.path.join(out, 'run.json')
    meta = load_json(path, {})
    for pair in pairs:
        k, _, v = pair.partition('=')
        meta[k] = v
    with open(path, 'w') as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return 0


VERDICTS = ['OK', 'NON-STRICT', 'INFORMATIONAL', 'UNIMPLEMENTED', 'FAILED']


def cmd_summarize(role, out, agent):
    def say(msg):
        print("autobahn %s: %s" % (role, msg))
        sys.stdout.flush()

    spec_name = 'fuzzingclient.json' if role == 'server' else 'fuzzingserver.json'
    with open(os.path.join(out, spec_name)) as f:
        spec = json.load(f)
    want = expected_cases(spec)

    results = {}
    index = os.path.join(out, 'index.json')
    if os.path.exists(index):
        with open(index) as f:
            allres = json.load(f)
        if agent in allres:
            results = allres[agent]
        elif len(allres) == 1:
            (other, results), = allres.items()
            say("note: results are under agent %r (not %r)" % (other, agent))
        elif allres:
            say("note: several agents in report, none named %r: %s" % (agent, sorted(allres)))
    else:
        say("note: no %s (wstest wrote no report)" % index)

    counts = dict.fromkeys(VERDICTS, 0)
    verdicts = {}   # case id -> OK / NON-STRICT / INFORMATIONAL / UNIMPLEMENTED / FAILED / MISSING / other
    failed, unimpl, close_notes = [], [], []
    for cid in want:
        r = results.get(cid)
        if r is None:
            counts['FAILED'] += 1
            failed.append(cid + '(missing)')
            verdicts[cid] = 'MISSING'
            continue
        b = r['behavior']
        verdicts[cid] = b
        if b in PASS:
            counts[b] += 1
        elif b == 'UNIMPLEMENTED':
            counts[b] += 1
            unimpl.append(cid)
        else:
            counts['FAILED'] += 1
            failed.append(cid if b == 'FAILED' else '%s(%s)' % (cid, b))
        if b in PASS and r.get('behaviorClose') not in ('OK', 'INFORMATIONAL'):
            close_notes.append('%s:%s' % (cid, r.get('behaviorClose')))
    extra = sorted(set(results) - set(want), key=idkey)

    # crashes inside the suite itself (Twisted "Unhandled Error" tracebacks)
    internal = 0
    tracebacks = []
    twlog = os.path.join(out, 'twisted.log')
    if os.path.exists(twlog):
        with open(twlog, errors='replace') as f:
            text = f.read()
        blocks = re.findall(r'Traceback \(most recent call last\):\n(?:\t.*\n)+', text)
        internal = len(blocks)
        if internal:
            say("suite tracebacks: %d in %s (wstest itself raised; counted as a failure)"
                % (internal, twlog))
            tracebacks = sorted(set(b.strip().splitlines()[-1].strip() for b in blocks))
            for last in tracebacks:
                print("  " + last)

    if close_notes:
        say("close-handshake notes on passing cases (not counted): " + ' '.join(close_notes))
    if extra:
        say("note: report also holds cases not selected by this run: %d" % len(extra))
    if unimpl:
        say("unimplemented: " + ' '.join(unimpl))
    say("failed: " + (' '.join(failed) if failed else '(none)'))
    say("report: %s" % os.path.join(out, 'index.html'))
    ok = counts['FAILED'] == 0 and counts['UNIMPLEMENTED'] == 0 and internal == 0
    summary = {
        'role': role, 'agent': agent, 'selected': len(want), 'counts': counts,
        'passed': counts['OK'] + counts['NON-STRICT'] + counts['INFORMATIONAL'],
        'failed': counts['FAILED'] + counts['UNIMPLEMENTED'],
        'suite_tracebacks': internal, 'traceback_kinds': tracebacks,
        'close_notes': close_notes, 'verdicts': verdicts, 'ok': ok,
        'cases': spec.get('cases'), 'exclude': spec.get('exclude-cases'),
    }
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print("autobahn %s: %s" % (role, ' '.join('%s=%d' % kv for kv in counts.items())))
    return 0 if ok else 1


def case_titles():
    from autobahntestsuite.case import CaseCategories, CaseSubCategories
    return CaseCategories, CaseSubCategories


def cmd_results_md(reports, outfile):
    """Markdown page of the latest full runs found under REPORTS/{server,client}."""
    cats, subcats = case_titles()
    roles = []
    for role in ('server', 'client'):
        d = os.path.join(reports, role)
        meta = load_json(os.path.join(d, 'run.json'), {})
        summ = load_json(os.path.join(d, 'summary.json'))
        if summ and meta.get('full') == '1':
            roles.append((role, meta, summ))
    lines = ['# Autobahn|Testsuite results', '',
             'Generated by `conformance/run.sh` (via `conformance/summarize-to-markdown`) on %s '
             'from the latest full runs in `conformance/reports/`. '
             'Reproduce with `conformance/run.sh both` (see conformance/README.md).'
             % time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), '']
    if not roles:
        lines += ['No full run (all %s cases, no `SOCKEYE_QUICK`/`SOCKEYE_CASES`/`SOCKEYE_EXCLUDE`) '
                  'has been recorded yet.' % 517, '']
    else:
        lines += ['| role | testee | run at | wall time | cases | ' + ' | '.join(VERDICTS) +
                  ' | suite tracebacks | verdict |',
                  '|---|---|---|---|---|' + '---|' * len(VERDICTS) + '---|---|']
        for role, meta, s in roles:
            c = s['counts']
            lines.append('| %s | `%s` | %s | %s s | %d | %s | %d | %s |' % (
                role, meta.get('testee', '?').replace('|', '\\|'), meta.get('started', '?'),
                meta.get('seconds', '?'), s['selected'],
                ' | '.join(str(c[v]) for v in VERDICTS), s['suite_tracebacks'],
                'PASS' if s['ok'] else '**FAIL**'))
        lines.append('')
        lines += ['Server role: Autobahn\'s fuzzingclient against the testee\'s echo endpoint. '
                  'Client role: the testee\'s client against Autobahn\'s fuzzingserver. '
                  'OK, NON-STRICT and INFORMATIONAL pass; UNIMPLEMENTED, FAILED and a missing '
                  'result fail (MISSING is counted under FAILED above).', '']

        # per-group breakdown
        groups = {}
        for role, meta, s in roles:
            for cid, v in s['verdicts'].items():
                g = cid.split('.')[0]
                groups.setdefault(g, {}).setdefault(role, {}).setdefault(v, 0)
                groups[g][role][v] += 1
        shown = VERDICTS[:-1] + ['FAILED', 'MISSING']
        lines += ['## By case group', '',
                  '| group | ' + ' | '.join('%s %s' % (r, v) for r, _, _ in roles for v in ('cases', 'pass', 'non-pass')) + ' |',
                  '|---|' + '---|' * (3 * len(roles))]
        for g in sorted(groups, key=int):
            row = ['%s %s' % (g, cats.get(g, ''))]
            for role, _, _ in roles:
                vs = groups[g].get(role, {})
                total = sum(vs.values())
                passed = sum(vs.get(v, 0) for v in PASS)
                bad = ', '.join('%s %d' % (v, n) for v, n in sorted(vs.items()) if v not in PASS)
                row += [str(total), str(passed), bad or '-']
            lines.append('| ' + ' | '.join(row) + ' |')
        lines.append('')

        lines += ['## Cases that are not plain OK', '']
        for role, meta, s in roles:
            lines.append('### %s role' % role)
            lines.append('')
            by = {}
            for cid, v in s['verdicts'].items():
                by.setdefault(v, []).append(cid)
            if set(by) == {'OK'}:
                lines += ['All %d cases OK.' % len(s['verdicts']), '']
            for v in sorted(by):
                if v == 'OK':
                    continue
                ids = sorted(by[v], key=idkey)
                lines.append('- **%s** (%d): %s' % (v, len(ids), ', '.join(ids)))
            if s['close_notes']:
                lines.append('- close-handshake remarks on passing cases (not counted): ' +
                             ', '.join(s['close_notes']))
            if s['traceback_kinds']:
                lines.append('- suite tracebacks: ' + '; '.join('`%s`' % t for t in s['traceback_kinds']))
            lines.append('')
    tmp = outfile + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    os.replace(tmp, outfile)
    print("wrote %s (%s)" % (outfile, ', '.join(r for r, _, _ in roles) or 'no full run'))
    return 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ''
    if cmd == 'spec' and len(argv) == 7:
        return cmd_spec(*argv[2:])
    if cmd == 'free-port':
        return cmd_free_port()
    if cmd == 'wait-port' and len(argv) in (5, 6):
        return cmd_wait_port(*argv[2:])
    if cmd == 'update-reports' and len(argv) == 5:
        return cmd_update_reports(*argv[2:])
    if cmd == 'progress' and len(argv) == 6:
        try:
            return cmd_progress(*argv[2:])
        except KeyboardInterrupt:
            return 0
    if cmd == 'meta' and len(argv) >= 3:
        return cmd_meta(*argv[2:])
    if cmd == 'summarize' and len(argv) == 5:
        return cmd_summarize(*argv[2:])
    if cmd == 'results-md' and len(argv) == 4:
        return cmd_results_md(*argv[2:])
    sys.exit(__doc__)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
