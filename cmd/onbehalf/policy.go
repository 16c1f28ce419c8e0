package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/policy"
)

// maxInputFile bounds a policy input file for `policy eval`.
const maxInputFile = 16 << 20

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Test and evaluate Rego policies",
		Args:  exactArgs(0),
	}
	var verbose bool
	test := &cobra.Command{
		Use:   "test DIR...",
		Short: "Run the Rego unit tests (test_* rules) in policy directories",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("at least one DIR is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			passed, err := policy.Test(cmd.Context(), args, cmd.OutOrStdout(), verbose)
			if err != nil {
				return err
			}
			if !passed {
				return errors.New("policy tests failed")
			}
			return nil
		},
	}
	test.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every test")

	var (
		paths     []string
		inputPath string
		query     string
	)
	eval := &cobra.Command{
		Use:   "eval --policy DIR --input FILE",
		Short: "Print the decision a policy makes for an input document",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(paths) == 0 || inputPath == "" {
				return usageError{errors.New("--policy and --input are required")}
			}
			st, err := os.Stat(inputPath)
			if err != nil {
				return err
			}
			if st.Size() > maxInputFile {
				return fmt.Errorf("%s: larger than %d bytes", inputPath, maxInputFile)
			}
			input, err := os.ReadFile(inputPath)
			if err != nil {
				return err
			}
			cfg := policy.DefaultConfig()
			cfg.Paths = paths
			cfg.Watch = false
			if query != "" {
				cfg.Query = query
			}
			d, err := policy.EvalFile(cmd.Context(), cfg, input)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), d)
		},
	}
	eval.Flags().StringArrayVar(&paths, "policy", nil, "policy file or directory (repeatable)")
	eval.Flags().StringVar(&inputPath, "input", "", "input document (JSON)")
	eval.Flags().StringVar(&query, "query", "", "query (default data.onbehalf.authz.decision)")
	cmd.AddCommand(test, eval)
	return cmd
}
