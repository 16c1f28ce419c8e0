package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestHelpShowsPlainBoolFlags walks every command's help: boolean flags
// render as --flag, not --flag[=true|false].
func TestHelpShowsPlainBoolFlags(t *testing.T) {
	root := newRootCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil {
			t.Fatalf("%s --help: %v", c.CommandPath(), err)
		}
		if strings.Contains(out.String(), "[=true|false]") {
			t.Errorf("%s --help shows [=true|false]:\n%s", c.CommandPath(), out.String())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	// The flags still parse as booleans.
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--check"}, {"--check=true"}, {"--check=false"}} {
		if err := serve.ParseFlags(args); err != nil {
			t.Errorf("serve %v: %v", args, err)
		}
	}
	if got, _ := serve.Flags().GetBool("check"); got {
		t.Errorf("after --check=false, check = %v; want false", got)
	}
}

func TestVersionCommand(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"onbehalf " + version, "commit", "go1."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output %q lacks %q", out.String(), want)
		}
	}
}

func TestAssertRefusesUserIDTheStoreRefuses(t *testing.T) {
	for _, sub := range []string{"alice smith", "../bob", "-alice", "al/ice"} {
		if got := run(context.Background(), []string{"assert", "--key", "unused.pem", "--iss", "https://o", "--aud", "a", "--sub", sub}); got != exitUsage {
			t.Errorf("assert --sub %q: exit %d; want %d", sub, got, exitUsage)
		}
	}
}
