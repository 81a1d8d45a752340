#!/usr/bin/env python3
"""Summarise the .trx files (and native JUnit files) of a test run as 'N passed, N failed' (the last line).

usage: trx-summary.py RESULTS_DIR PROJECT.csproj...

A project without a .trx, or whose run was aborted (crashed test host), counts as one failure
on top of whatever its file reports, so a crash can never read as success.
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}


def main() -> int:
    results, projects = sys.argv[1], sys.argv[2:]
    passed = failed = 0
    for proj in projects:
        name = os.path.splitext(os.path.basename(proj))[0]
        path = os.path.join(results, name + ".trx")
        if not os.path.exists(path):
            print(f"{name}: no results (test host crashed or did not start)")
            failed += 1
            continue
        root = ET.parse(path).getroot()
        summary = root.find("t:ResultSummary", NS)
        counters = summary.find("t:Counters", NS) if summary is not None else None
        if counters is None:
            print(f"{name}: unreadable results")
            failed += 1
            continue
        p = int(counters.get("passed", 0))
        f = sum(int(counters.get(k, 0)) for k in ("failed", "error", "timeout", "aborted"))
        outcome = summary.get("outcome", "")
        for r in root.iter("{%s}UnitTestResult" % NS["t"]):
            if r.get("outcome") == "Failed":
                print(f"FAILED {name}: {r.get('testName')}")
        if outcome in ("Aborted", "Error") or (p + f == 0):
            print(f"{name}: run {outcome or 'empty'}")
            f += 1
        print(f"{name}: {p} passed, {f} failed")
        passed += p
        failed += f
    # native suites report JUnit (ctest --output-junit): *.junit.xml
    for path in sorted(glob.glob(os.path.join(results, "*.junit.xml"))):
        name = os.path.basename(path)[: -len(".junit.xml")]
        try:
            cases = list(ET.parse(path).getroot().iter("testcase"))
        except ET.ParseError:
            print(f"{name}: unreadable results")
            failed += 1
            continue
        bad = [c for c in cases if c.find("failure") is not None or c.find("error") is not None
               or c.get("status") == "fail"]
        for c in bad:
            print(f"FAILED {name}: {c.get('name')}")
        p, f = len(cases) - len(bad), len(bad)
        if not cases:
            f = 1
        print(f"{name}: {p} passed, {f} failed")
        passed += p
        failed += f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
