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
	var (
		expectHash, fromHash string
		trails               bool
	)
	verify := &cobra.Command{
		Use:   "verify FILE... [--expect-last-hash HASH] [--from-hash HASH] | --trails FILE",
		Short: "Verify an audit trail's hash chain",
		Long: `Check that every record's prev_hash matches the record before it, across rotated files
given oldest first. Exits 1 and names the first broken record when the chain does not hold:
a record edited, deleted or reordered, or a truncated line.

Records cut from the end of a trail leave a shorter chain that still holds: the files alone
cannot show it. Keep the last hash this command prints somewhere the sidecar cannot write
(a ticket, another system's log), and pass it later with --expect-last-hash: verify then
fails unless that record is still in the chain.

A trail must start where a chain starts (seq 1) or where a rotated file starts (every file after
the first begins with a rotate record, so a set whose oldest files rotation dropped still
verifies). A file that starts anywhere else lost its first records, and verify says so. To check
a trail known to start mid-chain (an excerpt, or files written before rotate records existed),
pass the hash of the record just before its first one with --from-hash.

Processes other than the sidecar that holds the audit file (grant changes from the command line,
a connect server on the same host) write to trails of their own beside it, each its own chain:
audit.cli.log, audit.connect.log. --trails FILE verifies every trail of FILE, each with its
rotated files, and names each.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("at least one FILE is required")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if trails {
				if len(args) != 1 || expectHash != "" || fromHash != "" {
					return usageError{errors.New("--trails takes one FILE, and neither --expect-last-hash nor --from-hash")}
				}
				return verifyTrails(cmd, args[0])
			}
			rep, err := audit.VerifyWith(args, audit.VerifyOptions{ExpectHash: expectHash, FromHash: fromHash})
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
	verify.Flags().StringVar(&fromHash, "from-hash", "", "the hash of the record just before the first one given: the trail must continue from it")
	verify.Flags().BoolVar(&trails, "trails", false, "verify every trail of FILE (its own and each other writer's beside it), each as its own chain")
	cmd.AddCommand(verify)
	return cmd
}

// verifyTrails verifies each trail of base on its own and prints a line
// for each; it fails when any is broken.
func verifyTrails(cmd *cobra.Command, base string) error {
	sets, err := audit.Trails(base)
	if err != nil {
		return err
	}
	broken := 0
	for _, files := range sets {
		rep, err := audit.Verify(files)
		name := files[len(files)-1]
		switch {
		case rep.Broken != nil:
			broken++
			fmt.Fprintf(cmd.OutOrStdout(), "%s: BROKEN after %d intact records: %s\n", name, rep.Records, rep.Broken)
		case err != nil:
			return err
		default:
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", name, summarize(rep))
		}
	}
	if broken > 0 {
		return fmt.Errorf("%d of %d audit trails broken", broken, len(sets))
	}
	return nil
}

// summarize describes an intact chain.
func summarize(rep audit.Report) string {
	s := fmt.Sprintf("ok: %d records in %d file(s), seq %d..%d, last hash %s", rep.Records, len(rep.Files), rep.FirstSeq, rep.LastSeq, rep.LastHash)
	switch rep.Start {
	case audit.StartRotation:
		s += " (starts at a rotated file: the files before it are no longer given)"
	case audit.StartFromHash:
		s += " (continues from the --from-hash record)"
	}
	return s
}
