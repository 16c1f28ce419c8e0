package main

import (
	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the whole story end to end on this machine, with no set-up",
		Long: `Run a self-contained demonstration on loopback: a local OAuth provider issues alice a real
grant, the grant is sealed in the embedded store, a local TLS API stands in for an app, and
an agent calls it through the sidecar. Each step checks what actually happened; the command
exits 0 only if every step behaved as expected.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "", "keep the demo's files here (default: a temporary directory, removed afterwards)")
	cmd.Flags().BoolVarP(&o.Verbose, "verbose", "v", false, "show the sidecar's operational logs")
	return cmd
}
