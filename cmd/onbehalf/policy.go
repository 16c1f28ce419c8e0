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
		Use:   "test DIR...|FILE...",
		Short: "Run the Rego unit tests (test_* rules) in policy directories",
		Long: `Run the Rego unit tests (rules named test_*) with OPA's test runner.

Each DIR is a policy set of its own: it is compiled and tested apart from the other
directories, so several example policies that define the same package can be tested in one
command. FILE arguments are compiled together as one more set. Exits 1 when a test fails or a
set does not compile.`,
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
		Long: `Evaluate a policy once against an input document and print the decision as JSON.

Exit codes, for scripts: 0 the policy allowed; 1 it denied; 2 it could not decide (the query
is undefined for the input, the policy failed to load or evaluate) or the command was misused.
When the query is undefined, the message names the decision and allow rules the policy does
define, to pass with --query.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := evalPolicy(cmd, paths, inputPath, query)
			var se silentExit
			if err != nil && !errors.As(err, &se) {
				// Undefined, unloadable, unreadable or failed: exit 2, so a
				// script never reads it as a deny it can act on.
				return usageError{err}
			}
			return err
		},
	}
	eval.Flags().StringArrayVar(&paths, "policy", nil, "policy file or directory (repeatable)")
	eval.Flags().StringVar(&inputPath, "input", "", "input document (JSON)")
	eval.Flags().StringVar(&query, "query", "", "query (default data.onbehalf.authz.decision)")
	cmd.AddCommand(test, eval)
	return cmd
}

// evalPolicy is `policy eval`: it prints the decision and returns
// silentExit{exitError} on a deny.
func evalPolicy(cmd *cobra.Command, paths []string, inputPath, query string) error {
	if len(paths) == 0 || inputPath == "" {
		return errors.New("--policy and --input are required")
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
	if err := printJSON(cmd.OutOrStdout(), d); err != nil {
		return err
	}
	if !d.Allow {
		return silentExit{code: exitError}
	}
	return nil
}
