package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/webhook"
)

func newWebhookCmd() *cobra.Command {
	var (
		configPath string
		listen     string
		check      bool
	)
	cmd := &cobra.Command{
		Use:   "webhook --config FILE",
		Short: "Run the Kubernetes admission webhook that injects the sidecar",
		Long: `Run the mutating admission webhook that injects the onbehalf sidecar into pods annotated
onbehalf.dev/inject: "true". It serves POST /mutate and GET /healthz over TLS (the key pair
is re-read when its files change) and, on the admin listener, /healthz and /metrics.

Agent containers get HTTP(S)_PROXY pointing at the sidecar, the interception CA bundle and
the variables clients read it from; the pod's service-account token is removed from them.
The sidecar alone gets a projected token for Vault. The Helm chart in charts/onbehalf
installs and configures it.

Configuration comes from the YAML file, then ONBEHALF_* environment variables (for example
ONBEHALF_SIDECAR_IMAGE), then flags. A configuration problem exits with status 2 and lists
every problem with its key path. --check validates the configuration and loads the key
pair, then exits without serving.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError{errors.New("--config is required")}
			}
			cfg, err := webhook.Load(configPath, os.Environ(), func(c *webhook.Config) {
				if listen != "" {
					c.Listen = listen
				}
			})
			if err != nil {
				return usageError{configError{path: configPath, err: err}}
			}
			log, err := sidecar.NewLogger(sidecar.LogConfig{Level: cfg.Log.Level, Format: cfg.Log.Format})
			if err != nil {
				return usageError{err}
			}
			defer func() { _ = log.Sync() }()
			srv, err := webhook.NewServer(cfg, log.Named("webhook"))
			if err != nil {
				return err
			}
			if check {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: configuration and key pair are valid\n", configPath)
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&listen, "listen", "", "HTTPS listen address, overrides listen")
	cmd.Flags().BoolVar(&check, "check", false, "validate the configuration and key pair, then exit")
	return cmd
}
