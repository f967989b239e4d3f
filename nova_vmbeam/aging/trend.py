# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Trend of one probe's series and its time to exhaustion.

The Mann-Kendall test (pymannkendall) says whether the series moves at all;
Sen's slope says how fast, robust to outliers. Where the Sen line stands at
the latest sample and how fast it moves toward the limit give the time to
exhaustion. A trend counts only if it is significant, points toward the
limit, and holds over the whole window and over each of its halves: a
single step (a guest booted, a cache filled) leaves at least one half flat
and does not count.

Samples are taken at a fixed interval, so the slope per sample is turned
into a slope per second with the mean interval of the series.
"""

import collections
import math

import pymannkendall

from nova_vmbeam.aging import base

TESTS = {
    'original': pymannkendall.original_test,
    'hamed_rao': pymannkendall.hamed_rao_modification_test,
}

Trend = collections.namedtuple(
    'Trend', 'samples trend p slope_per_s level limit eta_s significant '
             'reason')
Trend.__doc__ = '''What the series of one probe says.

``trend`` is pymannkendall's word (increasing, decreasing, no trend) over
the whole window, ``p`` its p-value, ``slope_per_s`` Sen's slope per second,
``level`` the Sen line at the latest sample, ``eta_s`` the seconds from the
latest sample until the line reaches ``limit`` (None if it never does),
``significant`` whether the trend toward the limit passed every test, and
``reason`` why not if it did not.
'''


def _test(method, values, alpha):
    steps = [b - a for a, b in zip(values, values[1:])]
    if method != 'original' and \
            max(steps) - min(steps) <= 1e-9 * max(map(abs, values)):
        # An exact line (a counter growing by the same step every sample):
        # its residuals are constant, there is no autocorrelation to
        # correct for and the corrected variance would be 0/0.
        method = 'original'
    result = TESTS[method](values, alpha=alpha)
    p = float(result.p)
    # The Hamed-Rao correction can leave no variance on short, strongly
    # autocorrelated series: no evidence then, not an error.
    significant = bool(result.h) and not math.isnan(p)
    return result, significant


def analyse(times, values, limit, direction, method='hamed_rao',
            alpha=0.01, min_samples=30):
    """The Trend of ``values`` sampled at ``times`` (seconds)."""
    n = len(values)
    if n < min_samples:
        return Trend(n, None, None, None, values[-1] if values else None,
                     limit, None, False,
                     '%d of %d samples' % (n, min_samples))
    result, significant = _test(method, values, alpha)
    step_s = (times[-1] - times[0]) / (n - 1)
    slope = float(result.slope) / step_s if step_s > 0 else 0.0
    level = float(result.intercept) + float(result.slope) * (n - 1)
    toward = slope < 0 if direction == base.FALLING else slope > 0
    gap = level - limit if direction == base.FALLING else limit - level
    if gap <= 0:
        eta = 0.0
    elif toward:
        eta = float(gap / abs(slope))
    else:
        eta = None
    trend = result.trend
    if not significant:
        reason = 'no significant trend (p=%.3g)' % result.p
    elif not toward:
        reason = '%s, away from the limit' % trend
    else:
        reason = None
        for half, part in (('first', values[:n // 2]),
                           ('latest', values[n // 2:])):
            result_half, significant_half = _test(method, part, alpha)
            if not significant_half or result_half.trend != trend:
                reason = ('%s over the window but not over its %s half '
                          '(p=%.3g): a step, not a drift' %
                          (trend, half, result_half.p))
                break
    return Trend(n, trend, float(result.p), float(slope), level, limit, eta,
                 reason is None, reason)
