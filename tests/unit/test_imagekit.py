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

"""The image-building primitives both image builders share."""

import os
import stat

import fixtures
import testtools

from nova_vmbeam import imagekit


class ApplianceLikeError(imagekit.ImageBuildError):
    msg_fmt = 'Cannot build the thing: %(reason)s. %(fix)s'


class TestErrorsAs(testtools.TestCase):

    def test_primitive_failures_name_the_image(self):
        @imagekit.errors_as(ApplianceLikeError)
        def build():
            imagekit.run(['/nonexistent/vmbeam-tool'], fix='Install it.')

        exc = self.assertRaises(ApplianceLikeError, build)
        self.assertEqual('Cannot build the thing: /nonexistent/vmbeam-tool '
                         'is not installed. Install it.', str(exc))

    def test_the_images_own_errors_pass_unchanged(self):
        own = ApplianceLikeError(reason='r', fix='f')

        @imagekit.errors_as(ApplianceLikeError)
        def build():
            raise own

        self.assertIs(own, self.assertRaises(ApplianceLikeError, build))


class TestFiles(testtools.TestCase):

    def test_atomic_write_replaces_whole(self):
        path = self.useFixture(fixtures.TempDir()).join('f')
        imagekit.atomic_write(path, b'one')
        imagekit.atomic_write(path, b'two')
        with open(path, 'rb') as f:
            self.assertEqual(b'two', f.read())
        self.assertEqual(['f'], os.listdir(os.path.dirname(path)))
        self.assertEqual(0o644, stat.S_IMODE(os.stat(path).st_mode))

    def test_newc_is_reproducible_and_skips_repeats(self):
        def archive():
            cpio = imagekit.NewcWriter()
            cpio.add_dir('opt')
            cpio.add_dir('opt')
            cpio.add_file('opt/x', b'data', 0o755)
            cpio.add_symlink('bin/sh', '/bin/busybox')
            return cpio.finish()

        data = archive()
        self.assertEqual(data, archive())
        self.assertEqual(1, data.count(b'opt\0'))
        self.assertTrue(data.startswith(b'070701'))
        self.assertIn(b'TRAILER!!!\0', data)
