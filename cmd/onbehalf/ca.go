package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/proxy/certs"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the interception CA",
		Args:  exactArgs(0),
	}
	var (
		dir, certPath, keyPath, name string
		validity                     time.Duration
		force, ifMissing             bool
	)
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the interception CA (ECDSA P-256)",
		Long: `Create the CA whose leaf certificates the sidecar presents inside intercepted tunnels.
Agents trust its certificate (ca.pem); its key (ca-key.pem, mode 0600) never leaves the
sidecar. Existing files are not overwritten unless --force is given.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if certPath == "" {
				certPath = filepath.Join(dir, "ca.pem")
			}
			if keyPath == "" {
				keyPath = filepath.Join(dir, "ca-key.pem")
			}
			if ifMissing {
				if _, err := certs.LoadCA(certPath, keyPath); err == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "CA already present: %s\n", certPath)
					return nil
				}
			}
			err := certs.InitCA(certPath, keyPath, certs.InitOptions{CommonName: name, Validity: validity, Force: force})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created CA certificate %s and key %s\n", certPath, keyPath)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", ".", "directory for ca.pem and ca-key.pem")
	initCmd.Flags().StringVar(&certPath, "cert", "", "certificate path (default DIR/ca.pem)")
	initCmd.Flags().StringVar(&keyPath, "key", "", "private key path (default DIR/ca-key.pem)")
	initCmd.Flags().StringVar(&name, "name", "", "certificate common name")
	initCmd.Flags().DurationVar(&validity, "validity", 0, "validity period (default 5 years)")
	initCmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	initCmd.Flags().BoolVar(&ifMissing, "if-missing", false, "do nothing when a valid CA is already there")
	cmd.AddCommand(initCmd)
	return cmd
}
