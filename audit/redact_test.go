package audit

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestRedactQuery(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a=1&b=2", "a=1&b=2"},
		{"access_token=abc", "access_token=REDACTED"},
		{"a=1&refresh_token=abc&b=2", "a=1&refresh_token=REDACTED&b=2"},
		{"code=xyz&state=s1", "code=REDACTED&state=s1"},
		{"id_token=a&client_secret=b&assertion=c&token=d", "id_token=REDACTED&client_secret=REDACTED&assertion=REDACTED&token=REDACTED"},
		{"ACCESS_TOKEN=abc", "ACCESS_TOKEN=REDACTED"},
		{"access%5Ftoken=abc", "access%5Ftoken=REDACTED"},
		{"X-Amz-Security-Token=abc&X-Amz-Signature=def&X-Amz-Date=1", "X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Date=1"},
		{"subject_token=abc&my_secret=x&key=k", "subject_token=REDACTED&my_secret=REDACTED&key=REDACTED"},
		{"a=1;token=abc;b=2", "a=1;token=REDACTED;b=2"},
		{"token=a&token=b", "token=REDACTED&token=REDACTED"},
		{"token", "token"}, // no value to hide
		{"token=", "token=REDACTED"},
		{"q=token&x=secret", "q=token&x=secret"}, // values are not names
		{"&&access_token=a&", "&&access_token=REDACTED&"},
		{"a=%zz&code=1", "a=%zz&code=REDACTED"},
		{"encoded=%20x%2B&code=a%20b", "encoded=%20x%2B&code=REDACTED"},
		{"codec=h264&zipcode=1", "codec=h264&zipcode=1"},
	}
	for _, tt := range tests {
		if got := RedactQuery(tt.in); got != tt.want {
			t.Errorf("RedactQuery(%q): got %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"/api/x", "/api/x"},
		{"/api/x?a=1", "/api/x?a=1"},
		{"/api/x?access_token=abc&a=1", "/api/x?access_token=REDACTED&a=1"},
		{"/cb#access_token=abc&state=s", "/cb#access_token=REDACTED&state=s"},
		{"/cb?code=c#id_token=t", "/cb?code=REDACTED#id_token=REDACTED"},
		{"/p?x=1#frag", "/p?x=1#frag"},
		{"?", "?"},
	}
	for _, tt := range tests {
		if got := RedactPath(tt.in); got != tt.want {
			t.Errorf("RedactPath(%q): got %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://api.example.com/v1/x?a=1", "https://api.example.com/v1/x?a=1"},
		{"https://api.example.com/v1/x?access_token=abc&a=1", "https://api.example.com/v1/x?access_token=REDACTED&a=1"},
		{"https://user:pass@example.com/", "https://REDACTED@example.com/"},
		{"https://ghp_tokenasuser@github.com/x.git", "https://REDACTED@github.com/x.git"},
		{"https://app.example/cb#access_token=abc&token_type=bearer", "https://app.example/cb#access_token=REDACTED&token_type=REDACTED"},
		{"https://app.example/doc#section-2", "https://app.example/doc#section-2"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		orig := u.String()
		if got := RedactURL(u); got != tt.want {
			t.Errorf("RedactURL(%q): got %q; want %q", tt.in, got, tt.want)
		}
		if u.String() != orig {
			t.Errorf("RedactURL modified its argument: %q became %q", orig, u.String())
		}
	}
	if got := RedactURL(nil); got != "" {
		t.Errorf("RedactURL(nil): got %q; want empty", got)
	}
}

// encodeObject renders an ObjectMarshaler with zap's JSON encoder.
func encodeObject(t *testing.T, key string, m zapcore.ObjectMarshaler) string {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{SkipLineEnding: true})
	buf, err := enc.EncodeEntry(zapcore.Entry{}, []zapcore.Field{zap.Object(key, m)})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Free()
	return buf.String()
}

func TestHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer s1")
	h.Set("Proxy-Authorization", "Basic s2")
	h.Set("Cookie", "session=s3")
	h.Set("Set-Cookie", "id=s4")
	h.Set("Onbehalf-Assertion", "eyJs5")
	h.Set("X-Api-Key", "s6")
	h.Set("X-Auth-Token", "s7")
	h.Set("X-Client-Secret", "s8")
	h.Set("Private-Token", "s9")
	h.Set("Content-Type", "application/json")
	h.Add("Accept", "a/b")
	h.Add("Accept", "c/d")
	got := encodeObject(t, "headers", Headers(h))
	want := `{"headers":{"Accept":["a/b","c/d"],"Authorization":"REDACTED","Content-Type":"application/json",` +
		`"Cookie":"REDACTED","Onbehalf-Assertion":"REDACTED","Private-Token":"REDACTED","Proxy-Authorization":"REDACTED",` +
		`"Set-Cookie":"REDACTED","X-Api-Key":"REDACTED","X-Auth-Token":"REDACTED","X-Client-Secret":"REDACTED"}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestRedactorConfiguredHeaders(t *testing.T) {
	r := NewRedactor("X-Agent-Identity", "x-slack-credential-header")
	h := http.Header{"X-Agent-Identity": {"jwt-s1"}, "X-Slack-Credential-Header": {"s2"}, "X-Request-Id": {"r1"}}
	got := encodeObject(t, "h", r.Headers(h))
	want := `{"h":{"X-Agent-Identity":"REDACTED","X-Request-Id":"r1","X-Slack-Credential-Header":"REDACTED"}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for _, name := range []string{"authorization", "X-AUTH-TOKEN", "x-goog-api-key", "X-Amz-Security-Token"} {
		if !r.Sensitive(name) {
			t.Errorf("Sensitive(%q): got false; want true", name)
		}
	}
	for _, name := range []string{"Content-Type", "X-Request-Id", "Accept"} {
		if r.Sensitive(name) {
			t.Errorf("Sensitive(%q): got true; want false", name)
		}
	}
}

func TestRedactNoAllocWithoutSecrets(t *testing.T) {
	p := "/api/chat.postMessage?channel=C1&x=2"
	if n := testing.AllocsPerRun(100, func() { _ = RedactPath(p) }); n != 0 {
		t.Errorf("RedactPath without secrets: got %v allocations; want 0", n)
	}
}

// canary is a fake secret with a distinctive core; nothing of it may show
// in any output.
const (
	canary     = "ya29.CANARY-q7Zx-secret-token-k3Pv"
	canaryCore = "CANARY-q7Zx"
)

// TestNoSecretInAnyOutput pushes canary tokens through every field and
// helper that might carry them, on success and failure paths, and greps
// every output: audit records (stdout and file), the operational log and
// error texts.
func TestNoSecretInAnyOutput(t *testing.T) {
	dir := t.TempDir()
	var stdout, oplog syncBuffer
	logger := jsonLogger(&oplog)
	cfg := fileConfig(dir, DurabilityWrite)
	cfg.Sink = SinkBoth
	cfg.FingerprintKeyFile = dir + "/fp.key"
	a := newAuditor(t, cfg, Options{Stdout: &stdout, Logger: logger})

	paths := []string{
		"/api/x?access_token=" + canary,
		"/api/x?refresh_token=" + url.QueryEscape(canary) + "&a=1",
		"/oauth/callback?code=" + canary + "&state=s",
		"/x?client_secret=" + canary,
		"/x?id_token=" + canary,
		"/x?assertion=" + canary,
		"/x?token=" + canary,
		"/cb#access_token=" + canary,
	}
	var errTexts []string
	for i, p := range paths {
		r := sampleRecord(i)
		r.Path = p
		r.TokenFingerprint = a.Fingerprinter().Token(canary)
		if err := a.Write(r); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	// Failure path: a sink refusing records must not echo them.
	bad := DefaultConfig()
	bad.Sink, bad.File.Path = SinkFile, "/dev/full"
	b := newAuditor(t, bad, Options{Logger: logger})
	r := sampleRecord(99)
	r.Path = "/x?access_token=" + canary
	if err := b.Write(r); err == nil {
		t.Fatal("Write to /dev/full: got nil; want an error")
	} else {
		errTexts = append(errTexts, err.Error())
	}
	errTexts = append(errTexts, b.Healthy().Error())

	// Operational logging through the helpers.
	h := http.Header{}
	h.Set("Authorization", "Bearer "+canary)
	h.Set("Proxy-Authorization", "Bearer "+canary)
	h.Set("Onbehalf-Assertion", canary)
	h.Set("Cookie", "s="+canary)
	h.Set("X-Refresh-Token", canary)
	u, _ := url.Parse("https://user:" + canary + "@api.example.com/x?access_token=" + canary + "#id_token=" + canary)
	logger.Info("request",
		RedactedHeaders("headers", h),
		RedactedURL("url", u),
		RedactedPath("path", "/x?code="+canary),
		RedactedQuery("query", "client_secret="+canary),
		zap.Object("record", sampleRecordWithPath("/x?access_token="+canary)),
	)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	file := string(readFile(t, cfg.File.Path))
	outputs := map[string]string{
		"stdout":          stdout.String(),
		"audit file":      file,
		"operational log": oplog.String(),
		"errors":          strings.Join(errTexts, "\n"),
	}
	for where, text := range outputs {
		if where != "errors" && text == "" {
			t.Errorf("%s is empty; the test wrote nothing there", where)
		}
		mustContainNone(t, where, text, canary, canaryCore, url.QueryEscape(canary))
	}
	if !strings.Contains(file, "REDACTED") || !strings.Contains(oplog.String(), "REDACTED") {
		t.Error("outputs carry no REDACTED marker; the test is not exercising redaction")
	}
}

func sampleRecordWithPath(p string) *Record {
	r := sampleRecord(0)
	r.Path = p
	return r
}

func TestRecordMarshalsThroughZap(t *testing.T) {
	r := sampleRecordWithPath("/x?access_token=" + canary)
	got := encodeObject(t, "record", r)
	if strings.Contains(got, canaryCore) || !strings.Contains(got, "access_token=REDACTED") {
		t.Errorf("got %s; want the path redacted", got)
	}
	if strings.Contains(got, "prev_hash") {
		t.Errorf("got %s; want no chain fields outside the Auditor", got)
	}
	if !strings.Contains(got, `"user":"alice"`) {
		t.Errorf("got %s; want the user", got)
	}
}
