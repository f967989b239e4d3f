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

"""Waiting for something slow to happen: a daemon to answer or to exit,
a run to end. By tenacity.

Only for waits of tens of milliseconds and more. The waits inside a
guest's pause (a QMP event, a migration's completion, a destination's
resume) poll by hand at sub-millisecond intervals: there every loop
iteration and every call counts.
"""

import tenacity


def until(check, timeout, interval, timed_out):
    """Call ``check()`` every ``interval`` seconds until it returns true.

    Returns what it returned. After ``timeout`` seconds, the result of
    ``timed_out()`` instead, which usually raises. An exception of
    ``check()`` ends the wait at once and is raised as it is.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda result: not result),
        wait=tenacity.wait_fixed(interval),
        stop=tenacity.stop_after_delay(timeout),
        retry_error_callback=lambda _state: timed_out())
    return retrying(check)
