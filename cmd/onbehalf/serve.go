package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
)

func newServeCmd() *cobra.Command {
	var (
		configPath string
		listen     string
		admin      string
		check      bool
	)
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the sidecar proxy",
		Long: `Run the sidecar: the proxy listener the agent sends HTTP(S) through, and the admin
listener (/healthz, /readyz, /metrics, /ca.pem).

--check validates the configuration, then loads every file it names (the interception CA,
identity keys, policy files, the store's key or Vault credential, the audit fingerprint key,
CA bundles, client secrets) without serving, and lists each one that is missing, unreadable
or unfit.

Configuration comes from the YAML file, then ONBEHALF_* environment variables (for example
ONBEHALF_PROXY_LISTEN), then flags. A configuration problem exits with status 2 and lists
every problem with its key path.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError{errors.New("--config is required")}
			}
			cfg, err := loadSidecarConfig(configPath, func(c *sidecar.Config) {
				if listen != "" {
					c.Proxy.Listen = listen
				}
				if cmd.Flags().Changed("admin-listen") {
					c.Admin.Listen = admin
				}
			})
			if err != nil {
				return err
			}
			if check {
				if err := sidecar.CheckFiles(cmd.Context(), cfg); err != nil {
					return usageError{fileError{path: configPath, err: err}}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "configuration %s is valid and every file it names loads: %s\n", configPath, cfg)
				return nil
			}
			sc, err := sidecar.New(cmd.Context(), cfg, sidecar.Options{Version: version})
			if err != nil {
				return err
			}
			return sc.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&listen, "listen", "", "proxy listen address, overrides proxy.listen")
	cmd.Flags().StringVar(&admin, "admin-listen", "", "admin listen address, overrides admin.listen (empty disables)")
	cmd.Flags().BoolVar(&check, "check", false, "validate the configuration and load every file it names, then exit (status 2 when something is wrong)")
	return cmd
}

// loadSidecarConfig loads and validates a sidecar config file, applying
// flag overrides between loading and validation.
func loadSidecarConfig(path string, flags func(*sidecar.Config)) (sidecar.Config, error) {
	cfg, err := sidecar.Load(path, os.Environ(), flags)
	if err != nil {
		return cfg, usageError{configError{path: path, err: err}}
	}
	return cfg, nil
}

// configError prints every configuration problem on its own line.
type configError struct {
	path string
	err  error
}

func (e configError) Error() string {
	return "invalid configuration " + e.path + ":\n  " + indent(e.err.Error())
}

func (e configError) Unwrap() error { return e.err }

// fileError prints every file of a valid configuration that cannot be
// loaded on its own line.
type fileError struct {
	path string
	err  error
}

func (e fileError) Error() string {
	return "configuration " + e.path + " names files that cannot be loaded:\n  " + indent(e.err.Error())
}

func (e fileError) Unwrap() error { return e.err }

func indent(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' {
			out = append(out, ' ', ' ')
		}
	}
	return string(out)
}
