// Command onbehalf is the sidecar, its connect server and the tools around
// them. Each subcommand lives in its own file and only wires components
// together.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version and commit are set at build time with -ldflags "-X main.version=…
// -X main.commit=…" (make build stamps `git describe` and the commit).
var (
	version = "dev"
	commit  = ""
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	// exitUsage: bad flags or a configuration that does not validate.
	exitUsage = 2
)

// usageError marks errors that should exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// silentExit ends the command with code and prints nothing more: the
// command has already said what happened (policy eval's deny).
type silentExit struct{ code int }

func (e silentExit) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var se silentExit
	if errors.As(err, &se) {
		return se.code
	}
	fmt.Fprintln(os.Stderr, "onbehalf:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "onbehalf",
		Short: "Let AI agents act in real apps as a real person, without ever holding that person's secrets",
		Long: `onbehalf is a sidecar forward proxy beside an AI agent. For each outbound request it
identifies the acting user from a signed assertion, evaluates policy, fetches that user's
grant, injects the token and writes an audit record — the agent never sees a secret.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServeCmd(),
		newDemoCmd(),
		newAssertCmd(),
		newCACmd(),
		newGrantsCmd(),
		newAuditCmd(),
		newPolicyCmd(),
		newWebhookCmd(),
		newConnectServerCmd(),
		newConnectCmd(),
		newVersionCmd(),
	)
	plainBoolFlags(root)
	return root
}

// plainBoolFlags makes boolean flags render as `--check` in help texts.
// pflag v1.1.0 (which OPA requires) prints them as `--check[=true|false]`
// because their values report IsBoolFlag; a value that does not, with "true"
// as the no-option default, parses the same (`--check`, `--check=false`)
// and prints plainly.
func plainBoolFlags(cmd *cobra.Command) {
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.PersistentFlags()} {
		fs.VisitAll(func(f *pflag.Flag) {
			if _, wrapped := f.Value.(plainBool); !wrapped && f.Value.Type() == "bool" {
				f.Value = plainBool{f.Value}
				f.NoOptDefVal = "true"
			}
		})
	}
	for _, c := range cmd.Commands() {
		plainBoolFlags(c)
	}
}

// plainBool is a bool flag value without IsBoolFlag (see plainBoolFlags).
type plainBool struct{ pflag.Value }

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
