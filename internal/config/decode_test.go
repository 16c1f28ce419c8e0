package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type route struct {
	Host  string   `yaml:"host"`
	Paths []string `yaml:"paths"`
	Port  int      `yaml:"port"`
}

type inner struct {
	Path    string        `yaml:"path"`
	Timeout time.Duration `yaml:"timeout"`
}

type sample struct {
	Listen  string            `yaml:"listen"`
	Enabled bool              `yaml:"enabled"`
	Routes  []route           `yaml:"routes"`
	Store   inner             `yaml:"store"`
	Opt     *inner            `yaml:"opt"`
	Labels  map[string]string `yaml:"labels"`
	Allow   []string          `yaml:"allow"`
	Ratio   float64           `yaml:"ratio"`
}

func TestDecode(t *testing.T) {
	in := `
listen: 127.0.0.1:8080
enabled: true
routes:
  - host: api.example.com
    paths: [/v1/]
  - host: "*.example.org"
    port: 8443
store:
  timeout: 250ms
opt:
  path: /tmp/x
labels: {team: sec}
`
	got := sample{Store: inner{Path: "default.db", Timeout: time.Second}}
	if err := Decode([]byte(in), &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := sample{
		Listen:  "127.0.0.1:8080",
		Enabled: true,
		Routes:  []route{{Host: "api.example.com", Paths: []string{"/v1/"}}, {Host: "*.example.org", Port: 8443}},
		Store:   inner{Path: "default.db", Timeout: 250 * time.Millisecond},
		Opt:     &inner{Path: "/tmp/x"},
		Labels:  map[string]string{"team": "sec"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeReportsEveryProblemWithPath(t *testing.T) {
	in := `
listne: x
enabled: maybe
routes:
  - host: a
    prot: 1
  - host: [not, a, string]
store:
  timeout: 10
ratio: fast
`
	var s sample
	err := Decode([]byte(in), &s)
	if err == nil {
		t.Fatal("Decode: got nil error; want problems")
	}
	var got []string
	for _, e := range Flatten(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v is not a *FieldError", e)
		}
		got = append(got, fe.Path)
	}
	want := []string{"listne", "enabled", "routes[0].prot", "routes[1].host", "store.timeout", "ratio"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem paths (-want +got):\n%s\nfull error:\n%v", diff, err)
	}
	if msg := err.Error(); !strings.Contains(msg, `listne: unknown key (did you mean "listen"?)`) {
		t.Errorf("error %q does not suggest the near key", msg)
	}
}

func TestDecodeInvalidYAML(t *testing.T) {
	var s sample
	err := Decode([]byte("listen: [unclosed"), &s)
	if err == nil || !strings.Contains(err.Error(), "invalid YAML") {
		t.Fatalf("got %v; want an invalid YAML error", err)
	}
}

func TestDecodeDuplicateKey(t *testing.T) {
	var s sample
	if err := Decode([]byte("listen: a\nlisten: b\n"), &s); err == nil {
		t.Fatal("got nil error for a duplicated key; want an error")
	}
}

func TestApplyEnv(t *testing.T) {
	s := sample{Store: inner{Path: "x"}}
	env := []string{
		"ONBEHALF_LISTEN=0.0.0.0:1",
		"ONBEHALF_ENABLED=true",
		"ONBEHALF_STORE_TIMEOUT=3s",
		"ONBEHALF_OPT_PATH=/opt",
		"ONBEHALF_ALLOW=a, b,,c",
		"ONBEHALF_ASSERTION=ignored: NotConfigEnv lists it",
		"OTHER_LISTEN=not ours",
	}
	if err := ApplyEnv(&s, EnvPrefix, env); err != nil {
		t.Fatalf("ApplyEnv: %v", err)
	}
	want := sample{
		Listen: "0.0.0.0:1", Enabled: true,
		Store: inner{Path: "x", Timeout: 3 * time.Second},
		Opt:   &inner{Path: "/opt"},
		Allow: []string{"a", "b", "c"},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("ApplyEnv mismatch (-want +got):\n%s", diff)
	}
}

func TestApplyEnvBadValue(t *testing.T) {
	var s sample
	err := ApplyEnv(&s, EnvPrefix, []string{"ONBEHALF_ENABLED=perhaps", "ONBEHALF_STORE_TIMEOUT=soon"})
	if err == nil {
		t.Fatal("got nil error; want two problems")
	}
	if n := len(Flatten(err)); n != 2 {
		t.Errorf("got %d problems; want 2: %v", n, err)
	}
	if !strings.Contains(err.Error(), "store.timeout: from ONBEHALF_STORE_TIMEOUT") {
		t.Errorf("error %q does not name the path and variable", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("listen: a\nstore: {path: p}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := Load(path, &s, []string{"ONBEHALF_LISTEN=b"}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if s.Listen != "b" || s.Store.Path != "p" {
		t.Errorf("got listen=%q store.path=%q; want b and p", s.Listen, s.Store.Path)
	}
	if err := Load(filepath.Join(dir, "missing.yaml"), &s, nil); err == nil {
		t.Error("Load of a missing file: got nil error")
	}
}

func TestProblemsPrefix(t *testing.T) {
	var p Problems
	p.Add("routes[2]", errors.Join(Errorf("host", "required"), errors.New("plain")))
	p.Add("store", Errorf("[0]", "bad"))
	got := p.Err().Error()
	want := "routes[2].host: required\nroutes[2]: plain\nstore[0]: bad"
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("listen: a\nroutes: [{host: b, paths: [/x]}]\n"))
	f.Add([]byte("store: {timeout: 1s}\nopt: null\nlabels: {a: b}\n"))
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"))
	f.Add([]byte("- not a map"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sample
		err := Decode(data, &s)
		if err == nil {
			return
		}
		for _, e := range Flatten(err) {
			var fe *FieldError
			if !errors.As(e, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", e, e)
			}
		}
	})
}

type defaulted struct {
	A string `yaml:"a"`
	B int    `yaml:"b"`
}

func (d *defaulted) SetDefaults() { d.B = 7 }

func TestDecodeDefaultsForNewEntries(t *testing.T) {
	var got struct {
		M map[string]defaulted `yaml:"m"`
		P *defaulted           `yaml:"p"`
		L []defaulted          `yaml:"l"`
	}
	if err := Decode([]byte("m: {x: {a: one}, y: {b: 2}}\np: {a: three}\nl: [{a: four}, {b: 5}]\n"), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]defaulted{{A: "four", B: 7}, {B: 5}}, got.L); diff != "" {
		t.Errorf("list items (-want +got):\n%s", diff)
	}
	want := map[string]defaulted{"x": {A: "one", B: 7}, "y": {B: 2}}
	if diff := cmp.Diff(want, got.M); diff != "" {
		t.Errorf("map entries (-want +got):\n%s", diff)
	}
	if got.P == nil || *got.P != (defaulted{A: "three", B: 7}) {
		t.Errorf("pointer = %+v; want defaults under the decoded keys", got.P)
	}
}

// TestDecodeSyntaxErrorLine: a YAML syntax error names the line the problem
// is on, not the line where the construct around it began (yaml.v3 says
// "line 5" for each of the first three).
func TestDecodeSyntaxErrorLine(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      string
	}{
		{"bad indentation", "proxy:\n  listen: 127.0.0.1:8080\n  limits:\n    x: 1\n  unrouted: refuse\n bad: 1\n", "invalid YAML at line 6: did not find expected key"},
		{"tab", "a: 1\nb: 2\n\tc: 3\n", "invalid YAML at line 3: found a tab character that violates indentation"},
		{"key in a list", "a:\n  - x\n  y: 1\n", "invalid YAML at line 3: did not find expected '-' indicator"},
		{"unclosed flow list", "a: 1\nb: 2\nc: [1, 2\nd: 4\n", "invalid YAML at line 3: did not find expected ',' or ']'"},
		{"mapping in a value", "a: 1\nb: 2\nc: d: e\n", "invalid YAML at line 3: mapping values are not allowed in this context"},
		{"list item in a mapping", "a: 1\n- b\n", "invalid YAML at line 2: did not find expected key"},
		{"unterminated quote", "a: 1\nb: 2\nc: \"open\nd: 3\n", "invalid YAML at line 3: found unexpected end of stream"},
		{"multi-line quote before the error", "a: \"one\n  two\"\nb: 1\n c: 2\n", "invalid YAML at line 4: mapping values are not allowed in this context"},
		{"no final newline", "a: 1\n- b", "invalid YAML at line 2: did not find expected key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s map[string]any
			err := Decode([]byte(tc.doc), &s)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v; want %s", err, tc.want)
			}
		})
	}
}

// TestApplyEnvUnknownVariable: an ONBEHALF_* variable that names no key is
// a problem with the nearest name suggested; the variables NotConfigEnv
// lists are left alone.
func TestApplyEnvUnknownVariable(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		want      string // "" = no problem
	}{
		{"typo", "ONBEHALF_LISTNE=x", "environment variable ONBEHALF_LISTNE matches no configuration key (did you mean ONBEHALF_LISTEN?); unset it or correct its name"},
		{"nested typo", "ONBEHALF_STORE_TIMOUT=1s", "(did you mean ONBEHALF_STORE_TIMEOUT?)"},
		{"wrong section", "ONBEHALF_PROXY_RATIO=1", "(did you mean ONBEHALF_RATIO?)"},
		{"ambiguous wrong section", "ONBEHALF_PROXY_TIMEOUT=1s", "matches no configuration key; unset it"},
		{"nothing near", "ONBEHALF_COMPLETELY_DIFFERENT=1", "environment variable ONBEHALF_COMPLETELY_DIFFERENT matches no configuration key; unset it"},
		{"inside a list of sections", "ONBEHALF_ROUTES_HOST=x", "matches no configuration key"},
		{"the agents' CA", "ONBEHALF_CA=/ca.pem", ""},
		{"the binary under test", "ONBEHALF_BIN=/bin/onbehalf", ""},
		{"another prefix", "OTHER_LISTNE=x", ""},
		{"kubernetes service host", "ONBEHALF_CONNECT_SERVICE_HOST=10.96.0.12", ""},
		{"kubernetes service port", "ONBEHALF_CONNECT_SERVICE_PORT=80", ""},
		{"kubernetes named service port", "ONBEHALF_WEBHOOK_SERVICE_PORT_HTTPS=443", ""},
		{"kubernetes docker link", "ONBEHALF_CONNECT_PORT=tcp://10.96.0.12:80", ""},
		{"kubernetes docker link port", "ONBEHALF_CONNECT_PORT_80_TCP=tcp://10.96.0.12:80", ""},
		{"kubernetes docker link proto", "ONBEHALF_CONNECT_PORT_80_TCP_PROTO=tcp", ""},
		{"kubernetes docker link addr", "ONBEHALF_CONNECT_PORT_80_TCP_ADDR=fd00::12", ""},
		{"kubernetes-shaped name, other value", "ONBEHALF_PROXY_PORT=8080x", "matches no configuration key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := ApplyEnv(&s, EnvPrefix, []string{tc.env})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v; want no problem", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v; want a problem containing %q", err, tc.want)
			}
		})
	}
}
