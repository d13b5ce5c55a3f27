package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// writePKI makes the lab's certificates. The CA and the service-account key are
// kept across restarts (so issued tokens and copied kubeconfigs stay valid);
// leaf certificates are made anew each time, because their SANs depend on flags.
func writePKI(dir string, bind net.IP, port int) error {
	pki := filepath.Join(dir, "pki")
	caCert, caKey, err := loadOrCreateCA(pki)
	if err != nil {
		return err
	}
	saKey, err := loadOrCreateKey(filepath.Join(pki, "sa.key"))
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}

	serving := leaf{
		name: "apiserver", cn: "kube-apiserver",
		dns:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips:    []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), bind, net.ParseIP("198.19.128.1"), net.ParseIP("2001:db8:5::1")},
		server: true,
	}
	clients := []leaf{
		{name: "admin", cn: "kubernetes-admin", org: "system:masters"},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", org: "system:masters"},
	}
	for _, l := range append([]leaf{serving}, clients...) {
		if err := l.write(pki, caCert, caKey); err != nil {
			return fmt.Errorf("%s certificate: %w", l.name, err)
		}
	}
	server := fmt.Sprintf("https://%s", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
	for _, l := range clients[:3] {
		if err := writeKubeconfig(filepath.Join(dir, l.name+".kubeconfig"), server, pki, l.name); err != nil {
			return err
		}
	}
	// The same admin identity, addressed the way processes in other network
	// namespaces reach the API server: through the management address.
	return writeKubeconfig(filepath.Join(dir, "admin-mgmt.kubeconfig"),
		fmt.Sprintf("https://%s", net.JoinHostPort(bind.String(), fmt.Sprint(port))), pki, "admin")
}

type leaf struct {
	name, cn, org string
	dns           []string
	ips           []net.IP
	server        bool
}

func (l leaf) write(pki string, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	subj := pkix.Name{CommonName: l.cn}
	if l.org != "" {
		subj.Organization = []string{l.org}
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if l.server {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      subj,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, l.name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(pki, l.name+".key"), "EC PRIVATE KEY", kder)
}

func loadOrCreateCA(pki string) (*x509.Certificate, crypto.Signer, error) {
	key, err := loadOrCreateKey(filepath.Join(pki, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	certPath := filepath.Join(pki, "ca.crt")
	if b, err := os.ReadFile(certPath); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && time.Now().Before(c.NotAfter.Add(-24*time.Hour)) {
				return c, key, nil
			}
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ferrolb-lab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not PEM", path)
		}
		return x509.ParseECPrivateKey(blk.Bytes)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return key, writePEM(path, "EC PRIVATE KEY", der)
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return pool, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

func writeKubeconfig(path, server, pki, name string) error {
	read := func(f string) (string, error) {
		b, err := os.ReadFile(filepath.Join(pki, f))
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	crt, err := read(name + ".crt")
	if err != nil {
		return err
	}
	key, err := read(name + ".key")
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ferrolb-lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: ferrolb-lab
  context:
    cluster: ferrolb-lab
    user: %s
current-context: ferrolb-lab
`, server, ca, name, crt, key, name)
	return os.WriteFile(path, []byte(body), 0o600)
}
