// Command agent is the smallest Go agent: it calls an API through the
// onbehalf sidecar with net/http. The proxy comes from HTTPS_PROXY and the
// sidecar's CA from ONBEHALF_CA; the agent holds no token, only the
// assertion naming the user it acts for.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agent URL [JSON-BODY]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(target string, rest []string) error {
	proxy, err := url.Parse(os.Getenv("HTTPS_PROXY"))
	if err != nil {
		return fmt.Errorf("HTTPS_PROXY: %w", err)
	}
	ca, err := os.ReadFile(os.Getenv("ONBEHALF_CA"))
	if err != nil {
		return fmt.Errorf("ONBEHALF_CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return fmt.Errorf("ONBEHALF_CA: no PEM certificate")
	}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			// http.ProxyFromEnvironment never proxies localhost; an agent
			// must send everything through the sidecar, so name it.
			Proxy:           http.ProxyURL(proxy),
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
	}

	method, body := http.MethodGet, io.Reader(nil)
	if len(rest) > 0 {
		method, body = http.MethodPost, strings.NewReader(rest[0])
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return err
	}
	req.Header.Set("Onbehalf-Assertion", os.Getenv("ONBEHALF_ASSERTION"))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(out, &e)
		return fmt.Errorf("HTTP %d %s", resp.StatusCode, e.Error)
	}
	return nil
}
