package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/modules.txt from the current build")

// modulesFile lists every module linked into the production binary. It is
// checked in so that a new dependency is a visible change in review (in the
// spirit of tailscale's depaware): run `go test ./cmd/onbehalf -run
// TestProductionDependencies -update` after adding one on purpose.
const modulesFile = "testdata/modules.txt"

// forbiddenModules are test kits: none may be linked into the binary.
var forbiddenModules = []string{
	"github.com/ory/fosite",
	"github.com/stretchr/testify",
	"github.com/golang/mock",
	"go.uber.org/mock",
	"github.com/chromedp/chromedp",
	"github.com/chromedp/cdproto",
	"go.uber.org/goleak",
	"github.com/google/go-cmp",
}

// forbiddenPackages are standard-library and project test kits.
var forbiddenPackages = []string{
	"testing",
	"testing/",
	"net/http/httptest",
	"github.com/onbehalf-dev/onbehalf/internal/testkit",
}

// TestProductionDependencies fails when the production binary links a test
// kit, or a module that testdata/modules.txt does not list.
func TestProductionDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the binary's dependencies: %v", err)
	}
	list := func(format string) []string {
		cmd := exec.Command(gobin, "list", "-deps", "-f", format, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		var lines []string
		for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		slices.Sort(lines)
		return slices.Compact(lines)
	}

	// Packages: no test kit, not even "testing" through a library (OPA's
	// tester package links it for benchmarks; policy tests have their own
	// runner in package policy).
	for _, line := range list(`{{.ImportPath}} {{join .Imports " "}}`) {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, imp := range strings.Fields(imports) {
			for _, bad := range forbiddenPackages {
				hit := imp == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(imp, bad)) || strings.HasPrefix(imp, bad+"/")
				if !hit {
					continue
				}
				t.Errorf("the production binary links test package %s (imported by %s)", imp, pkg)
			}
		}
	}

	// Modules: none of the test kits, and exactly the checked-in list.
	mods := list(`{{with .Module}}{{.Path}}{{end}}`)
	for _, m := range mods {
		if slices.Contains(forbiddenModules, m) {
			t.Errorf("the production binary links test module %s", m)
		}
	}
	got := []byte(strings.Join(mods, "\n") + "\n")
	if *update {
		if err := os.WriteFile(modulesFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(filepath.FromSlash(modulesFile))
	if err != nil {
		t.Fatalf("read %s: %v (run with -update to create it)", modulesFile, err)
	}
	if !bytes.Equal(got, want) {
		wantMods := strings.Fields(string(want))
		for _, m := range mods {
			if !slices.Contains(wantMods, m) {
				t.Errorf("module %s is linked into the production binary but not listed in %s; if it is meant to be, run with -update", m, modulesFile)
			}
		}
		for _, m := range wantMods {
			if !slices.Contains(mods, m) {
				t.Errorf("module %s is listed in %s but no longer linked; run with -update", m, modulesFile)
			}
		}
	}
}
