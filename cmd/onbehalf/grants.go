package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
)

// maxTokenInput bounds a token read from a file or stdin; real tokens are
// well under 8 KiB (JWT access tokens included).
const maxTokenInput = 64 << 10

func newGrantsCmd() *cobra.Command {
	var cfg grantsConfig
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "Operate on stored grants (admin)",
		Long: `List, store and revoke users' grants in the store the configuration names. Tokens are
never taken on the command line (other users can read it from the process table): pass
them in files or on standard input.`,
		Args: exactArgs(0),
	}
	cmd.PersistentFlags().StringVarP(&cfg.path, "config", "c", "", "configuration file (its store section is used)")
	cmd.AddCommand(newGrantsListCmd(&cfg), newGrantsPutCmd(&cfg), newGrantsRevokeCmd(&cfg))
	return cmd
}

// grantsConfig is the --config flag every grants subcommand shares; it is
// read when a subcommand runs, after flags are parsed.
type grantsConfig struct{ path string }

// load reads the configuration, validating only what grant administration
// uses (store, providers, audit). A missing flag or a configuration that does
// not validate is a usage error.
func (c *grantsConfig) load() (sidecar.Config, error) {
	if c.path == "" {
		return sidecar.Config{}, usageError{errors.New("--config is required")}
	}
	cfg, err := sidecar.LoadGrants(c.path, os.Environ(), nil)
	if err != nil {
		return cfg, usageError{configError{path: c.path, err: err}}
	}
	// The CLI's own logs stay quiet unless something is wrong.
	cfg.Log = sidecar.LogConfig{Level: "warn", Format: "console"}
	return cfg, nil
}

// openStore opens the store the configuration names; the caller closes it.
func (c *grantsConfig) openStore() (store.Store, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, err
	}
	return openStore(cfg)
}

// openStore opens the store cfg names; the caller closes it.
func openStore(cfg sidecar.Config) (store.Store, error) {
	log, err := sidecar.NewLogger(cfg.Log)
	if err != nil {
		return nil, err
	}
	return sidecar.OpenStore(context.Background(), cfg.Store, log)
}

// knownProviders returns the provider names cfg uses, sorted: those its
// routes inject and those its providers section configures.
func knownProviders(cfg sidecar.Config) []string {
	var names []string
	for _, r := range cfg.Routes {
		names = append(names, r.Provider)
	}
	for name := range cfg.Providers {
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// checkProvider refuses a provider name the configuration does not use: a
// grant stored under a misspelt name is never injected, and nothing would
// say so. force stores it all the same (a route added later).
func checkProvider(cfg sidecar.Config, configPath, name string, force bool) error {
	known := knownProviders(cfg)
	if force || slices.Contains(known, name) {
		return nil
	}
	hint := ""
	switch near := config.Nearest(name, known); {
	case near != "":
		hint = fmt.Sprintf(" (did you mean %q?)", near)
	case len(known) > 0:
		hint = " (it uses " + strings.Join(known, ", ") + ")"
	}
	return usageError{fmt.Errorf("--provider %q: no route or provider in %s uses it%s; pass --force to store the grant anyway", name, configPath, hint)}
}

// DefaultGrantsLimit is how many grants `grants list` prints unless told
// otherwise: a screenful, so that a store with thousands of grants is read
// a page at a time.
const DefaultGrantsLimit = 100

// grantsListFlags are the flags of `grants list`.
type grantsListFlags struct {
	provider, after, output string
	limit                   int
}

func newGrantsListCmd(cfg *grantsConfig) *cobra.Command {
	var f grantsListFlags
	cmd := &cobra.Command{
		Use:   "list [--provider NAME] [--limit N] [--after PROVIDER/USER] [-o table|json]",
		Short: "List grants (no tokens are shown)",
		Long: `List grants sorted by provider, then user, --limit at a time (0: all). When more follow, the
last line (on standard error for the table) says how to get the next page: --after takes the
last PROVIDER/USER shown. -o json prints {"grants": [...], "next_after": "..."} for scripts;
next_after is absent on the last page.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			st, err := cfg.openStore()
			if err != nil {
				return err
			}
			defer st.Close()
			grants, err := st.List(cmd.Context(), f.provider)
			if err != nil {
				return err
			}
			page, next := pageGrants(grants, f.after, f.limit)
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), grantsPage{Grants: store.Views(page), NextAfter: next})
			}
			if err := writeGrants(cmd.OutOrStdout(), page); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more grants follow: add --after %s\n", next)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.provider, "provider", "", "only this provider")
	cmd.Flags().IntVar(&f.limit, "limit", DefaultGrantsLimit, "at most this many grants (0: all)")
	cmd.Flags().StringVar(&f.after, "after", "", "start after this PROVIDER/USER (the last one of the previous page)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	return cmd
}

// check validates the flags of `grants list`.
func (f *grantsListFlags) check() error {
	if f.output != "table" && f.output != "json" {
		return usageError{fmt.Errorf("-o %q: want table or json", f.output)}
	}
	if f.limit < 0 {
		return usageError{fmt.Errorf("--limit %d: want 0 (all) or more", f.limit)}
	}
	if f.after != "" {
		p, u, ok := strings.Cut(f.after, "/")
		if !ok || store.ValidateProvider(p) != nil || store.ValidateUser(u) != nil {
			return usageError{fmt.Errorf("--after %q: want PROVIDER/USER, as the previous page's last line names it", f.after)}
		}
		if f.provider != "" && p != f.provider {
			return usageError{fmt.Errorf("--after %q: not a grant of --provider %s", f.after, f.provider)}
		}
	}
	return nil
}

// pageGrants returns the grants (sorted by provider, then user) that come
// after the grant named after ("PROVIDER/USER"; "" for the first page), at
// most limit of them (0: all), and the cursor of the next page ("" when
// this is the last).
func pageGrants(grants []*store.Grant, after string, limit int) ([]*store.Grant, string) {
	start := 0
	if after != "" {
		p, u, _ := strings.Cut(after, "/")
		start, _ = slices.BinarySearchFunc(grants, [2]string{p, u}, func(g *store.Grant, k [2]string) int {
			if c := strings.Compare(g.Provider, k[0]); c != 0 {
				return c
			}
			return strings.Compare(g.User, k[1])
		})
		if start < len(grants) && grants[start].Provider == p && grants[start].User == u {
			start++
		}
	}
	page := grants[start:]
	if limit == 0 || len(page) <= limit {
		return page, ""
	}
	page = page[:limit]
	last := page[len(page)-1]
	return page, last.Provider + "/" + last.User
}

// grantsPage is `grants list -o json`.
type grantsPage struct {
	Grants []store.View `json:"grants"`
	// NextAfter is the --after of the next page; absent on the last.
	NextAfter string `json:"next_after,omitempty"`
}

// writeGrants prints grants as a table; it shows no token.
func writeGrants(w io.Writer, grants []*store.Grant) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tUSER\tSTATUS\tEXPIRY\tSCOPES\tACCOUNT\tGENERATION\tCONNECTED")
	for _, g := range grants {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", g.Provider, g.User, g.Status,
			fmtTime(g.Expiry), strings.Join(g.Scopes, ","), dash(g.ProviderAccount), g.Generation, fmtTime(g.ConnectedAt))
	}
	return tw.Flush()
}

// grantsPutFlags are the flags of `grants put`.
type grantsPutFlags struct {
	provider, user, accessFile, refreshFile, expiry, scopes, account, tokenType string
	// force stores a grant for a provider the configuration does not use.
	force bool
}

func newGrantsPutCmd(cfg *grantsConfig) *cobra.Command {
	var f grantsPutFlags
	cmd := &cobra.Command{
		Use:   "put --provider NAME --user USER --access-token-file FILE|-",
		Short: "Store (or replace) a user's grant",
		Long: `Store a grant for USER at PROVIDER. --access-token-file - reads the token from standard
input. --expiry takes a duration from now (1h) or an RFC 3339 time. A provider that no route
and no providers entry of the configuration uses is refused (a misspelt name would store a
grant nothing injects); --force stores it anyway. The change is audited (a grant_put record,
with the new token's fingerprint) in the configured audit trail, or, while a sidecar holds
that file, in the command line's own trail beside it (audit.cli.log).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Check the flags and read the tokens before touching the store.
			g, err := f.grant(cmd.InOrStdin(), time.Now())
			if err != nil {
				return err
			}
			c, err := cfg.load()
			if err != nil {
				return err
			}
			if err := checkProvider(c, cfg.path, g.Provider, f.force); err != nil {
				return err
			}
			log, err := sidecar.NewLogger(c.Log)
			if err != nil {
				return err
			}
			// The trail first: a change that cannot be audited is not made.
			aud, err := openAudit(c.ConnectAuditConfig(), writerCLI, log)
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			defer aud.Close()
			st, err := sidecar.OpenStore(cmd.Context(), c.Store, log)
			if err != nil {
				return err
			}
			defer st.Close()
			gen, err := putGrant(cmd.Context(), st, g)
			rec := &audit.Record{
				Event: audit.EventGrantPut, User: g.User, Provider: g.Provider, GrantGeneration: gen,
				Extra: []zap.Field{zap.String(audit.ExtraOutcome, "ok"), zap.String(audit.ExtraVia, writerCLI)},
			}
			if err != nil {
				rec.Extra[0] = zap.String(audit.ExtraOutcome, "failed")
			} else {
				rec.TokenFingerprint = aud.Fingerprinter().Token(g.AccessToken)
			}
			if aerr := aud.Write(rec); aerr != nil {
				return errors.Join(err, fmt.Errorf("the grant change was made but its audit record was not written: %w", aerr))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored grant %s/%s (generation %d)\n", g.Provider, g.User, gen)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.provider, "provider", "", "provider name")
	cmd.Flags().StringVar(&f.user, "user", "", "user id (the assertion's sub)")
	cmd.Flags().StringVar(&f.accessFile, "access-token-file", "", "file holding the access token, or - for stdin")
	cmd.Flags().StringVar(&f.refreshFile, "refresh-token-file", "", "file holding the refresh token, or - for stdin")
	cmd.Flags().StringVar(&f.expiry, "expiry", "", "access token expiry: duration from now (1h) or RFC 3339; empty = none")
	cmd.Flags().StringVar(&f.scopes, "scopes", "", "comma-separated scopes")
	cmd.Flags().StringVar(&f.account, "account", "", "the provider-side account name")
	cmd.Flags().StringVar(&f.tokenType, "token-type", "Bearer", "token type")
	cmd.Flags().BoolVar(&f.force, "force", false, "store the grant even if no route or provider uses --provider")
	return cmd
}

// grant checks the flags, reads the tokens (from files or stdin) and builds
// the active grant to store, connected at now. Every failure is a usage
// error.
func (f *grantsPutFlags) grant(stdin io.Reader, now time.Time) (*store.Grant, error) {
	if f.provider == "" || f.user == "" || f.accessFile == "" {
		return nil, usageError{errors.New("--provider, --user and --access-token-file are required")}
	}
	access, err := readSecret(stdin, f.accessFile)
	if err != nil {
		return nil, usageError{fmt.Errorf("access token: %w", err)}
	}
	var refresh string
	if f.refreshFile != "" {
		if f.refreshFile == "-" && f.accessFile == "-" {
			return nil, usageError{errors.New("only one token can come from standard input")}
		}
		if refresh, err = readSecret(stdin, f.refreshFile); err != nil {
			return nil, usageError{fmt.Errorf("refresh token: %w", err)}
		}
	}
	exp, err := parseExpiry(f.expiry, now)
	if err != nil {
		return nil, usageError{err}
	}
	g := &store.Grant{
		Provider: f.provider, User: f.user,
		AccessToken: access, RefreshToken: refresh, TokenType: f.tokenType,
		Expiry: exp, Status: store.StatusActive, ConnectedAt: now.UTC(),
		ProviderAccount: f.account,
	}
	if f.scopes != "" {
		g.Scopes = strings.Split(f.scopes, ",")
	}
	return g, nil
}

func newGrantsRevokeCmd(cfg *grantsConfig) *cobra.Command {
	var (
		provider, user string
		wait           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "revoke --provider NAME --user USER",
		Short: "Revoke a user's grant in one move",
		Long: `Revoke USER's grant at PROVIDER: the provider's RFC 7009 revocation endpoint is called where
it has one, the stored grant is deleted (all versions), and both outcomes are audited. A
provider that is down does not stop the local revocation: the command retries for --wait
and reports what happened. Every sidecar stops injecting the grant within its token cache
bound (token_cache.ttl, 10s by default).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if provider == "" || user == "" {
				return usageError{errors.New("--provider and --user are required")}
			}
			c, err := cfg.load()
			if err != nil {
				return err
			}
			parts, err := buildConnect(cmd.Context(), c, writerCLI)
			if err != nil {
				return err
			}
			defer parts.close()
			res, err := parts.revoker.Revoke(cmd.Context(), provider, user, "cli")
			if err != nil {
				return err
			}
			if res.ProviderRevocation == connect.ProviderQueued {
				wctx, cancel := context.WithTimeout(cmd.Context(), wait)
				_ = parts.revoker.Drain(wctx)
				cancel()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked grant %s/%s: local %s, at the provider %s\n", provider, user, res.Local, res.ProviderRevocation)
			if res.Local == connect.LocalNotFound {
				return fmt.Errorf("no grant %s/%s was stored", provider, user)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to keep retrying a provider that is down")
	cmd.Flags().StringVar(&provider, "provider", "", "provider name")
	cmd.Flags().StringVar(&user, "user", "", "user id")
	return cmd
}

// putGrant writes g, replacing an existing grant with a compare-and-swap on
// the version read, and bumps the generation.
func putGrant(ctx context.Context, st store.Store, g *store.Grant) (int64, error) {
	for range 3 {
		old, ver, err := st.Get(ctx, g.Provider, g.User)
		switch {
		case errors.Is(err, store.ErrNotFound):
			ver, g.Generation = 0, 1
		case err != nil:
			return 0, err
		default:
			g.Generation = old.Generation + 1
		}
		if _, err = st.Put(ctx, g, ver); errors.Is(err, store.ErrConflict) {
			continue // someone else wrote in between: read again
		}
		if err == nil && ver != 0 {
			// Sidecars drop the replaced token at their next read of
			// the change feed.
			if err := store.RecordChange(ctx, st, g.Provider, g.User); err != nil {
				return g.Generation, fmt.Errorf("grant stored, but sidecars may keep using the replaced token until it expires: %w", err)
			}
		}
		return g.Generation, err
	}
	return 0, fmt.Errorf("put grant %s/%s: %w", g.Provider, g.User, store.ErrConflict)
}

func readSecret(stdin io.Reader, path string) (string, error) {
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(r), maxTokenInput+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenInput {
		return "", fmt.Errorf("longer than %d bytes", maxTokenInput)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("empty")
	}
	if strings.ContainsAny(s, "\r\n\x00 ") {
		return "", errors.New("must be a single line without spaces")
	}
	return s, nil
}

func parseExpiry(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expiry %q: want a duration (1h) or an RFC 3339 time", s)
	}
	return t.UTC(), nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
