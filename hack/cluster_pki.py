"""Certificates, keys and kubeconfigs for hack/local-cluster.sh, laid out as kubeadm's
`init phase certs all` and `init phase kubeconfig all` lay them out:

    pki/ca.{crt,key}                      the cluster CA
    pki/apiserver.{crt,key}               serving: the service IP, 127.0.0.1, kubernetes.default...
    pki/apiserver-kubelet-client.{crt,key}  the apiserver to the kubelets (kubeadm:cluster-admins)
    pki/front-proxy-ca.{crt,key}, pki/front-proxy-client.{crt,key}  aggregated APIs
    pki/etcd/ca.{crt,key}, pki/etcd/server.{crt,key}, pki/etcd/peer.{crt,key}
    pki/apiserver-etcd-client.{crt,key}
    pki/sa.{key,pub}                      service-account token signing
    admin.conf super-admin.conf controller-manager.conf scheduler.conf kubelet.conf kube-proxy.conf

Usage: cluster_pki.py DIR NODE_NAME NODE_IP SERVICE_IP APISERVER_URL. Nothing that exists
is replaced, so a second `up` keeps its identities.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=365)
CA_VALID = datetime.timedelta(days=3650)
Key = rsa.RSAPrivateKey


def _key() -> Key:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]
                     + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs])


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


class Pair:
    """A certificate and its key on disk (made once, loaded after)."""

    def __init__(self, base: Path) -> None:
        self.crt, self.key_path = base.with_suffix(".crt"), base.with_suffix(".key")

    def exists(self) -> bool:
        return self.crt.exists() and self.key_path.exists()

    def load(self) -> tuple[x509.Certificate, Key]:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return x509.load_pem_x509_certificate(self.crt.read_bytes()), key

    def save(self, cert: x509.Certificate, key: Key) -> None:
        _write(self.key_path, _pem_key(key), 0o600)
        _write(self.crt, _pem_cert(cert), 0o644)


def ca(pair: Pair, cn: str) -> tuple[x509.Certificate, Key]:
    if pair.exists():
        return pair.load()
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + CA_VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                         content_commitment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    pair.save(cert, key)
    return cert, key


def leaf(pair: Pair, issuer: tuple[x509.Certificate, Key], cn: str, *, orgs: tuple[str, ...] = (),
         server: bool = False, client: bool = False, dns: tuple[str, ...] = (),
         ips: tuple[str, ...] = ()) -> tuple[x509.Certificate, Key]:
    if pair.exists():
        return pair.load()
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(issuer[0].subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
                              critical=False))
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer[1], hashes.SHA256())
    pair.save(cert, key)
    return cert, key


def kubeconfig(path: Path, server: str, ca_cert: x509.Certificate, cert: x509.Certificate, key: Key,
               user: str) -> None:
    """JSON is YAML: kubectl and the components read it as it is."""
    if path.exists():
        return
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": f"{user}@criservice-local",
        "clusters": [{"name": "criservice-local", "cluster": {
            "server": server, "certificate-authority-data": b64(_pem_cert(ca_cert))}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(_pem_cert(cert)),
                                          "client-key-data": b64(_pem_key(key))}}],
        "contexts": [{"name": f"{user}@criservice-local", "context": {"cluster": "criservice-local", "user": user}}],
    }
    _write(path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)


def main(base: Path, node: str, node_ip: str, service_ip: str, server: str) -> None:
    pki = base / "pki"
    cluster_ca = ca(Pair(pki / "ca"), "kubernetes")
    leaf(Pair(pki / "apiserver"), cluster_ca, "kube-apiserver", server=True,
         dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
              "localhost", node), ips=(service_ip, "127.0.0.1", node_ip))
    leaf(Pair(pki / "apiserver-kubelet-client"), cluster_ca, "kube-apiserver-kubelet-client",
         orgs=("kubeadm:cluster-admins",), client=True)
    front = ca(Pair(pki / "front-proxy-ca"), "front-proxy-ca")
    leaf(Pair(pki / "front-proxy-client"), front, "front-proxy-client", client=True)
    etcd_ca = ca(Pair(pki / "etcd" / "ca"), "etcd-ca")
    for name in ("server", "peer"):
        leaf(Pair(pki / "etcd" / name), etcd_ca, node, server=True, client=True,
             dns=("localhost", node), ips=("127.0.0.1",))
    leaf(Pair(pki / "apiserver-etcd-client"), etcd_ca, "kube-apiserver-etcd-client", client=True)
    if not (pki / "sa.key").exists():
        sa = _key()
        _write(pki / "sa.key", _pem_key(sa), 0o600)
        _write(pki / "sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    users = {
        # kubeadm's admin.conf is bound to cluster-admin by a ClusterRoleBinding it creates;
        # super-admin.conf is in system:masters, which needs none (the script uses it to make that binding).
        "super-admin.conf": ("kubernetes-super-admin", ("system:masters",)),
        "admin.conf": ("kubernetes-admin", ("kubeadm:cluster-admins",)),
        "controller-manager.conf": ("system:kube-controller-manager", ()),
        "scheduler.conf": ("system:kube-scheduler", ()),
        "kubelet.conf": (f"system:node:{node}", ("system:nodes",)),
        "kube-proxy.conf": ("system:kube-proxy", ()),
    }
    for file, (cn, orgs) in users.items():
        cert, key = leaf(Pair(pki / "users" / file.removesuffix(".conf")), cluster_ca, cn, orgs=orgs, client=True)
        kubeconfig(base / file, server, cluster_ca[0], cert, key, cn)


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__.split("Usage: ")[1].split("\n")[0])
    main(Path(sys.argv[1]), *sys.argv[2:])
