"""vmbeam-api for a WSGI server: ``nova_vmbeam.wsgi.api:application``.

Importing this module loads the configuration (OS_VMBEAM_API_CONFIG_FILES,
else /etc/vmbeam/vmbeam-api.conf) and builds the application, as
keystone.wsgi.api and placement.wsgi.api do for theirs.
"""

from nova_vmbeam.api import wsgi

application = wsgi.init_application()
