"""WSGI entry points of nova-vmbeam's services, as WSGI servers load them.

    nova_vmbeam.wsgi.api:application    vmbeam-api (uwsgi, gunicorn)
"""
