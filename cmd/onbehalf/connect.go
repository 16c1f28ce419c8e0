package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/internal/config"
	"github.com/onbehalf-dev/onbehalf/internal/sidecar"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// connectShutdownGrace bounds a graceful stop of the connect server.
const connectShutdownGrace = 10 * time.Second

func newConnectServerCmd() *cobra.Command {
	var (
		configPath, listen string
		check              bool
	)
	cmd := &cobra.Command{
		Use:   "connect-server --config FILE",
		Short: "Run the user-facing connect/revoke server",
		Long: `Run the server where each person connects an app once, through the app's own sign-in,
and revokes it in one move. It reads the connect, store, providers, audit (or connect_audit)
and log sections of the configuration file, which it may share with the sidecar;
examples/connect.yaml is a commented one.

Pages: / lists the person's connected apps (and revokes them), /connect/PROVIDER connects one.
People arrive with a connect link ('onbehalf connect link' prints one) or by signing in with
the identity provider (connect.oidc).

Register <connect.external_url>/callback as the redirect URI at every provider, and
<connect.external_url>/login/callback at the identity provider when OIDC sign-in is on.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return usageError{errors.New("--config is required")}
			}
			cfg, err := sidecar.LoadConnect(configPath, os.Environ(), func(c *sidecar.Config) {
				if listen != "" {
					c.Connect.Listen = listen
				}
			})
			if err != nil {
				return usageError{configError{path: configPath, err: err}}
			}
			if check {
				fmt.Fprintf(cmd.OutOrStdout(), "connect configuration in %s is valid: listen %s, external URL %s\n", configPath, cfg.Connect.Listen, cfg.Connect.ExternalURL)
				return nil
			}
			return runConnectServer(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&listen, "listen", "", "listen address, overrides connect.listen")
	cmd.Flags().BoolVar(&check, "check", false, "validate the configuration and exit (status 2 when invalid)")
	return cmd
}

// Audit writers other than the sidecar (see openAudit).
const (
	writerConnect = "connect"
	writerCLI     = "cli"
)

func newConnectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Tools for the connect server (see also connect-server)",
		Args:  exactArgs(0),
	}
	cmd.AddCommand(newConnectLinkCmd())
	return cmd
}

// connectLinkFlags are the flags of `connect link`.
type connectLinkFlags struct {
	configPath, keyPath, user, provider, agent, issuer, kid string
	ttl                                                     time.Duration
}

func newConnectLinkCmd() *cobra.Command {
	var f connectLinkFlags
	cmd := &cobra.Command{
		Use:   "link --config FILE --key FILE --user USER --provider NAME [--agent AGENT]",
		Short: "Print a connect link: the URL a person opens to connect an app",
		Long: `Mint a signed, single-use connect link for USER to connect PROVIDER, and print the URL to
send them (<connect.external_url>/connect/PROVIDER?link=...). The connection is stored under
USER, the id agents' assertions carry in sub. --agent names the agent or workflow that asks
(its id, as in the assertion's act.sub); the confirmation page shows it.

The link is signed with --key, a private key whose public half is in connect.links.keys (or
the links' JWKS), for the issuer --iss (default: the only one in connect.links.issuers). It
lives --ttl (default 3m, at most connect.links.max_lifetime) and is used up when the person
confirms: send a fresh one each time.`,
		Example: `  onbehalf connect link --config examples/connect.yaml --key .onbehalf/orchestrator.key \
      --user alice --provider github --agent weekly-report`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			link, err := f.mint(time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), link)
			return nil
		},
	}
	cmd.Flags().StringVarP(&f.configPath, "config", "c", "", "configuration file (its connect and providers sections are used)")
	cmd.Flags().StringVar(&f.keyPath, "key", "", "signing key: PEM private key (Ed25519, ECDSA, RSA) or HS256 secret file")
	cmd.Flags().StringVar(&f.user, "user", "", "the person the connection is for (the user id assertions carry in sub)")
	cmd.Flags().StringVar(&f.provider, "provider", "", "the app to connect (a name under providers)")
	cmd.Flags().StringVar(&f.agent, "agent", "", "the agent or workflow that asks, shown on the confirmation page")
	cmd.Flags().StringVar(&f.issuer, "iss", "", "issuer, one of connect.links.issuers (default: the only one)")
	cmd.Flags().StringVar(&f.kid, "kid", "", "key id header")
	cmd.Flags().DurationVar(&f.ttl, "ttl", connect.DefaultLinkTTL, "lifetime of the link")
	return cmd
}

// mint checks the flags against the configuration and returns the link's
// URL. Every mistake is a usage error.
func (f *connectLinkFlags) mint(now time.Time) (string, error) {
	if f.configPath == "" || f.keyPath == "" || f.user == "" || f.provider == "" {
		return "", usageError{errors.New("--config, --key, --user and --provider are required")}
	}
	if err := store.ValidateUser(f.user); err != nil {
		return "", usageError{fmt.Errorf("--user: %w; grants are stored under the user id, so it must be one the store accepts", err)}
	}
	cfg, err := sidecar.LoadConnect(f.configPath, os.Environ(), nil)
	if err != nil {
		return "", usageError{configError{path: f.configPath, err: err}}
	}
	links := cfg.Connect.Links
	if !links.Enabled() {
		return "", usageError{fmt.Errorf("the connect server of %s accepts no links: connect.links.issuers is empty (people sign in with the identity provider and open %s/connect/%s)", f.configPath, cfg.Connect.ExternalURL, f.provider)}
	}
	if err := connectableProvider(cfg, f.configPath, f.provider); err != nil {
		return "", err
	}
	iss := f.issuer
	switch {
	case iss == "" && len(links.Issuers) == 1:
		iss = links.Issuers[0]
	case iss == "":
		return "", usageError{fmt.Errorf("--iss is required: connect.links.issuers has several (%s)", strings.Join(links.Issuers, ", "))}
	case !slices.Contains(links.Issuers, iss):
		return "", usageError{fmt.Errorf("--iss %q: not one of connect.links.issuers (%s)", iss, strings.Join(links.Issuers, ", "))}
	}
	if f.ttl <= 0 || f.ttl > links.MaxLifetime {
		return "", usageError{fmt.Errorf("--ttl %s: must be more than 0s and at most connect.links.max_lifetime (%s)", f.ttl, links.MaxLifetime)}
	}
	key, alg, err := identity.LoadSigningKey(f.keyPath)
	if err != nil {
		return "", err
	}
	raw, err := connect.MintLink(key, connect.LinkOptions{
		Issuer: iss, Audience: links.Audience, User: f.user, Provider: f.provider, Agent: f.agent,
		Algorithm: alg, KeyID: f.kid, TTL: f.ttl, Now: now,
	})
	if err != nil {
		return "", err
	}
	return connect.LinkURL(cfg.Connect.ExternalURL, f.provider, raw), nil
}

// connectableProvider refuses a provider the connect server cannot connect:
// one the providers section does not name, or one without an authorization
// endpoint.
func connectableProvider(cfg sidecar.Config, configPath, name string) error {
	pc, ok := cfg.Providers[name]
	if !ok {
		names := slices.Sorted(maps.Keys(cfg.Providers))
		hint := " (it names none)"
		if near := config.Nearest(name, names); near != "" {
			hint = fmt.Sprintf(" (did you mean %q?)", near)
		} else if len(names) > 0 {
			hint = " (it names " + strings.Join(names, ", ") + ")"
		}
		return usageError{fmt.Errorf("--provider %q: the providers section of %s does not name it%s", name, configPath, hint)}
	}
	if r, err := pc.Resolve(); err == nil && r.AuthorizationURL == "" && !pc.IsMCP() {
		return usageError{fmt.Errorf("--provider %q: it has no authorization_url, so people cannot connect it", name)}
	}
	return nil
}

// connectParts are the components a connect server or a revocation needs.
type connectParts struct {
	log     *zap.Logger
	aud     *audit.Auditor
	revoker *connect.Revoker
	deps    connect.Deps
	close   func()
}

// buildConnect opens the store, the audit trail and the providers the
// connect server and `grants revoke` share.
func buildConnect(ctx context.Context, cfg sidecar.Config, writer string) (_ *connectParts, err error) {
	var closers []func()
	p := &connectParts{close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.log, err = sidecar.NewLogger(cfg.Log); err != nil {
		return nil, err
	}
	st, err := sidecar.OpenStore(ctx, cfg.Store, p.log)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	closers = append(closers, func() { st.Close() })
	if p.aud, err = openAudit(cfg.ConnectAuditConfig(), writer, p.log); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	closers = append(closers, func() { p.aud.Close() })
	roots, err := sidecar.UpstreamRoots(cfg, nil)
	if err != nil {
		return nil, err
	}
	providers, err := sidecar.BuildProviders(ctx, cfg, roots, st)
	if err != nil {
		return nil, err
	}
	mcpClient, err := sidecar.MCPClient(cfg, roots)
	if err != nil {
		return nil, err
	}
	p.revoker = connect.NewRevoker(st, providers, p.aud, p.log.Named("revoke"), cfg.Connect.RevocationRetry)
	closers = append(closers, func() { p.revoker.Close() })
	p.deps = connect.Deps{Store: st, Providers: providers, Audit: p.aud, Logger: p.log, Revoker: p.revoker, MCPClient: mcpClient}
	return p, nil
}

// Resuming queued provider revocations: how often the store's queue is
// looked at (each look is one list, plus a read per entry), and how long
// one look may take.
const (
	resumeInterval = 5 * time.Minute
	resumeTimeout  = 30 * time.Second
)

func runConnectServer(ctx context.Context, cfg sidecar.Config) error {
	// Bind first: a port in use is reported before anything is opened or
	// created (store, audit file, session key).
	ln, err := net.Listen("tcp", cfg.Connect.Listen)
	if err != nil {
		return fmt.Errorf("connect server: listen on %s: %w", cfg.Connect.Listen, err)
	}
	defer ln.Close()
	parts, err := buildConnect(ctx, cfg, writerConnect)
	if err != nil {
		return err
	}
	defer parts.close()
	if cfg.Connect.Links.Enabled() {
		lv, err := connect.NewLinkVerifier(ctx, cfg.Connect.Links, identity.WithLogger(parts.log.Named("links")))
		if err != nil {
			return fmt.Errorf("connect links: %w", err)
		}
		defer lv.Close()
		parts.deps.LinkVerifier = lv
	}
	srv, err := connect.New(cfg.Connect, parts.deps)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	parts.log.Info("connect server started", zap.String("listen", ln.Addr().String()), zap.String("external_url", cfg.Connect.ExternalURL))
	// Provider revocations queued in the store (before a restart, by
	// another replica that stopped, or by `grants revoke`) are taken up now
	// and at every resumeInterval.
	resume := time.NewTicker(resumeInterval)
	defer resume.Stop()
	// The change feed tells sidecars which grants this server revokes or
	// replaces; they keep cached tokens past their TTL only once it
	// exists (store.ChangeFeed). Creating it is retried with the resume.
	feed, _ := parts.deps.Store.(store.ChangeFeed)
	for {
		rctx, rcancel := context.WithTimeout(ctx, resumeTimeout)
		if feed != nil {
			if err := feed.StartChanges(rctx); err != nil {
				parts.log.Warn("change feed not created; sidecars keep cached tokens for their TTL only", zap.Error(err))
			} else {
				feed = nil
			}
		}
		if _, err := parts.revoker.Resume(rctx); err != nil {
			parts.log.Warn("queued provider revocations not resumed", zap.Error(err))
		}
		rcancel()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		case <-resume.C:
			continue
		}
		break
	}
	sctx, cancel := context.WithTimeout(context.Background(), connectShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	_ = parts.revoker.Drain(sctx)
	return err
}

// openAudit opens the audit trail for writer ("connect" for the connect
// server, "cli" for grant changes from the command line). When another
// process (typically a sidecar on the same host) holds the configured file,
// the records go to the writer's own trail beside it, "<name>.<writer><ext>"
// (audit.cli.log), which continues across runs as one hash chain: two
// writers never interleave one chain, and `onbehalf audit verify --trails
// <file>` checks every trail of the file. Two runs of one writer take turns:
// a second waits for the first (up to trailWait) rather than start a chain
// of its own.
func openAudit(ac audit.Config, writer string, log *zap.Logger) (*audit.Auditor, error) {
	a, err := audit.New(ac, audit.Options{Logger: log.Named("audit")})
	if err == nil || !errors.Is(err, audit.ErrFileInUse) {
		return a, err
	}
	ac.File.Path = audit.WriterTrail(ac.File.Path, writer)
	log.Info("audit file in use by another process; writing to this writer's own trail", zap.String("path", ac.File.Path))
	deadline := time.Now().Add(trailWait)
	for {
		a, err := audit.New(ac, audit.Options{Logger: log.Named("audit")})
		if err == nil || !errors.Is(err, audit.ErrFileInUse) || time.Now().After(deadline) {
			return a, err
		}
		time.Sleep(trailPoll)
	}
}

// trailWait bounds how long a CLI run waits for another run of the same
// writer to release its trail: grant changes take a second or two.
const (
	trailWait = 15 * time.Second
	trailPoll = 100 * time.Millisecond
)
