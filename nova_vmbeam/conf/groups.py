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

"""One option group object per ConfigOpts."""

from oslo_config import cfg


def fresh(group):
    """A copy of ``group`` to register with one ConfigOpts.

    oslo.config keeps option values and overrides in the registered group
    object (it copies the group shallowly), so a module-level group
    registered with two ConfigOpts would carry one's overrides into the
    other: tests, and a process with two configurations, would see them.
    """
    return cfg.OptGroup(group.name, title=group.title, help=group.help)
