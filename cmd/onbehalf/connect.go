package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/onbehalf-dev/onbehalf/audit"
	"github.com/onbehalf-dev/onbehalf/connect"
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
and log sections of the configuration file, which it may share with the sidecar.

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
	p.revoker = connect.NewRevoker(st, providers, p.aud, p.log.Named("revoke"), cfg.Connect.RevocationRetry)
	closers = append(closers, func() { p.revoker.Close() })
	p.deps = connect.Deps{Store: st, Providers: providers, Audit: p.aud, Logger: p.log, Revoker: p.revoker}
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
	for {
		rctx, rcancel := context.WithTimeout(ctx, resumeTimeout)
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
