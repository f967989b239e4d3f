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

"""Keys and certificates of the nested sibling's authenticated channels.

The L1 VMs sit on a bridge that holds an L0 address, so every local user
of the compute node can open a TCP connection to them. What crosses that
network is therefore authenticated with TLS and client certificates:

* L0 -> an L1's libvirtd: libvirt's own TLS transport
  (``qemu+tls://<address>/system?pkipath=<dir>``). The L1's libvirtd
  listens on TLS only (no TCP listener at all), requires a client
  certificate signed by this node's CA (``tls_no_verify_certificate = 0``)
  and accepts only the L0 client's distinguished name
  (``tls_allowed_dn_list``); the L0 client checks that the server's
  certificate is the CA's and names the L1's address.
* L1 -> L1, the guest's migration stream: QEMU's ``tls-creds-x509`` on
  both ends (the nested mover), with ``verify-peer`` on both: the
  destination accepts only a source presenting a certificate of this
  node's CA with the source L1's name (``tls-authz``), and the source
  only a destination whose certificate names the address it connects
  to.

Why TLS and not a unix socket forwarded into the L1 (virtio-serial or
vsock): libvirt's client and server already implement it, it needs no
forwarding daemon on either side (one more process to rejuvenate, to
keep alive across a nova-compute restart and to secure), and the
migration stream, which goes from one L1 to another and never through
L0, can be protected the same way. A plain vsock socket is no answer:
any local user can connect to a guest's CID.

One CA per compute node, not per generation: a migration goes from
generation N to generation N+1, and each end must verify the other's
certificate, so both need the same trust root. The CA's key never leaves
L0 (``<state>/nested/pki/ca``); each generation gets certificates of its
own:

* L0's libvirt client certificate for that generation
  (``<state>/nested/genN/pki``, libvirt's pkipath layout: cacert.pem,
  clientcert.pem, clientkey.pem). It persists, so that a standby L1 and
  an L1 adopted after a restart of nova-compute stay reachable.
* the L1's libvirtd server key and its QEMU migration key, generated when
  the L1 boots and handed to it through the guest agent: a virtio-serial
  port of the L0 libvirt daemon, whose socket only L0's root (or the
  service user) can open, never the network. They are not kept on L0:
  an L1 never reboots (its domain is destroyed on reboot), so they are
  never needed again. The L1's /init starts libvirtd only once they are
  there.

Directories are 0700 and keys 0600, owned by the user the service runs
as (root, or nova for an unprivileged nova-compute). Keys are ECDSA
P-256: fast to generate on a busy host, and supported by the GnuTLS that
both libvirt and QEMU use.
"""

import datetime
import fcntl
import io
import ipaddress
import os
import tarfile

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: the one client libvirtd in an L1 accepts (a single RDN: libvirt
#: compares the whole DN string, and one attribute has no order to get
#: wrong)
L0_CLIENT_CN = 'nova-vmbeam-l0'
L0_CLIENT_DN = 'CN=%s' % L0_CLIENT_CN
CA_CN = 'nova-vmbeam nested CA'

#: libvirt's pkipath file names (client side)
CA_CERT = 'cacert.pem'
CA_KEY = 'cakey.pem'
CLIENT_CERT = 'clientcert.pem'
CLIENT_KEY = 'clientkey.pem'

#: where the L1's daemons read their credentials (libvirtd.conf names
#: the first three; the mover names the last to QEMU)
L1_CA_CERT = 'etc/pki/CA/cacert.pem'
L1_SERVER_CERT = 'etc/pki/libvirt/servercert.pem'
L1_SERVER_KEY = 'etc/pki/libvirt/private/serverkey.pem'
L1_MIGRATION_DIR = 'etc/pki/qemu-migration'
#: set by the delivery once everything is in place; /init waits for it
L1_READY_FLAG = '/run/vmbeam-pki-ready'

# The L1's clock is set from L0's at boot, but a TCG guest's drifts: a
# day of slack before "now" keeps a fresh certificate valid at once.
_BACKDATE = datetime.timedelta(days=1)
CA_VALIDITY = datetime.timedelta(days=3650)
CERT_VALIDITY = datetime.timedelta(days=1825)


def _ensure_private_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    # makedirs's mode is filtered by the umask and skips existing ones.
    os.chmod(path, 0o700)


def write_private(path, data, mode=0o600):
    """Write ``path`` atomically, never readable by others on the way."""
    tmp = '%s.tmp%d' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def new_ca(common_name=CA_CN):
    """A self-signed CA: (certificate, key)."""
    key = new_key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, common_name, server=False, client=False,
          addresses=()):
    """A leaf certificate signed by the CA: (certificate, key).

    ``addresses``: IP addresses the certificate names (a server's, which
    the peer checks against the address it connects to).
    """
    key = new_key()
    now = _now()
    purposes = []
    if server:
        purposes.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        purposes.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _BACKDATE)
               .not_valid_after(now + CERT_VALIDITY)
               .add_extension(x509.BasicConstraints(ca=False,
                                                    path_length=None),
                              critical=True)
               # GnuTLS (libvirt, QEMU) checks these when critical:
               # key_encipherment is what they look for on a TLS peer.
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False,
                   key_encipherment=True, data_encipherment=False,
                   key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False,
                   decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(purposes),
                              critical=True)
               .add_extension(
                   x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_cert.public_key()), critical=False))
    if addresses:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]),
            critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def ca_dir(conf):
    return os.path.join(conf.vmbeam.state_path, 'nested', 'pki', 'ca')


def node_ca(conf):
    """This node's CA (certificate, key), created on first use.

    Under a lock: two siblings starting at once must not make two CAs.
    """
    directory = ca_dir(conf)
    _ensure_private_dir(os.path.dirname(directory))
    _ensure_private_dir(directory)
    cert_path = os.path.join(directory, CA_CERT)
    key_path = os.path.join(directory, CA_KEY)
    with open(os.path.join(directory, '.lock'), 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (os.path.exists(cert_path) and os.path.exists(key_path)):
            cert, key = new_ca()
            write_private(key_path, key_pem(key))
            write_private(cert_path, cert_pem(cert), mode=0o644)
            LOG.info('created the nested sibling CA in %s', directory)
            return cert, key
        with open(cert_path, 'rb') as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, 'rb') as f:
            key = serialization.load_pem_private_key(f.read(), None)
        return cert, key


def ensure_client(conf, directory):
    """L0's libvirt client credentials for one generation, in ``directory``.

    Made once (libvirt's pkipath layout) and kept: the same directory
    serves every later connection to that generation's L1, from this
    process or from a nova-compute started later.
    """
    _ensure_private_dir(directory)
    paths = [os.path.join(directory, name)
             for name in (CA_CERT, CLIENT_CERT, CLIENT_KEY)]
    if all(os.path.exists(path) for path in paths):
        return directory
    # Under a lock, and the CA certificate written last: two processes
    # making them at once would otherwise leave one's key beside the
    # other's certificate, and a reader that sees all three sees a pair.
    with open(os.path.join(directory, '.lock'), 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(os.path.exists(path) for path in paths):
            return directory
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)
        ca_cert, ca_key = node_ca(conf)
        cert, key = issue(ca_cert, ca_key, L0_CLIENT_CN, client=True)
        write_private(paths[2], key_pem(key))
        write_private(paths[1], cert_pem(cert), mode=0o644)
        write_private(paths[0], cert_pem(ca_cert), mode=0o644)
    return directory


def migration_cn(name):
    """Common name of L1 ``name``'s migration certificate."""
    return 'nova-vmbeam-l1-%s-migration' % name


def migration_dn(name):
    """Its DN as QEMU reports a TLS peer's (one RDN: no order to differ)."""
    return 'CN=%s' % migration_cn(name)


#: the name of L0's NBD server certificate (nested/disks.py)
L0_DISKS_CN = 'nova-vmbeam-l0-disks'
#: the client certificates L0's NBD server lets in: those of this node's
#: L1s (their QEMU migration certificates, which the L1's libvirt also
#: names as the NBD client's, qemu.conf nbd_tls_x509_cert_dir). Any L1
#: of the node, not only the one a guest runs in: during a move the
#: source and destination L1 both hold the guest's disk open.
L1_CLIENT_DN_GLOB = 'CN=%s' % migration_cn('*')


def disk_server_files(conf, address):
    """{QEMU tls-creds-x509 file name: PEM} of L0's NBD server.

    The server certificate names ``address`` (the L0 address on the L1
    network), which the L1's NBD client checks it against.
    """
    ca_cert, ca_key = node_ca(conf)
    cert, key = issue(ca_cert, ca_key, L0_DISKS_CN, server=True,
                      addresses=[address])
    return {'ca-cert.pem': cert_pem(ca_cert),
            'server-cert.pem': cert_pem(cert),
            'server-key.pem': key_pem(key)}


def l1_files(conf, address, name):
    """{path in the L1: PEM bytes}: what one L1 needs, freshly issued.

    The libvirtd server certificate and the QEMU migration certificate
    (server for an incoming move, client for an outgoing one) name the
    L1's address; their keys are new and exist only in what is returned.
    """
    ca_cert, ca_key = node_ca(conf)
    server, server_key = issue(ca_cert, ca_key, 'nova-vmbeam-l1-%s' % name,
                               server=True, addresses=[address])
    migration, migration_key = issue(
        ca_cert, ca_key, migration_cn(name),
        server=True, client=True, addresses=[address])
    ca = cert_pem(ca_cert)
    files = {L1_CA_CERT: ca, L1_SERVER_CERT: cert_pem(server),
             L1_SERVER_KEY: key_pem(server_key)}
    # QEMU's tls-creds-x509 file names, one directory for both endpoints.
    for qemu_name, data in (('ca-cert.pem', ca),
                            ('server-cert.pem', cert_pem(migration)),
                            ('server-key.pem', key_pem(migration_key)),
                            ('client-cert.pem', cert_pem(migration)),
                            ('client-key.pem', key_pem(migration_key))):
        files['%s/%s' % (L1_MIGRATION_DIR, qemu_name)] = data
    return files


def tar_of(files):
    """An uncompressed tar of {relative path: bytes} (modes set in the L1)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT) \
            as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(files[path]))
    return buf.getvalue()


#: run by the L1's guest agent with the tar on stdin. Once the flag is
#: set it does nothing: libvirtd has read its keys by then, and a second
#: delivery (another process waiting for the same L1) must not swap them
#: under it. Owners and modes are set here, not taken from the archive.
INSTALL_SCRIPT = '''set -e
[ -e %(flag)s ] && exit 0
umask 077
new=/run/vmbeam-pki.new
rm -rf "$new"
mkdir -p "$new"
tar -x -o -C "$new" -f -
chown -R root:root "$new"
find "$new" -type d -exec chmod 700 {} +
find "$new" -type f -exec chmod 600 {} +
chmod 755 "$new/etc" "$new/etc/pki" "$new/etc/pki/CA" "$new/etc/pki/libvirt"
chmod 644 "$new/%(ca)s" "$new/%(server_cert)s"
chown -R libvirt-qemu:libvirt-qemu "$new/%(migration)s"
mkdir -p -m 755 /etc/pki
for d in CA libvirt qemu-migration; do
    rm -rf "/etc/pki/$d"
    mv "$new/etc/pki/$d" "/etc/pki/$d"
done
rm -rf "$new"
touch %(flag)s
''' % {'flag': L1_READY_FLAG, 'ca': L1_CA_CERT,
       'server_cert': L1_SERVER_CERT, 'migration': L1_MIGRATION_DIR}
