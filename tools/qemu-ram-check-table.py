#!/usr/bin/env python3
"""Summarises the --jsonl lines of tools/qemu-ram-check.py:
python3 tools/qemu-ram-check-table.py RUNS.jsonl [precopy|postcopy|all] [SINCE]
   (only the runs without / with --postcopy; only those started at or after SINCE, e.g. 2026-12-03T20:00,
    or in SINCE..UNTIL, e.g. ..2026-12-03T20:00 for the pre-copy matrix of 18:07-19:12)"""
import json, sys, collections, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "all" else None
if only not in (None, "precopy", "postcopy"):
    sys.exit("the filter is precopy, postcopy or all")
if len(sys.argv) > 3:  # SINCE or SINCE..UNTIL (UNTIL excluded; either side may be empty)
    since, _, until = sys.argv[3].partition("..")
    rows = [r for r in rows if r['started'] >= since and (not until or r['started'] < until)]
if only:
    rows = [r for r in rows if bool(r.get('postcopy')) == (only == "postcopy")]
cells = collections.OrderedDict()
def pc(r):
    """post-copy: when it was asked for, and whether the source really entered postcopy-active"""
    p = r.get('postcopy')
    if not p:
        return ""
    when = f"after sync≥{p['after_syncs']}" if 'after_syncs' in p else f"after {p['after_s']:g} s"
    if not r.get('ok'):
        return f" POSTCOPY {when}"
    what = ("post-copy entered" if r.get('postcopy_entered') else
            "asked, pre-copy completed first" if r.get('postcopy_asked_after_s') is not None else
            "pre-copy completed before asked")
    return f" POSTCOPY {when}: {what}"
def key(r):
    k = f"dl={r['downtime_ms']}ms {'multifd+zstd' if r['multifd'] else 'no multifd'} {r['bandwidth']/1e6:g}MB/s"
    if r.get('stop_first'): k += " STOP-FIRST(control)"
    if r.get('accel', 'tcg') != 'tcg': k += f" accel={r['accel']}"
    return k + pc(r)
order = sorted(rows, key=lambda r: (bool(r.get('postcopy')), 'after_s' in (r.get('postcopy') or {}), not r.get('postcopy_entered'),
                                    r.get('stop_first', False), r.get('accel','tcg')!='tcg', r['bandwidth']!=16e6, r['downtime_ms'], r['multifd']))
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
pcr = [r for r in rows if r.get('ok') and r.get('postcopy_entered')]
if pcr:
    print("post-copy entered:", len(pcr), "runs; asked after (s):", sorted(r['postcopy_asked_after_s'] for r in pcr),
          "; MB left when asked:", sorted(round(r['postcopy_asked_remaining'] / 1e6, 1) for r in pcr),
          "; destination's incoming status before pmemsave:", collections.Counter(r.get('dst_mig_status') for r in pcr),
          "; pages the destination requested:", collections.Counter(r.get('postcopy_requests') for r in pcr))
print("failed:", [(key(r), r.get('error'), (r.get('dst_stderr') or '').strip()[-160:]) for r in rows if not r.get('ok')])
