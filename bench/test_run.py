#!/usr/bin/env python3
"""Self-test of bench/run.py's verdict on its rows (standard library only): a row that
failed, gave no figure or measured 0 fails the run, and so does a SKIP under
VALE_TEST_STRICT=1 unless the machine is too small. Run by scripts/test:

    python3 bench/test_run.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

GOOD = {"ours: unicast 1->1, pinned, delivered Mpps": {60: [12.5], 1514: [8.0]}}


class Verdict(unittest.TestCase):
    def code(self, rows, notes=(), strict=False):
        return run.verdict(rows, list(notes), strict)[0]

    def test_figures_pass(self):
        self.assertEqual(self.code(GOOD), 0)

    def test_a_failed_row_fails(self):
        code, lines = run.verdict(GOOD, ["memif 64 B: FAILED: testpmd reported no Rx-pps"], False)
        self.assertEqual(code, 1)
        self.assertTrue(any("FAILED" in line and "memif" in line for line in lines), lines)

    def test_a_zero_rate_fails(self):
        rows = dict(GOOD, **{"ours: fan-in 4->1, unpinned, delivered Mpps": {60: [0.0]}})
        self.assertEqual(self.code(rows), 1)

    def test_a_row_without_a_figure_fails(self):
        rows = dict(GOOD, **{"ours: same, fwd Mpps per CPU-second": {60: [None]}})
        self.assertEqual(self.code(rows), 1)

    def test_a_skip_passes_only_outside_strict(self):
        notes = ["memif 64 B: SKIP: dpdk-testpmd not installed (apt-get install dpdk-dev)"]
        self.assertEqual(self.code(GOOD, notes), 0)
        self.assertEqual(self.code(GOOD, notes, strict=True), 1)

    def test_a_machine_too_small_is_no_failure_even_strict(self):
        notes = ["ours: pinned: SKIP: needs 4 CPUs, this machine gives 2"]
        self.assertEqual(self.code(GOOD, notes, strict=True), 0)

    def test_a_failure_worded_as_skip_is_still_a_failure(self):
        # What the rows used to return for a peer that was there and failed.
        self.assertEqual(self.code(GOOD, ["vhost-user: FAILED: nothing arrived from testpmd"]), 1)

    def test_no_row_reports_a_peers_failure_as_a_skip(self):
        # The source itself: a SKIP is only for what is missing or not allowed here.
        with open(run.__file__) as f:
            src = f.read()
        for line in src.splitlines():
            if "SKIP:" in line and ("failed" in line or "{e}" in line):
                self.fail(f"a failure reported as SKIP: {line.strip()}")


if __name__ == "__main__":
    unittest.main()
