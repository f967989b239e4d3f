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

"""Sphinx configuration of nova-vmbeam's documentation (tox -e docs)."""

extensions = [
    'openstackdocstheme',
    # The configuration reference and the sample file are generated from
    # the options the code registers, so they cannot drift from it.
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'oslo_policy.sphinxext',
    # The guides are the Markdown pages under docs/, rendered as they are.
    'myst_parser',
]

config_generator_config_file = (
    '../../etc/oslo-config-generator/nova-vmbeam.conf')
sample_config_basename = '_static/nova-vmbeam'

openstackdocs_repo_name = 'x/nova-vmbeam'
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
project = 'nova-vmbeam'
copyright = 'nova-vmbeam developers'

source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
master_doc = 'index'
exclude_patterns = []
# The Markdown guides link to each other and to the tree by relative path
# (they are read on the forge as well); those links are not Sphinx
# references.
suppress_warnings = ['myst.xref_missing', 'myst.header']

html_theme = 'openstackdocs'
html_static_path = ['_static']
