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


class Regimes(unittest.TestCase):
    def test_a_bimodal_pair_splits_at_the_widest_gap(self):
        slow, fast = run.regimes([5.1, 25.3, 5.7, 27.0, 26.1])
        self.assertEqual((slow, fast), ([5.1, 5.7], [25.3, 26.1, 27.0]))

    def test_one_regime_stays_whole(self):
        self.assertEqual(run.regimes([20.0, 25.0, 22.0]), ([20.0, 22.0, 25.0], []))
        self.assertEqual(run.regimes([7.0]), ([7.0], []))

    def test_the_ratio_lines_name_each_regime(self):
        run.ROWS.clear()
        run.ROWS[run.MEMIF] = {60: [5.0, 25.0, 30.0]}
        run.ROWS[run.TOUCH] = {60: [50.0]}
        m = lambda name, key: run.med(run.ROWS.get(name, {}).get(key, []))  # noqa: E731
        lines = run.memif_ratios(m, 60)
        run.ROWS.clear()
        self.assertIn("memif pair 60 B, every run: 5.00, 25.00, 30.00", lines)
        self.assertTrue(any("slow 5.00 Mpps (1 runs), fast 27.50 Mpps (2 runs)" in x for x in lines), lines)
        self.assertTrue(any(x.startswith("ours (touching client) / DPDK memif, 60 B: 2.00x (all runs), "
                                         "10.00x (slow regime), 1.82x (fast regime)") for x in lines), lines)


if __name__ == "__main__":
    unittest.main()
