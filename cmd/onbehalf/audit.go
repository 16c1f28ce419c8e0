package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/audit"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Work with the audit trail",
		Args:  exactArgs(0),
	}
	var expectHash string
	verify := &cobra.Command{
		Use:   "verify FILE... [--expect-last-hash HASH]",
		Short: "Verify an audit trail's hash chain",
		Long: `Check that every record's prev_hash matches the record before it, across rotated files
given oldest first. Exits 1 and names the first broken record when the chain does not hold:
a record edited, deleted or reordered, or a truncated line.

Records cut from the end of a trail leave a shorter chain that still holds: the files alone
cannot show it. Keep the last hash this command prints somewhere the sidecar cannot write
(a ticket, another system's log), and pass it later with --expect-last-hash: verify then
fails unless that record is still in the chain.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("at least one FILE is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := audit.VerifyWith(args, audit.VerifyOptions{ExpectHash: expectHash})
			if rep.Broken != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "BROKEN after %d intact records: %s\n", rep.Records, rep.Broken)
				return errors.New("audit chain broken")
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), summarize(rep))
			if expectHash != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "the expected record is in the chain, followed by %d record(s)\n", rep.After)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&expectHash, "expect-last-hash", "", "a last hash printed by an earlier verify: fail unless that record is still in the chain")
	cmd.AddCommand(verify)
	return cmd
}

// summarize describes an intact chain.
func summarize(rep audit.Report) string {
	s := fmt.Sprintf("ok: %d records in %d file(s), seq %d..%d, last hash %s", rep.Records, len(rep.Files), rep.FirstSeq, rep.LastSeq, rep.LastHash)
	if !rep.Anchored {
		s += " (the first record continues an earlier file that was not given)"
	}
	return s
}
