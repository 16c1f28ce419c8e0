package certs

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// verify checks that c verifies as a server certificate for name against a
// pool holding only ca.
func verify(t *testing.T, ca *CA, c *tls.Certificate, name string, at time.Time) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("parse chain: %v", err)
		}
		inter.AddCert(ic)
	}
	_, err := c.Leaf.Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Errorf("leaf for %s does not verify: %v", name, err)
	}
}

func TestLeafVerifies(t *testing.T) {
	ca := loadCA(t, InitOptions{})
	iss := NewIssuer(ca, IssuerOptions{})
	tests := []struct {
		host, verifyAs string
		ip             bool
		san            string // the DNS SAN, if not verifyAs
	}{
		{host: "api.example.com", verifyAs: "api.example.com", san: "*.example.com"},
		{host: "API.Example.COM.", verifyAs: "api.example.com", san: "*.example.com"},
		{host: "under_score.example.com", verifyAs: "under_score.example.com", san: "*.example.com"},
		{host: "a.b.example.com", verifyAs: "a.b.example.com", san: "*.b.example.com"},
		// No wildcard directly under a public suffix, ICANN's or a
		// private one, nor for an IDN label.
		{host: "example.com", verifyAs: "example.com"},
		{host: "shop.co.uk", verifyAs: "shop.co.uk"},
		{host: "someone.github.io", verifyAs: "someone.github.io"},
		{host: "xn--bcher-kva.example.com", verifyAs: "xn--bcher-kva.example.com"},
		{host: "localhost", verifyAs: "localhost"},
		{host: "127.0.0.1", verifyAs: "127.0.0.1", ip: true},
		{host: "::1", verifyAs: "::1", ip: true},
		{host: "[2001:db8::1]", verifyAs: "2001:db8::1", ip: true},
		{host: "::ffff:10.0.0.1", verifyAs: "10.0.0.1", ip: true},
		{host: strings.Repeat("a", 63) + ".example.com", verifyAs: strings.Repeat("a", 63) + ".example.com", san: "*.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			c, err := iss.Leaf(tt.host)
			if err != nil {
				t.Fatalf("Leaf(%q): %v", tt.host, err)
			}
			if c.Leaf == nil || len(c.Certificate) != 1 {
				t.Fatalf("Leaf(%q) has Leaf %v and chain of %d; want Leaf set and the leaf alone", tt.host, c.Leaf != nil, len(c.Certificate))
			}
			if string(c.Certificate[0]) != string(c.Leaf.Raw) {
				t.Errorf("chain[0] is not the Leaf field")
			}
			verify(t, ca, c, tt.verifyAs, time.Now())
			l := c.Leaf
			if tt.ip {
				if len(l.IPAddresses) != 1 || len(l.DNSNames) != 0 {
					t.Errorf("SANs = DNS %v IP %v; want one IP SAN", l.DNSNames, l.IPAddresses)
				}
			} else if san := cmp.Or(tt.san, tt.verifyAs); len(l.DNSNames) != 1 || l.DNSNames[0] != san || len(l.IPAddresses) != 0 {
				t.Errorf("SANs = DNS %v IP %v; want DNS %q", l.DNSNames, l.IPAddresses, san)
			}
			key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() {
				t.Errorf("leaf key is %T; want ECDSA P-256", c.PrivateKey)
			}
			if pub, ok := l.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
				t.Errorf("leaf certificate does not hold the leaf key")
			}
			if l.IsCA {
				t.Errorf("leaf is a CA")
			}
			if got := l.NotAfter.Sub(l.NotBefore); got != DefaultLeafValidity+leafBackdate {
				t.Errorf("leaf validity = %v; want %v", got, DefaultLeafValidity+leafBackdate)
			}
		})
	}
	// The same host in another spelling is the same cache entry.
	a, _ := iss.Leaf("api.example.com")
	b, _ := iss.Leaf("Api.Example.Com.")
	if a != b {
		t.Errorf("Leaf for two spellings of one host returned different certificates")
	}
}

func TestLeafWrongName(t *testing.T) {
	ca := loadCA(t, InitOptions{})
	iss := NewIssuer(ca, IssuerOptions{})
	c, err := iss.Leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	// The wildcard covers one label: not the parent, not a name below a
	// sibling, not another domain.
	for _, name := range []string{"example.com", "a.api.example.com", "api.example.org"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: poolOf(ca)}); err == nil {
			t.Errorf("leaf for api.example.com verifies for %s", name)
		}
	}
	exact, err := NewIssuer(ca, IssuerOptions{ExactNames: true}).Leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exact.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: poolOf(ca)}); err == nil {
		t.Errorf("exact leaf for api.example.com verifies for other.example.com")
	}
	otherCA := loadCA(t, InitOptions{})
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: poolOf(otherCA)}); err == nil {
		t.Errorf("leaf verifies against an unrelated CA")
	}
}

func poolOf(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}

// TestLeafTLSHandshake serves a leaf from GetCertificate to a real TLS
// client that trusts only the CA.
func TestLeafTLSHandshake(t *testing.T) {
	ca := loadCA(t, InitOptions{})
	iss := NewIssuer(ca, IssuerOptions{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return iss.Leaf(h.ServerName)
	}}
	srv.StartTLS()
	defer srv.Close()
	tr := &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: poolOf(ca), ServerName: "api.example.com"}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET over intercepted TLS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("body = %q; want %q", body, "ok")
	}
}

// TestLeafWildcardSiblings: the tenants of one service share one leaf and
// one signing; with ExactNames each has its own.
func TestLeafWildcardSiblings(t *testing.T) {
	ca := loadCA(t, InitOptions{})
	hosts := []string{"acme.atlassian.net", "globex.atlassian.net", "initech.atlassian.net"}
	for _, tt := range []struct {
		exact    bool
		signings uint64
	}{{false, 1}, {true, 3}} {
		iss := NewIssuer(ca, IssuerOptions{ExactNames: tt.exact})
		var first *tls.Certificate
		for _, h := range hosts {
			c, err := iss.Leaf(h)
			if err != nil {
				t.Fatalf("Leaf(%s): %v", h, err)
			}
			verify(t, ca, c, h, time.Now())
			if first == nil {
				first = c
			}
			if shared := c == first; shared == tt.exact && h != hosts[0] {
				t.Errorf("ExactNames %v: Leaf(%s) shared %v; want %v", tt.exact, h, shared, !tt.exact)
			}
		}
		if got := iss.Signings(); got != tt.signings {
			t.Errorf("ExactNames %v: Signings() = %d; want %d", tt.exact, got, tt.signings)
		}
	}
}

func TestLeafInvalidHost(t *testing.T) {
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{})
	for _, host := range []string{
		"", ".", "a..b", "exa mple.com", "evil.com,good.com", "*.example.com", "ex/ample.com",
		"fe80::1%eth0", "2130706434", "127.1", "0x7f000002", "example.0x1",
		strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "com", "ünicode.example",
	} {
		if _, err := iss.Leaf(host); !errors.Is(err, ErrInvalidHost) {
			t.Errorf("Leaf(%q) = %v; want ErrInvalidHost", host, err)
		}
	}
	if n := iss.Signings(); n != 0 {
		t.Errorf("Signings() = %d after invalid hosts; want 0", n)
	}
}

func TestLeafLRUEviction(t *testing.T) {
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{Capacity: 3})
	leaf := func(h string) *tls.Certificate {
		t.Helper()
		c, err := iss.Leaf(h)
		if err != nil {
			t.Fatalf("Leaf(%s): %v", h, err)
		}
		return c
	}
	a := leaf("a.test")
	leaf("b.test")
	leaf("c.test")
	if leaf("a.test") != a { // a becomes most recently used
		t.Errorf("cache hit returned a different certificate")
	}
	leaf("d.test") // evicts b, the least recently used
	if got := iss.Len(); got != 3 {
		t.Errorf("Len() = %d; want 3", got)
	}
	if got := iss.Signings(); got != 4 {
		t.Errorf("Signings() = %d; want 4", got)
	}
	leaf("a.test")
	leaf("c.test")
	leaf("d.test")
	if got := iss.Signings(); got != 4 {
		t.Errorf("Signings() after hits = %d; want 4", got)
	}
	leaf("b.test")
	if got := iss.Signings(); got != 5 {
		t.Errorf("Signings() after evicted host = %d; want 5", got)
	}
	if got := iss.Len(); got != 3 {
		t.Errorf("Len() = %d; want 3", got)
	}
}

func TestLeafSingleSigningConcurrent(t *testing.T) {
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{})
	const n = 100
	var wg sync.WaitGroup
	start := make(chan struct{})
	certs := make([]*tls.Certificate, n)
	errs := make([]error, n)
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			certs[g], errs[g] = iss.Leaf("new.example.com")
		}()
	}
	close(start)
	wg.Wait()
	for g := range n {
		if errs[g] != nil {
			t.Fatalf("goroutine %d: %v", g, errs[g])
		}
		if certs[g] != certs[0] {
			t.Errorf("goroutine %d got a different certificate", g)
		}
	}
	if got := iss.Signings(); got != 1 {
		t.Errorf("Signings() = %d; want 1", got)
	}
}

func TestLeafConcurrentManyHosts(t *testing.T) {
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{Capacity: 8})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				h := fmt.Sprintf("h%d.test", (g+i)%12)
				c, err := iss.Leaf(h)
				if err != nil || c.Leaf.DNSNames[0] != h {
					t.Errorf("Leaf(%s) = %v, %v", h, c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := iss.Len(); got > 8 {
		t.Errorf("Len() = %d; want at most the capacity 8", got)
	}
}

func TestLeafRenewal(t *testing.T) {
	ca := loadCA(t, InitOptions{})
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	iss := NewIssuer(ca, IssuerOptions{Now: clock})

	first, err := iss.Leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want, d := now.Add(-leafBackdate), first.Leaf.NotBefore.Sub(now.Add(-leafBackdate)); d > time.Second || d < -time.Second {
		t.Errorf("NotBefore = %v; want %v (backdated 1h)", first.Leaf.NotBefore, want)
	}
	advance(22*time.Hour + 59*time.Minute)
	if c, _ := iss.Leaf("api.example.com"); c != first {
		t.Errorf("leaf replaced 61 minutes before expiry; want the cached one")
	}
	advance(2 * time.Minute) // now within an hour of expiry
	second, err := iss.Leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatalf("leaf not renewed 59 minutes before expiry")
	}
	if got := iss.Signings(); got != 2 {
		t.Errorf("Signings() = %d; want 2", got)
	}
	if !second.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Errorf("renewed NotAfter %v not after old %v", second.Leaf.NotAfter, first.Leaf.NotAfter)
	}
	verify(t, ca, second, "api.example.com", clock())
	if c, _ := iss.Leaf("api.example.com"); c != second {
		t.Errorf("renewed leaf not cached")
	}
}

func TestLeafShortValidity(t *testing.T) {
	now := time.Now()
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{Validity: 30 * time.Minute, Now: func() time.Time { return now }})
	c, err := iss.Leaf("a.test")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Leaf.NotAfter.Sub(now); got > 30*time.Minute || got < 29*time.Minute {
		t.Errorf("leaf expires in %v; want 30m", got)
	}
	now = now.Add(10 * time.Minute)
	if c2, _ := iss.Leaf("a.test"); c2 != c {
		t.Errorf("30m leaf re-signed after 10m; want it cached until half its validity")
	}
	now = now.Add(6 * time.Minute)
	if c2, _ := iss.Leaf("a.test"); c2 == c {
		t.Errorf("30m leaf not re-signed after 16m")
	}
}

func TestLeafCappedByCAExpiry(t *testing.T) {
	ca := loadCA(t, InitOptions{Validity: 3 * time.Hour})
	now := time.Now()
	iss := NewIssuer(ca, IssuerOptions{Now: func() time.Time { return now }})
	c, err := iss.Leaf("a.test")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("leaf NotAfter = %v; want the CA's %v", c.Leaf.NotAfter, ca.Certificate().NotAfter)
	}
	now = now.Add(150 * time.Minute) // within an hour of the CA's end: keep the leaf
	if c2, _ := iss.Leaf("a.test"); c2 != c {
		t.Errorf("leaf re-signed although the CA ends first")
	}
	now = now.Add(time.Hour) // the CA has expired
	_, err = iss.Leaf("b.test")
	if !errors.Is(err, ErrInvalidCA) {
		t.Errorf("Leaf after CA expiry = %v; want ErrInvalidCA", err)
	}
	if _, err := iss.Leaf("a.test"); !errors.Is(err, ErrInvalidCA) {
		t.Errorf("cached Leaf after CA expiry = %v; want ErrInvalidCA", err)
	}
}

func TestNewIssuerDefaults(t *testing.T) {
	iss := NewIssuer(loadCA(t, InitOptions{}), IssuerOptions{Capacity: -1, Validity: -time.Hour})
	if iss.validity != DefaultLeafValidity || iss.renewMargin != renewBefore {
		t.Errorf("validity %v margin %v; want %v and %v", iss.validity, iss.renewMargin, DefaultLeafValidity, renewBefore)
	}
	for i := range DefaultCapacity + 5 {
		iss.cache.Add(fmt.Sprint(i), &leafEntry{})
	}
	if got := iss.Len(); got != DefaultCapacity {
		t.Errorf("Len() = %d; want the default capacity %d", got, DefaultCapacity)
	}
}

// BenchmarkMITMNewHost measures Leaf for a host not seen before. "exact":
// one signing with the Issuer's shared leaf key, which is made once per
// leafKeyRotation (so once here), plus the cache and single-flight
// bookkeeping (BenchmarkSignLeaf takes the signing apart). "sibling": the
// default, where a new tenant of a service whose wildcard is cached costs
// no signing.
func BenchmarkMITMNewHost(b *testing.B) {
	for _, bc := range []struct {
		name  string
		exact bool
	}{{"exact", true}, {"sibling", false}} {
		b.Run(bc.name, func(b *testing.B) {
			iss := NewIssuer(loadCA(b, InitOptions{}), IssuerOptions{ExactNames: bc.exact})
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := iss.Leaf("h" + strconv.Itoa(i) + ".example.com"); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkLeafCacheHit(b *testing.B) {
	iss := NewIssuer(loadCA(b, InitOptions{}), IssuerOptions{})
	if _, err := iss.Leaf("api.example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Leaf("api.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAgentVerifiesLeaf measures what an agent's Go client spends
// verifying the sidecar's certificate for one handshake, with the CA as its
// root: "leaf" as the Issuer presents it, "leaf+ca" with the CA in the
// chain as well, as it was presented before.
func BenchmarkAgentVerifiesLeaf(b *testing.B) {
	ca := loadCA(b, InitOptions{})
	c, err := NewIssuer(ca, IssuerOptions{}).Leaf("api.example.com")
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, bc := range []struct {
		name  string
		chain [][]byte
	}{{"leaf", c.Certificate}, {"leaf+ca", [][]byte{c.Certificate[0], ca.Certificate().Raw}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// What crypto/tls does with a server's Certificate
				// message: parse each, the rest are intermediates.
				certs := make([]*x509.Certificate, len(bc.chain))
				for i, der := range bc.chain {
					if certs[i], err = x509.ParseCertificate(der); err != nil {
						b.Fatal(err)
					}
				}
				inter := x509.NewCertPool()
				for _, ic := range certs[1:] {
					inter.AddCert(ic)
				}
				if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: roots, Intermediates: inter}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
