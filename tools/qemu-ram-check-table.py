#!/usr/bin/env python3
"""Summarises the --jsonl lines of tools/qemu-ram-check.py: python3 tools/qemu-ram-check-table.py RUNS.jsonl"""
import json, sys, collections, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
cells = collections.OrderedDict()
def key(r):
    k = f"dl={r['downtime_ms']}ms {'multifd+zstd' if r['multifd'] else 'no multifd'} {r['bandwidth']/1e6:g}MB/s"
    if r.get('stop_first'): k += " STOP-FIRST(control)"
    if r.get('accel', 'tcg') != 'tcg': k += f" accel={r['accel']}"
    return k
order = sorted(rows, key=lambda r: (r.get('stop_first', False), r.get('accel','tcg')!='tcg', r['bandwidth']!=16e6, r['downtime_ms'], r['multifd']))
for r in order: cells.setdefault(key(r), []).append(r)
print("| cell | runs | runs with differing pages | pages differing (min–max) | crashed after cont | hung (no PROGRESS, no oops) | went on | dirty syncs (min–max) | forced |")
print("|---|---|---|---|---|---|---|---|---|")
mism = []
for k, rs in cells.items():
    ok = [r for r in rs if r.get('ok')]
    bad = len(rs) - len(ok)
    d = [r['pages_differing'] for r in ok]
    nd = sum(1 for x in d if x)
    cr = sum(1 for r in ok if r['crash'])
    hung = sum(1 for r in ok if not r['crash'] and not r['dst_progress_lines'])
    on = sum(1 for r in ok if r.get('went_on', bool(r['dst_progress_lines']) and not r['crash']))
    sy = [r['dirty_sync_count'] for r in ok]
    fo = sum(1 for r in ok if r.get('forced'))
    print(f"| {k} | {len(ok)}{f' (+{bad} failed)' if bad else ''} | {nd} | {(str(min(d))+'–'+str(max(d))) if d else '-'} | {cr} | {hung} | {on} | {(str(min(sy))+'–'+str(max(sy))) if sy else '-'} | {fo} |")
    for r in ok:
        differ = r['pages_differing'] > 0
        fine = (not r['crash']) and r['dst_progress_lines'] > 0
        if differ == fine:
            mism.append((k, r['started'], r['pages_differing'], r['crash'], r['dst_progress_lines'], r.get('crash_lines', [])[:1]))
print()
print("runs where 'pages differ' and 'guest failed' disagree:")
for m in mism: print(" ", m)
print("src changed while stopped:", collections.Counter(r.get('src_pages_changed_while_stopped') for r in rows if r.get('ok')))
print("dst states seen:", sorted(set(tuple(r['dst_states_seen']) for r in rows if r.get('ok'))), "resume events:", sum(r.get('dst_resume_events',0) for r in rows if r.get('ok')))
print("failed:", [(key(r), r.get('error')) for r in rows if not r.get('ok')])
