import testtools

from nova_vmbeam.conf import driver
from nova_vmbeam.conf import opts
from nova_vmbeam.conf import vmbeam
from tests.unit import fakes


class TestOptions(testtools.TestCase):

    def test_every_option_has_help(self):
        (group, options), = opts.list_opts()
        self.assertEqual('vmbeam', group.name)
        names = [o.name for o in options]
        self.assertIn('ram_pool_path', names)
        self.assertIn('default_mover', names)
        for option in options:
            self.assertTrue(option.help and len(option.help) > 20,
                            option.name)

    def test_entry_point_lists_all_options(self):
        self.assertEqual(len(vmbeam.ALL_OPTS) + len(driver.driver_opts),
                         len(opts.list_opts()[0][1]))


class TestIsolation(testtools.TestCase):

    def test_overrides_do_not_leak_between_config_objects(self):
        first = fakes.make_conf(sibling_netns='ns-a')
        self.assertEqual('ns-a', first.vmbeam.sibling_netns)
        second = fakes.make_conf()
        self.assertIsNone(second.vmbeam.sibling_netns)
