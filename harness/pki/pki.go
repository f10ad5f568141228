// Package pki generates the local target's certificates: a CA, the kube-apiserver's
// serving certificate, an admin client certificate (O=system:masters) and the
// service-account signing key pair. Keys are ECDSA P-256: fast to generate, accepted by
// every component.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of the generated PEM files.
type Files struct {
	CACert, CAKey           string
	ServingCert, ServingKey string
	AdminCert, AdminKey     string
	ServiceAccountPublic    string
	ServiceAccountPrivate   string
}

// APIServerSANs are the names the apiserver's certificate must carry for in-cluster and
// loopback clients; 10.96.0.1 is the first IP of the service range the target uses.
var APIServerSANs = struct {
	DNS []string
	IPs []net.IP
}{
	DNS: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
}

// Generate writes a fresh set of certificates and keys into dir.
func Generate(dir string) (Files, error) {
	f := Files{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"), ServingKey: filepath.Join(dir, "apiserver.key"),
		AdminCert: filepath.Join(dir, "admin.crt"), AdminKey: filepath.Join(dir, "admin.key"),
		ServiceAccountPublic: filepath.Join(dir, "sa.pub"), ServiceAccountPrivate: filepath.Join(dir, "sa.key"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "aks-istio-conformance-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, _ := x509.ParseCertificate(caDER)

	leaf := func(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []net.IP, certPath, keyPath string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: subject,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return err
		}
		return writeKey(keyPath, key)
	}

	steps := []func() error{
		func() error { return writePEM(f.CACert, "CERTIFICATE", caDER) },
		func() error { return writeKey(f.CAKey, caKey) },
		func() error {
			return leaf(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
				APIServerSANs.DNS, APIServerSANs.IPs, f.ServingCert, f.ServingKey)
		},
		func() error {
			return leaf(3, pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
				x509.ExtKeyUsageClientAuth, nil, nil, f.AdminCert, f.AdminKey)
		},
		func() error { return serviceAccountKeys(f.ServiceAccountPublic, f.ServiceAccountPrivate) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return f, fmt.Errorf("pki: %w", err)
		}
	}
	return f, nil
}

// Issue signs a serving certificate for the given names with the CA in f, for a loopback
// server of the harness (the MeshConfig webhook), and writes it as <dir>/<name>.crt/.key.
func Issue(f Files, dir, name string, dns []string, ips []net.IP) (certPath, keyPath string, err error) {
	caPair, err := tls.LoadX509KeyPair(f.CACert, f.CAKey)
	if err != nil {
		return "", "", err
	}
	ca, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dns, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeKey(keyPath, key)
}

func serviceAccountKeys(pubPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(pubPath, "PUBLIC KEY", pub); err != nil {
		return err
	}
	return writeKey(keyPath, key)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, blockType string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
}
