//go:build integration

package chartcheck

import (
	"bytes"
	"context"
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
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Timeouts for the test cluster. Start-up is slow on a loaded two-core
// machine: the API server builds its OpenAPI documents and RBAC roles
// before /readyz answers.
const (
	etcdStartTimeout      = time.Minute
	apiserverStartTimeout = 3 * time.Minute
	stopGrace             = 15 * time.Second
)

// serviceRange is the API server's Service cluster-IP range: not loopback,
// so any dial to a Service fails in the test's network namespace.
const serviceRange = "10.96.0.0/16"

// cluster is etcd and kube-apiserver on 127.0.0.1, and clients for it.
type cluster struct {
	dir        string
	kubeconfig string
	rest       *rest.Config
	client     kubernetes.Interface
	dynamic    dynamic.Interface
	mapper     *restmapper.DeferredDiscoveryRESTMapper
	// caPEM signs the API server's serving and client certificates.
	caPEM []byte
	// url is the API server's address.
	url string
}

// toolBin returns the binary named by env, else .cache/bin/name at the
// repository root (where make builds it).
func toolBin(t *testing.T, env, name, make string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join("..", "..", ".cache", "bin", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (build it with `make %s`, or set %s)", name, err, make, env)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// startCluster starts etcd (Debian's etcd-server) and the pinned
// kube-apiserver with client-certificate authentication and RBAC, and
// stops both when the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd: %v (apt-get install etcd-server)", err)
	}
	apiserverBin := toolBin(t, "ONBEHALF_KUBE_APISERVER_BIN", "kube-apiserver", "kube-apiserver")
	c := &cluster{dir: t.TempDir()}

	clientPort, peerPort := freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	startProcess(t, c.dir, "etcd", exec.Command(etcdBin,
		"--name", "chartcheck",
		"--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "chartcheck="+peerURL,
		"--log-level", "warn"))
	waitHTTP(t, http.DefaultClient, etcdURL+"/health", etcdStartTimeout, filepath.Join(c.dir, "etcd.log"))

	ca, caKey := newTestCA(t, "chartcheck cluster CA")
	c.caPEM = pemCert(ca)
	serving, servingKey := issue(t, ca, caKey, "kube-apiserver", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, x509.ExtKeyUsageServerAuth)
	admin, adminKey := issue(t, ca, caKey, "chartcheck-admin", []string{"system:masters"}, nil, x509.ExtKeyUsageClientAuth)
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ca.crt":      c.caPEM,
		"serving.crt": pemCert(serving), "serving.key": pemKey(t, servingKey),
		"admin.crt": pemCert(admin), "admin.key": pemKey(t, adminKey),
		"sa.key": pemKey(t, saKey), "sa.pub": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	port := freePort(t)
	c.url = "https://127.0.0.1:" + strconv.Itoa(port)
	startProcess(t, c.dir, "kube-apiserver", exec.Command(apiserverBin,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(c.dir, "serving.crt"), "--tls-private-key-file", filepath.Join(c.dir, "serving.key"),
		"--cert-dir", filepath.Join(c.dir, "certs"),
		"--client-ca-file", filepath.Join(c.dir, "ca.crt"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(c.dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(c.dir, "sa.key"),
		"--service-cluster-ip-range", serviceRange,
		"--authorization-mode", "RBAC",
		// The webhook, not the API server, refuses privileged agents.
		"--allow-privileged=true",
		// No "kubernetes" Service endpoints: its address is loopback.
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false"))

	cfg := &rest.Config{
		Host: c.url,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.caPEM, CertData: files["admin.crt"], KeyData: files["admin.key"],
		},
		QPS: 100, Burst: 200,
		// Never through a proxy from the environment.
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
	}
	c.rest = cfg
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, hc, c.url+"/readyz", apiserverStartTimeout, filepath.Join(c.dir, "kube-apiserver.log"))

	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if c.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.client.Discovery()))

	kc := clientcmdapi.NewConfig()
	kc.Clusters["chartcheck"] = &clientcmdapi.Cluster{Server: c.url, CertificateAuthorityData: c.caPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: files["admin.crt"], ClientKeyData: files["admin.key"]}
	kc.Contexts["chartcheck"] = &clientcmdapi.Context{Cluster: "chartcheck", AuthInfo: "admin"}
	kc.CurrentContext = "chartcheck"
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, c.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return c
}

// process is a started server process.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// stop sends SIGTERM and waits, then kills after stopGrace. It may be
// called more than once.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// startProcess starts cmd with its output in dir/name.log, and stops it
// when the test ends, printing the log's tail if the test failed. The
// process dies with the test binary.
func startProcess(t *testing.T, dir, name string, cmd *exec.Cmd) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cmd.Env == nil {
		cmd.Env = cleanEnv()
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(logPath, 40))
		}
	})
	return p
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, hc *http.Client, url string, timeout time.Duration, logPath string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body[:n]))
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s (last: %s)\n%s", url, timeout, last, tail(logPath, 40))
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return n
}

// newTestCA returns a self-signed ECDSA CA.
func newTestCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue signs a leaf certificate for cn (organisations orgs: Kubernetes
// groups) with the given IP SANs and usage.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, orgs []string, ips []net.IP, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// bearerStatus sends GET path to the API server with token and returns
// the status code.
func (c *cluster) bearerStatus(t *testing.T, path, token string) int {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, c.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
