package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestPolicyEvalExitCodes checks the exit codes scripts rely on: 0 allow,
// 1 deny, 2 undefined or error.
func TestPolicyEvalExitCodes(t *testing.T) {
	dir := t.TempDir()
	input := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	allowed := input("allowed.json", `{"attributes":{"request":{"http":{"method":"GET","host":"slack.com","path":"/api/x"}}},"subject":{"user":"alice"},"route":{"provider":"slack","host":"slack.com"}}`)
	denied := input("denied.json", `{"attributes":{"request":{"http":{"method":"GET","host":"slack.com","path":"/api/x"}}},"subject":{"user":""},"route":null}`)
	const policies = "../../examples/policies/"

	tests := []struct {
		name string
		args []string
		want int
	}{
		{"allow", []string{"--policy", policies + "default", "--input", allowed}, exitOK},
		{"deny", []string{"--policy", policies + "default", "--input", denied}, exitError},
		{"undefined query", []string{"--policy", policies + "envoy", "--input", allowed}, exitUsage},
		{"missing input file", []string{"--policy", policies + "default", "--input", filepath.Join(dir, "nope.json")}, exitUsage},
		{"no policy", []string{"--input", allowed}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(context.Background(), append([]string{"policy", "eval"}, tt.args...)); got != tt.want {
				t.Errorf("policy eval %v: exit %d; want %d", tt.args, got, tt.want)
			}
		})
	}
}
