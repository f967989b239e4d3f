"""Entry point for oslo-config-generator (oslo.config.opts)."""

from nova_vmbeam.conf import vmbeam


def list_opts():
    return [(group, opts) for group, opts in vmbeam.list_opts().items()]
