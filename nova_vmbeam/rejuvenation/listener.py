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

"""What a program embedding the orchestrator hears of a run."""

import contextlib


class RunListener:
    """What a program embedding the orchestrator hears of a run.

    The Nova driver follows the generations with it: new guests go to the
    target as soon as it is ready, a guest is fenced from Nova's own
    operations while it moves, and the old daemon's connection is let go
    before that daemon is retired. Every method may be left out.
    """

    def run_started(self, run, source, target):
        """``target`` (a Sibling) accepts guests; none moved yet.

        ``run`` is a records.Run. Also called when an open run is taken
        up again.
        """

    @contextlib.contextmanager
    def moving(self, name, uuid):
        """Held around one guest's move (from lookup to persist)."""
        yield

    def guest_done(self, name, uuid, entry):
        """A move ended; ``entry`` is the guest's records.GuestEntry."""

    def retiring(self, source, target):
        """Every guest runs on ``target``; ``source`` is retired next."""

    def run_finished(self, run):
        """The run (a records.Run), after it completed or stopped."""
