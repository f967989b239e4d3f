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

"""Host rejuvenation: the orchestrator, its parts and its on-disk journal.

Words, each for one thing:

generation
    one running instance of the hypervisor stack on this node, numbered
    1, 2, ...; exactly one is active. The orchestrator and the journal
    speak of generations (records.Generation, Run.source/Run.target).
sibling
    the plugin kind that makes generations (nova_vmbeam.siblings:
    colocated, nested), and the plugin's object for one generation
    (Orchestrator.sibling(number)): how to start, reach and retire it.
prepared destination
    a destination QEMU started ahead of a run (by standby) for one guest,
    paused and waiting for its migration (records.PreparedDestination).

The path of a request: orchestrator (facade) -> planning -> runs ->
generations (sibling plugin) -> moves (mover plugin) -> journal -> the
run's records.Run as the report.
"""
