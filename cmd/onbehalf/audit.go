package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// progressInterval is how often `audit verify` redraws its progress line:
// often enough to look alive, rarely enough not to flicker.
const progressInterval = 200 * time.Millisecond

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Work with the audit trail",
		Args:  exactArgs(0),
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditShowCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var (
		expectHash, fromHash string
		trails               bool
	)
	verify := &cobra.Command{
		Use:   "verify FILE... [--expect-last-hash HASH] [--from-hash HASH] | --trails FILE",
		Short: "Verify an audit trail's hash chain",
		Long: `Check that every record's prev_hash matches the record before it, across rotated files
given oldest first. Exits 1 and names the first broken record when the chain does not hold:
a record edited, deleted or reordered, or a truncated line. On a terminal it shows its
progress; it ends with a one-line summary.

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
		Args: minArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trails {
				if len(args) != 1 || expectHash != "" || fromHash != "" {
					return usageError{errors.New("--trails takes one FILE, and neither --expect-last-hash nor --from-hash")}
				}
				return verifyTrails(cmd, args[0])
			}
			out := cmd.OutOrStdout()
			opts := audit.VerifyOptions{ExpectHash: expectHash, FromHash: fromHash}
			bar := newProgressLine(out)
			if bar != nil {
				opts.Progress = bar.show
			}
			start := time.Now()
			rep, err := audit.VerifyWith(args, opts)
			bar.clear()
			if rep.Broken != nil {
				fmt.Fprintf(out, "BROKEN after %d intact records: %s\n", rep.Records, rep.Broken)
				return errors.New("audit chain broken")
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(out, summarize(rep, expectHash != "", time.Since(start)))
			return nil
		},
	}
	verify.Flags().StringVar(&expectHash, "expect-last-hash", "", "a last hash printed by an earlier verify: fail unless that record is still in the chain")
	verify.Flags().StringVar(&fromHash, "from-hash", "", "the hash of the record just before the first one given: the trail must continue from it")
	verify.Flags().BoolVar(&trails, "trails", false, "verify every trail of FILE (its own and each other writer's beside it), each as its own chain")
	return verify
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
		start := time.Now()
		rep, err := audit.Verify(files)
		name := files[len(files)-1]
		switch {
		case rep.Broken != nil:
			broken++
			fmt.Fprintf(cmd.OutOrStdout(), "%s: BROKEN after %d intact records: %s\n", name, rep.Records, rep.Broken)
		case err != nil:
			return err
		default:
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", name, summarize(rep, false, time.Since(start)))
		}
	}
	if broken > 0 {
		return fmt.Errorf("%d of %d audit trails broken", broken, len(sets))
	}
	return nil
}

// summarize describes an intact chain in one line.
func summarize(rep audit.Report, expected bool, took time.Duration) string {
	s := fmt.Sprintf("ok: %d records in %d file(s), seq %d..%d, last hash %s (%s)", rep.Records, len(rep.Files), rep.FirstSeq, rep.LastSeq, rep.LastHash, took.Round(time.Millisecond))
	switch rep.Start {
	case audit.StartRotation:
		s += "; starts at a rotated file: the files before it are no longer given"
	case audit.StartFromHash:
		s += "; continues from the --from-hash record"
	}
	if expected {
		s += fmt.Sprintf("; the expected record is in the chain, followed by %d record(s)", rep.After)
	}
	return s
}

// progressLine redraws one line on a terminal with how far a long
// operation has come. A nil *progressLine draws nothing.
type progressLine struct {
	w    io.Writer
	last time.Time
	wide int
}

// newProgressLine returns a progress line on w when w is a terminal, else
// nil: scripts and files get only the summary.
func newProgressLine(w io.Writer) *progressLine {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &progressLine{w: w}
}

// show draws p, at most every progressInterval.
func (b *progressLine) show(p audit.Progress) {
	if now := time.Now(); now.Sub(b.last) >= progressInterval {
		b.last = now
		pct := 100.0
		if p.TotalBytes > 0 {
			pct = float64(p.Bytes) * 100 / float64(p.TotalBytes)
		}
		line := fmt.Sprintf("verifying %s: %d records, %.0f%% of %s", p.File, p.Records, pct, byteSize(p.TotalBytes))
		fmt.Fprintf(b.w, "\r%-*s", b.wide, line)
		b.wide = max(b.wide, len(line))
	}
}

// clear removes the progress line, if one was drawn.
func (b *progressLine) clear() {
	if b != nil && b.wide > 0 {
		fmt.Fprintf(b.w, "\r%*s\r", b.wide, "")
	}
}

// byteSize formats n bytes for people.
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10) + " B"
}

// auditShowFlags are the flags of `audit show`.
type auditShowFlags struct {
	user, agent, provider, event, decision, since, until, output string
}

// auditEvents and auditDecisions are the values --event and --decision
// take.
var (
	auditEvents = []string{audit.EventRequest, audit.EventInject, audit.EventRefresh, audit.EventConnect,
		audit.EventRevoke, audit.EventPolicyReload, audit.EventStart, audit.EventStop}
	auditDecisions = []string{audit.DecisionAllow, audit.DecisionDeny, audit.DecisionWouldDeny}
)

func newAuditShowCmd() *cobra.Command {
	var f auditShowFlags
	cmd := &cobra.Command{
		Use:   "show FILE... [--user U] [--since 1h] [--decision deny] [-o table|json]",
		Short: "Print audit records as a table, or as JSON lines",
		Long: `Print the records of audit trail files (rotated files oldest first) that match every filter
given: a table for people, or with -o json each matching record's line exactly as written,
one per line, for jq and scripts. --since and --until take a duration back from now (1h, 30m)
or a time (2025-06-01, 2025-06-01T09:00:00Z). Lines that are not records are passed over and
counted; 'onbehalf audit verify' says whether the trail is intact.`,
		Example: `  onbehalf audit show --user alice --since 1h .onbehalf/audit.log
  onbehalf audit show --decision deny --event request audit.log.1 audit.log
  onbehalf audit show -o json --agent agent-7 audit.log | jq .path`,
		Args: minArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			filter, err := f.filter(time.Now())
			if err != nil {
				return err
			}
			if f.output == "json" {
				return showJSON(cmd.OutOrStdout(), cmd.ErrOrStderr(), args, filter)
			}
			return showTable(cmd.OutOrStdout(), cmd.ErrOrStderr(), args, filter)
		},
	}
	cmd.Flags().StringVar(&f.user, "user", "", "only records of this user")
	cmd.Flags().StringVar(&f.agent, "agent", "", "only records of this agent")
	cmd.Flags().StringVar(&f.provider, "provider", "", "only records of this provider")
	cmd.Flags().StringVar(&f.event, "event", "", "only this event: "+strings.Join(auditEvents, ", "))
	cmd.Flags().StringVar(&f.decision, "decision", "", "only this decision: "+strings.Join(auditDecisions, ", "))
	cmd.Flags().StringVar(&f.since, "since", "", "only records from this long ago (1h) or this time on")
	cmd.Flags().StringVar(&f.until, "until", "", "only records before this long ago or this time")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	return cmd
}

// filter checks the flags and returns the filter they describe, with
// durations counted back from now. Every mistake is a usage error.
func (f *auditShowFlags) filter(now time.Time) (audit.Filter, error) {
	var problems []string
	oneOf := func(flag, v string, allowed []string) {
		if v == "" || slices.Contains(allowed, v) {
			return
		}
		hint := "want one of " + strings.Join(allowed, ", ")
		if near := config.Nearest(v, allowed); near != "" {
			hint = fmt.Sprintf("did you mean %q?", near)
		}
		problems = append(problems, fmt.Sprintf("%s %q: %s", flag, v, hint))
	}
	oneOf("--event", f.event, auditEvents)
	oneOf("--decision", f.decision, auditDecisions)
	oneOf("-o", f.output, []string{"table", "json"})
	since, err := parseSince(f.since, now)
	if err != nil {
		problems = append(problems, "--since "+err.Error())
	}
	until, err := parseSince(f.until, now)
	if err != nil {
		problems = append(problems, "--until "+err.Error())
	}
	if len(problems) > 0 {
		return audit.Filter{}, usageError{errors.New(strings.Join(problems, "; "))}
	}
	return audit.Filter{User: f.user, Agent: f.agent, Provider: f.provider, Event: f.event, Decision: f.decision, Since: since, Until: until}, nil
}

// parseSince reads a duration back from now or a time (RFC 3339, or a date
// taken as midnight UTC); "" is the zero time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration back from now is positive", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (1h) or a time (2025-06-01 or 2025-06-01T09:00:00Z)", s)
}

// showJSON prints the selected records' lines as written.
func showJSON(out, errOut io.Writer, paths []string, f audit.Filter) error {
	st, err := audit.Scan(paths, f, func(e *audit.Entry) error {
		if _, err := out.Write(e.Line); err != nil {
			return err
		}
		_, err := out.Write([]byte{'\n'})
		return err
	})
	if err == nil && st.Skipped > 0 {
		fmt.Fprintf(errOut, "%d line(s) are not records and were passed over; run 'onbehalf audit verify'\n", st.Skipped)
	}
	return err
}

// tableFlushRows is how many rows `audit show` aligns at once: a table
// streams in blocks rather than holding a whole trail in memory.
const tableFlushRows = 500

// maxPathColumn bounds the request column; `-o json` has the whole path.
const maxPathColumn = 60

// showTable prints the selected records as a table, then a count on
// errOut.
func showTable(out, errOut io.Writer, paths []string, f audit.Filter) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME (UTC)\tEVENT\tUSER\tAGENT\tPROVIDER\tREQUEST\tDECISION\tSTATUS\tDETAIL")
	rows := 0
	st, err := audit.Scan(paths, f, func(e *audit.Entry) error {
		status := "-"
		if e.Status != 0 {
			status = strconv.Itoa(e.Status)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format("2006-01-02 15:04:05"), e.Event,
			dash(e.User), dash(e.Agent), dash(e.Provider), dash(requestColumn(e)), dash(e.Outcome()), status, dash(detailColumn(e)))
		if rows++; rows%tableFlushRows == 0 {
			return tw.Flush()
		}
		return nil
	})
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(errOut, "%d of %d record(s) shown", st.Selected, st.Records)
	if st.Skipped > 0 {
		fmt.Fprintf(errOut, "; %d line(s) are not records and were passed over: run 'onbehalf audit verify'", st.Skipped)
	}
	fmt.Fprintln(errOut)
	return nil
}

// requestColumn is "METHOD host/path", the path cut at maxPathColumn.
func requestColumn(e *audit.Entry) string {
	if e.Method == "" && e.Host == "" {
		return ""
	}
	target := e.Host + e.Path
	if len(target) > maxPathColumn {
		target = target[:maxPathColumn-1] + "…"
	}
	return strings.TrimSpace(e.Method + " " + target)
}

// detailColumn is what explains the outcome: the error code, the policy's
// reason, a refresh's error.
func detailColumn(e *audit.Entry) string {
	var parts []string
	if e.ErrorCode != "" {
		parts = append(parts, e.ErrorCode)
	}
	if e.Reason != "" {
		parts = append(parts, strconv.Quote(e.Reason))
	}
	if s, ok := e.Extra[audit.ExtraError].(string); ok && s != "" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// minArgs is cobra.MinimumNArgs with a usage exit code and a message naming
// the argument.
func minArgs(n int, name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("at least %d %s is required", n, name)}
		}
		return nil
	}
}
