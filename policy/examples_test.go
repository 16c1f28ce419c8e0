package policy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// examplesDir holds the example policy library, one policy per directory.
const examplesDir = "../examples/policies"

func exampleDirs(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(examplesDir)
	if err != nil {
		t.Fatalf("read examples: %v", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("no example policies under %s", examplesDir)
	}
	return dirs
}

// TestExamplePolicies runs every example's own Rego tests through Test.
func TestExamplePolicies(t *testing.T) {
	for _, name := range exampleDirs(t) {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			passed, err := Test(context.Background(), []string{filepath.Join(examplesDir, name)}, &out, true)
			if err != nil {
				t.Fatalf("Test: %v\n%s", err, out.String())
			}
			if !passed {
				t.Fatalf("Test passed = false; want true\n%s", out.String())
			}
			t.Log(out.String())
		})
	}
}
